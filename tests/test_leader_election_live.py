"""Two API servers with controllers on one etcd: only the holder of the kube-controller-manager Lease runs
them, and when it is killed the other takes over within the lease duration and a retry period."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from support.local_cluster import eventually

from podnet.cli.cluster_cmd import controller_leader
from podnet.client import ApiError

pytestmark = [pytest.mark.etcd]

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 2.0, 1.5, 0.5
TIMINGS = ("--leader-elect-lease-duration", str(LEASE_DURATION), "--leader-elect-renew-deadline", str(RENEW_DEADLINE),
           "--leader-elect-retry-period", str(RETRY_PERIOD))


async def _holder(server) -> str:
    async with server.client() as client:
        try:
            lease = await client.get("leases", "kube-controller-manager", "kube-system")
        except ApiError:
            return ""
    return lease["spec"].get("holderIdentity") or ""


def _leads(server) -> bool:
    return "became leader" in server.log()


async def test_one_leader_runs_the_controllers_and_the_other_takes_over_when_it_dies(make_api_server, etcd_server, tmp_path):
    first = make_api_server(etcd_server.url, controllers=True, extra_args=TIMINGS)
    second = make_api_server(etcd_server.url, controllers=True, extra_args=TIMINGS)
    holder = await eventually(lambda: _holder(first), 10, "a lease holder")
    await asyncio.sleep(3 * RETRY_PERIOD)  # both have competed several times by now
    assert [_leads(first), _leads(second)].count(True) == 1, (first.log()[-2000:], second.log()[-2000:])
    assert await _holder(second) == holder  # renewed, never changed hands
    leader, survivor = (first, second) if _leads(first) else (second, first)

    leader.kill()
    killed_at = time.monotonic()
    new_holder = await eventually(
        lambda: _changed(survivor, holder), LEASE_DURATION + RETRY_PERIOD * 2.2 + 3.0, "the survivor to take the lease")
    took = time.monotonic() - killed_at
    assert new_holder != holder and _leads(survivor)
    assert took <= LEASE_DURATION + RETRY_PERIOD * 2.2 + 1.0, took
    # `podnet status` names it, from the cluster home's kubeconfig.
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(survivor.kubeconfig, home / "kubeconfig")
    assert (await controller_leader(home)).startswith(f"{new_holder} (since ")

    # The survivor's controllers act: a Deployment made now gets its ReplicaSet and pods.
    async with survivor.client() as client:
        await client.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                             "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                                      "template": {"metadata": {"labels": {"app": "web"}},
                                                   "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})

        async def pods():
            found = await client.list("pods", "default", label_selector="app=web")
            return len(found["items"]) == 2

        await eventually(pods, 10, "the Deployment's two pods")


async def _changed(server, old_holder: str) -> str:
    holder = await _holder(server)
    return holder if holder and holder != old_holder else ""


async def test_a_server_stopped_gracefully_gives_the_lease_up_at_once(make_api_server, etcd_server):
    first = make_api_server(etcd_server.url, controllers=True, extra_args=TIMINGS)
    holder = await eventually(lambda: _holder(first), 10, "a lease holder")
    first.stop()
    second = make_api_server(etcd_server.url, controllers=True, extra_args=(
        "--leader-elect-lease-duration", "30", "--leader-elect-renew-deadline", "20",
        "--leader-elect-retry-period", str(RETRY_PERIOD)))
    # Released, so the newcomer need not wait out the 2 s lease, let alone its own 30 s.
    await eventually(lambda: _changed(second, holder), 4 * RETRY_PERIOD + 2.0, "the newcomer to take the lease")


async def test_a_server_restarted_after_a_crash_resumes_its_own_lease_without_waiting_it_out(make_api_server, etcd_server):
    server = make_api_server(etcd_server.url, controllers=True)  # the default 15 s lease
    holder = await eventually(lambda: _holder(server), 10, "a lease holder")
    await eventually(lambda: _led_times(server, 1), 5, "the server to lead")
    server.kill()
    server.start()  # its log is appended to
    started = time.monotonic()
    await eventually(lambda: _led_times(server, 2), 5, "the restarted server to lead")
    assert time.monotonic() - started < 5 and await _holder(server) == holder


async def _led_times(server, times: int) -> bool:
    return server.log().count("became leader") >= times
