import pytest
from podnet.overlay.pipeline.routes import Route, RouteKind, RouteTable, parse_prefix
from podnet.overlay.wire.addresses import ip_to_int


def tunnel(prefix: str, hop: str, source: str = "vxlan") -> Route:
    return Route(parse_prefix(prefix), RouteKind.TUNNEL, hop, source)


def test_longest_prefix_wins():
    table = RouteTable()
    table.replace_source("local", [Route(parse_prefix("10.244.1.0/24"), RouteKind.LOCAL, None, "local")])
    table.replace_source(
        "bgp", [tunnel("10.244.0.0/16", "127.0.0.99", "bgp"), tunnel("10.244.2.128/25", "127.0.0.13", "bgp")]
    )
    table.set_route(tunnel("10.244.2.0/24", "127.0.0.12"))
    cases = {
        "10.244.1.7": ("local", None),
        "10.244.2.5": ("vxlan", "127.0.0.12"),
        "10.244.2.200": ("bgp", "127.0.0.13"),
        "10.244.77.1": ("bgp", "127.0.0.99"),
    }
    for address, (source, hop) in cases.items():
        route = table.lookup(ip_to_int(address))
        assert (route.source, route.next_hop) == (source, hop), address
    assert table.lookup(ip_to_int("192.168.0.1")) is None


def test_preferred_source_wins_on_the_same_prefix_and_replacement_is_whole():
    table = RouteTable()
    table.replace_source("bgp", [tunnel("10.244.3.0/24", "127.0.0.50", "bgp")])
    table.set_route(tunnel("10.244.3.0/24", "127.0.0.13"))
    assert table.lookup(ip_to_int("10.244.3.9")).next_hop == "127.0.0.13"
    assert table.remove_route("vxlan", parse_prefix("10.244.3.0/24"))
    assert table.lookup(ip_to_int("10.244.3.9")).next_hop == "127.0.0.50"
    assert table.replace_source("bgp", []) == 0
    assert table.lookup(ip_to_int("10.244.3.9")) is None


def test_default_route_and_every_change_told():
    changes = []
    table = RouteTable(on_change=lambda: changes.append(len(table.routes())))
    table.set_route(tunnel("0.0.0.0/0", "127.0.0.1", "bgp"))
    assert table.lookup(ip_to_int("8.8.8.8")).prefix.prefixlen == 0
    table.replace_source("bgp", [])
    assert not table.remove_route("bgp", parse_prefix("0.0.0.0/0"))  # nothing removed, nothing told
    assert changes == [1, 0]


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        parse_prefix("10.244.1.5/24")
    with pytest.raises(ValueError):
        RouteTable().replace_source("static", [])
