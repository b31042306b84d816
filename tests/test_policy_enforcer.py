"""The node agent's policy enforcer against a real API server, without a dataplane: it refuses until its
informers have listed, then judges by the objects it watches and follows changes at once."""

from __future__ import annotations

import asyncio
import contextlib

from podnet.nodeagent.netpol import NOT_SYNCED, PolicyEnforcer
from podnet.nodeagent.policy import EGRESS, INGRESS, Flow
from support.netpol_model import namespaces, policy

from podnet.client import ApiClient

SERVER_IP, CLIENT_IP = "10.244.1.10", "10.244.2.20"


def _pod(namespace: str, name: str, node: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": {"pod": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "agnhost"}]},
    }


async def _with_ip(client: ApiClient, pod: dict, ip: str) -> None:
    meta = pod["metadata"]
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    await client.patch(
        "pods", meta["name"], {"status": status}, namespace=meta["namespace"], subresource="status"
    )


async def test_refuses_until_synced_then_follows_policies_at_once(api_server_module):
    flow = Flow("TCP", CLIENT_IP, 40000, SERVER_IP, 80)
    async with api_server_module.client() as client:
        for ns in namespaces():
            await client.create(ns)
        server, peer = _pod("x", "a", "node-1"), _pod("y", "b", "node-2")
        for pod, ip in ((server, SERVER_IP), (peer, CLIENT_IP)):
            await client.create(pod)
            await _with_ip(client, pod, ip)
        enforcer = PolicyEnforcer(client, "node-1", clock=lambda: 1.0)
        before = enforcer.verdict(INGRESS, flow)
        assert (before.allowed, before.reason) == (False, NOT_SYNCED)
        task = asyncio.create_task(enforcer.run())
        try:
            await asyncio.wait_for(enforcer.wait_synced(), 10)
            assert enforcer.verdict(INGRESS, flow).reason == "allowed: no policy selects the pod"
            created = await client.create(
                policy(
                    "x",
                    "only-ns-z",
                    {
                        "podSelector": {},
                        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}],
                    },
                )
            )
            for _ in range(200):
                if enforcer.policy_versions.get("x/only-ns-z") == created["metadata"]["resourceVersion"]:
                    break
                await asyncio.sleep(0.01)
            denied = enforcer.verdict(INGRESS, flow)
            assert denied.reason == "denied: selected by x/only-ns-z and no rule matched"
            # Egress of a pod on another node is that node's business.
            assert enforcer.verdict(EGRESS, flow).reason == "allowed: not a pod of node node-1"
            status = await enforcer.rpc_policy_status(None)
            assert status["synced"] and status["policies"] == {
                "x/only-ns-z": created["metadata"]["resourceVersion"]
            }
            assert status["applied_at"]["x/only-ns-z"] == 1.0
            records = [r async for r in enforcer.rpc_flows({"verdict": "denied"})]
            assert [r["reason"] for r in records] == [NOT_SYNCED, denied.reason]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_pod_given_its_address_here_is_judged_before_its_status_names_it(api_server_module):
    """A pod's program may connect as soon as the node gives it its address (the probe of `kubectl run`):
    the policies that select it hold from then on, not from when its status reaches the node."""
    new_ip = "10.244.1.11"
    async with api_server_module.client() as client:
        for ns in namespaces():
            with contextlib.suppress(Exception):
                await client.create(ns)
        fresh = await client.create(_pod("x", "fresh", "node-1"))  # no status yet: no address the API knows
        await client.create(policy("x", "fresh-no-egress", {"podSelector": {"matchLabels": {"pod": "fresh"}},
                                                            "policyTypes": ["Egress"]}))
        enforcer = PolicyEnforcer(client, "node-1", clock=lambda: 1.0)
        task = asyncio.create_task(enforcer.run())
        try:
            await asyncio.wait_for(enforcer.wait_synced(), 10)
            out = Flow("TCP", new_ip, 40000, CLIENT_IP, 80)
            assert enforcer.verdict(EGRESS, out).reason == "allowed: not a pod of node node-1"
            enforcer.pod_attached(fresh, new_ip)
            assert enforcer.verdict(EGRESS, out).reason == "denied: selected by x/fresh-no-egress and no rule matched"
            # An update that still carries no address (a label added) keeps the one given here.
            labelled = await client.patch("pods", "fresh", {"metadata": {"labels": {"more": "1"}}}, namespace="x")
            for _ in range(200):
                if enforcer.informers["Pod"].store["x/fresh"]["metadata"]["resourceVersion"] == \
                        labelled["metadata"]["resourceVersion"]:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the labelled pod never reached the enforcer")
            assert not enforcer.verdict(EGRESS, out).allowed
            enforcer.pod_detached("x/fresh")
            await client.delete("pods", "fresh", "x", grace_period=0)
            for _ in range(200):
                if enforcer.verdict(EGRESS, out).allowed:
                    break
                await asyncio.sleep(0.01)
            assert enforcer.verdict(EGRESS, out).reason == "allowed: not a pod of node node-1"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
