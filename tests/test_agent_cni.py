"""host-local IPAM on disk: what a restarted agent finds, and what it never hands out."""

import ipaddress

import pytest
from podnet.nodeagent.cni import HostLocalIpam, IpamExhausted


def test_addresses_survive_a_restart_and_the_same_pod_keeps_its_address(tmp_path):
    ipam = HostLocalIpam(tmp_path, "10.244.3.0/24")
    a = ipam.add("uid-a", "default", "a")
    b = ipam.add("uid-b", "default", "b")
    assert (a.ip, b.ip) == ("10.244.3.2", "10.244.3.3")  # .0 is the network, .1 the gateway
    assert ipam.add("uid-a", "default", "a") == a
    again = HostLocalIpam(tmp_path, "10.244.3.0/24")  # a new process reading the same directory
    assert {x.uid: x.ip for x in again.allocations()} == {"uid-a": a.ip, "uid-b": b.ip}
    assert again.add("uid-b", "default", "b").ip == b.ip


def test_release_and_garbage_collection_free_addresses_round_robin(tmp_path):
    ipam = HostLocalIpam(tmp_path, "10.244.3.0/24")
    first = ipam.add("uid-1", "ns", "one")
    ipam.add("uid-2", "ns", "two")
    assert ipam.release("uid-1") == first and ipam.release("uid-1") is None  # DEL twice is fine
    # the freed address is not reused at once: host-local continues after the last one reserved
    assert ipam.add("uid-3", "ns", "three").ip == "10.244.3.4"
    freed = ipam.release_all_but({"uid-3"})
    assert [x.uid for x in freed] == ["uid-2"]
    assert [x.uid for x in HostLocalIpam(tmp_path, "10.244.3.0/24").allocations()] == ["uid-3"]


def test_a_half_written_allocation_from_a_crash_is_discarded(tmp_path):
    ipam = HostLocalIpam(tmp_path, "10.244.3.0/24")
    (ipam.directory / "10.244.3.9").write_text("")  # created, never written: the pod never learnt it
    assert HostLocalIpam(tmp_path, "10.244.3.0/24").allocations() == []
    assert not (ipam.directory / "10.244.3.9").exists()


def test_a_small_cidr_runs_out_and_never_hands_out_reserved_addresses(tmp_path):
    ipam = HostLocalIpam(tmp_path, "10.244.3.0/29")
    given = {ipam.add(f"uid-{i}", "ns", f"p{i}").ip for i in range(5)}
    network = ipaddress.IPv4Network("10.244.3.0/29")
    assert given == {str(network.network_address + i) for i in range(2, 7)}
    with pytest.raises(IpamExhausted):
        ipam.add("uid-x", "ns", "x")


def test_a_pod_made_again_under_its_name_gets_its_address_back(tmp_path):
    ipam = HostLocalIpam(tmp_path, "10.244.3.0/24")
    db0 = ipam.add("uid-db-0", "shop", "db-0")
    ipam.add("uid-db-1", "shop", "db-1")
    ipam.release("uid-db-0")
    other = ipam.add("uid-web", "shop", "web-abc")  # any other pod goes on round robin, past the freed one
    assert other.ip == "10.244.3.4"
    again = HostLocalIpam(tmp_path, "10.244.3.0/24").add("uid-db-0-new", "shop", "db-0")  # a restarted agent too
    assert again.ip == db0.ip
    following = HostLocalIpam(tmp_path, "10.244.3.0/24").add("uid-x", "shop", "x")
    assert following.ip == "10.244.3.5"  # the round robin did not move back to the remembered address


def test_a_remembered_address_another_pod_took_is_not_taken_from_it(tmp_path):
    ipam = HostLocalIpam(tmp_path, "10.244.3.0/29")  # .2 to .6
    first = ipam.add("uid-1", "ns", "db-0")
    ipam.release("uid-1")
    taken = {f"uid-{i}": ipam.add(f"uid-{i}", "ns", f"p{i}").ip for i in range(2, 7)}
    assert taken["uid-6"] == first.ip  # the range wrapped round to it
    freed = ipam.release("uid-3")
    assert ipam.add("uid-new", "ns", "db-0").ip == freed.ip
