"""The emulated cloud's pure parts: the address pool, what a Service asks of the balancer, which nodes
are candidates."""

import pytest

from podnet.cloudlb.frontends import AddressPool, Frontend, PoolExhausted, frontend_of, ready_node_addresses


def test_pool_hands_out_host_addresses_keeps_them_per_service_and_takes_them_back():
    pool = AddressPool("127.0.1.0/30")
    assert pool.addresses == ["127.0.1.1", "127.0.1.2"]
    assert pool.take("default/a") == "127.0.1.1"
    assert pool.take("default/a") == "127.0.1.1"
    assert pool.take("default/b") == "127.0.1.2"
    with pytest.raises(PoolExhausted):
        pool.take("default/c")
    pool.release("default/a")
    assert pool.take("default/c") == "127.0.1.1"


def test_pool_honours_a_requested_address_when_free():
    pool = AddressPool("127.0.1.0/29")
    assert pool.take("default/a", "127.0.1.5") == "127.0.1.5"
    assert pool.take("default/b", "127.0.1.5") == "127.0.1.1"  # taken: the next free one instead
    assert pool.take("default/c", "10.0.0.1") == "127.0.1.2"  # outside the pool
    assert pool.take("default/b", "127.0.1.6") == "127.0.1.6" and pool.held_by("default/b") == "127.0.1.6"


def service(type_="LoadBalancer", policy="Cluster", **spec):
    return {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "type": type_,
            "externalTrafficPolicy": policy,
            "ports": [
                {"port": 80, "protocol": "TCP", "nodePort": 30080},
                {"port": 53, "protocol": "UDP", "nodePort": 30053},
                {"port": 81, "protocol": "TCP"},  # allocateLoadBalancerNodePorts false: nothing to reach
            ],
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("svc", "expect"),
    [
        (service(type_="NodePort"), None),
        (service(), Frontend("shop/web", ((80, "TCP", 30080), (53, "UDP", 30053)), 0, None)),
        (
            service(policy="Local", healthCheckNodePort=31000, loadBalancerIP="127.0.1.9"),
            Frontend("shop/web", ((80, "TCP", 30080), (53, "UDP", 30053)), 31000, "127.0.1.9"),
        ),
        (
            service(healthCheckNodePort=31000),
            Frontend("shop/web", ((80, "TCP", 30080), (53, "UDP", 30053)), 0, None),
        ),
    ],
)
def test_frontend_of(svc, expect):
    assert frontend_of(svc) == expect


def test_only_ready_nodes_with_an_internal_ip_are_candidates():
    def node(address, ready):
        return {
            "status": {
                "addresses": [{"type": "InternalIP", "address": address}] if address else [],
                "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}],
            }
        }

    nodes = [node("127.0.0.12", True), node("127.0.0.11", True), node("127.0.0.13", False), node(None, True)]
    assert ready_node_addresses(nodes) == ["127.0.0.11", "127.0.0.12"]
