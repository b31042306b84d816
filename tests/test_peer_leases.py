"""The `kubernetes` Service's endpoints: every API server whose identity lease is live (apiserver/peerleases.py),
and, live, two API servers on one etcd listed together and one leaving on SIGTERM."""

from __future__ import annotations

import datetime
import time

import pytest
from podnet.apiserver import peerleases
from podnet.apiserver.peerleases import Peer
from support.local_cluster import eventually
from support.processes import free_tcp_port

NOW = datetime.datetime(2026, 12, 4, 18, 0, tzinfo=datetime.UTC)


def _lease(peer: Peer, age: float) -> dict:
    return peerleases.identity_lease(peer, "host", NOW - datetime.timedelta(seconds=age))


def test_live_servers_are_those_whose_lease_has_not_run_out_on_the_services_port():
    a, b, c, other_port = Peer("10.0.0.1", 6443), Peer("10.0.0.2", 6443), Peer("10.0.0.3", 6443), Peer("10.0.0.4", 7443)
    leases = [_lease(b, 0), _lease(a, peerleases.LEASE_DURATION - 1), _lease(c, peerleases.LEASE_DURATION),
              _lease(other_port, 0)]
    unlabelled = _lease(Peer("10.0.0.5", 6443), 0)
    del unlabelled["metadata"]["labels"]
    assert peerleases.live_peers([*leases, unlabelled], NOW, 6443) == [a, b]


def test_each_address_has_a_lease_of_its_own():
    assert peerleases.lease_name(Peer("10.0.0.1", 6443)) != peerleases.lease_name(Peer("10.0.0.2", 6443))
    lease = _lease(Peer("10.0.0.1", 6443), 0)
    assert lease["metadata"]["namespace"] == "kube-system" and lease["metadata"]["name"].startswith("apiserver-")
    assert lease["metadata"]["labels"]["apiserver.kubernetes.io/identity"] == "kube-apiserver"


def test_the_endpoints_list_every_live_server_and_none_when_there_are_none():
    endpoints, endpoint_slice = peerleases.kubernetes_endpoints([Peer("10.0.0.1", 6443), Peer("10.0.0.2", 6443)], 6443)
    assert endpoints["subsets"] == [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                                     "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]
    assert [e["addresses"] for e in endpoint_slice["endpoints"]] == [["10.0.0.1"], ["10.0.0.2"]]
    empty, empty_slice = peerleases.kubernetes_endpoints([], 6443)
    assert empty["subsets"] == [] and empty_slice["endpoints"] == []


async def _addresses(client) -> list[str]:
    endpoints = await client.get("endpoints", "kubernetes", "default")
    return [a["ip"] for subset in endpoints.get("subsets") or [] for a in subset["addresses"]]


@pytest.mark.etcd
async def test_two_servers_are_both_endpoints_and_one_stopping_leaves_at_once(make_api_server, etcd_server):
    port = free_tcp_port("127.0.150.1", "127.0.150.2")
    first = make_api_server(etcd_server.url, controllers=True, host="127.0.150.1", port=port)
    second = make_api_server(etcd_server.url, controllers=True, host="127.0.150.2", port=port)
    async with first.client() as client:
        async def both() -> bool:
            return await _addresses(client) == ["127.0.150.1", "127.0.150.2"]

        await eventually(both, 20, "both API servers in the kubernetes endpoints")
        slice_ = await client.get("endpointslices", "kubernetes", "default")
        assert sorted(a for e in slice_["endpoints"] for a in e["addresses"]) == ["127.0.150.1", "127.0.150.2"]
        second.stop()
        stopped = time.monotonic()

        async def first_only() -> bool:
            return await _addresses(client) == ["127.0.150.1"]

        await eventually(first_only, 5, "the stopped server out of the endpoints")
        assert time.monotonic() - stopped < peerleases.LEASE_DURATION  # it left; its lease did not just run out
