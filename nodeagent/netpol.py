"""NetworkPolicy enforcement in a node agent: informers feed the pure compiler, the pipeline's policy hook
asks it, and every verdict goes to the node's flow log and counters.

The compiler needs every Pod of the cluster (peers live on other nodes), every Namespace (for namespace
selectors) and every NetworkPolicy; with the node's name it builds rule sets only for the pods of this
node, since egress is judged at the source node and ingress at the destination node. A watch event
updates the compiler at once, so the next new connection is judged by the new objects; connections
already in conntrack keep the verdict they got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from podnet.nodeagent.policy import PolicyCompiler, Verdict
from podnet.nodeagent.policy.flowlog import DEFAULT_CAPACITY, VERDICTS, FlowLog, FlowRecord
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from podnet.api.keys import object_key
from podnet.client import ApiClient, Informer
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcError

log = logging.getLogger(__name__)

# What the compiler watches: kind -> API resource.
WATCHED = {"Namespace": "namespaces", "Pod": "pods", "NetworkPolicy": "networkpolicies"}
# Records a `flows -f` reader may fall behind by before the oldest unsent ones are dropped.
FOLLOW_QUEUE = 1024
NOT_SYNCED = "denied: the node has not yet listed the cluster's pods, namespaces and policies"


class PolicyEnforcer:
    def __init__(
        self,
        client: ApiClient,
        node_name: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_name = node_name
        self.compiler = PolicyCompiler(node_name=node_name)
        self.flowlog = FlowLog(node_name, capacity)
        self.clock = clock
        self.policy_versions: dict[str, str] = {}  # "ns/name" -> resourceVersion the compiler holds
        self.policy_times: dict[str, float] = {}  # "ns/name" -> when that version took effect (clock)
        self.follow_drops = 0
        # Joins other policies (Cilium's) into each verdict before it is logged: (direction, flow, verdict).
        self.refine: Callable[[str, Any, Verdict], Verdict] | None = None
        self._synced = False
        self._local_addresses: dict[str, tuple[str, str]] = {}  # "ns/name" -> (uid, IP) of this node's pods
        self.informers = {kind: Informer(client, resource) for kind, resource in WATCHED.items()}
        self._pod_handler = self.compiler.handler("Pod")
        for kind, informer in self.informers.items():
            informer.add_handler(self._on_pod if kind == "Pod" else self.compiler.handler(kind))
        self.informers["NetworkPolicy"].add_handler(self._track_policy)

    def _track_policy(self, event: str, old: dict | None, new: dict | None) -> None:
        meta = (new or old or {}).get("metadata") or {}
        key = object_key(new or old or {})
        if event == "DELETED" or new is None:
            self.policy_versions.pop(key, None)
            self.policy_times.pop(key, None)
        else:
            # The compiler's handler ran first: from now on new connections are judged by this version.
            self.policy_versions[key] = meta.get("resourceVersion") or ""
            self.policy_times[key] = self.clock()
            if key in self.compiler.errors:
                log.warning("NetworkPolicy %s is not enforced: %s", key, self.compiler.errors[key])

    # ---- this node's pods, as their addresses are given -------------------------------------------

    def pod_attached(self, obj: dict, ip: str) -> None:
        """A pod of this node has its address: policies judge its connections from now on, not once the API
        server has its status and this node has seen it there. Its program may connect at once (the probe
        of `kubectl run`), and a policy that selects it must already hold."""
        key = object_key(obj)
        self._local_addresses[key] = ((obj.get("metadata") or {}).get("uid") or "", ip)
        self._pod_handler("MODIFIED", None, self._with_local_address(obj))

    def pod_detached(self, key: str) -> None:
        self._local_addresses.pop(key, None)

    def _on_pod(self, event: str, old: dict | None, new: dict | None) -> None:
        self._pod_handler(event, old, None if new is None else self._with_local_address(new))

    def _with_local_address(self, pod: dict) -> dict:
        """`pod` with the address this node gave it while its status names none yet."""
        status = pod.get("status") or {}
        local = self._local_addresses.get(object_key(pod))
        if status.get("podIP") or local is None or local[0] != ((pod.get("metadata") or {}).get("uid") or ""):
            return pod
        return {**pod, "status": {**status, "podIP": local[1], "podIPs": [{"ip": local[1]}]}}

    # ---- the pipeline's hook -------------------------------------------------------------------

    def verdict(self, direction: str, flow: Any) -> Verdict:
        if self._synced or self._check_synced():
            verdict = self.compiler.verdict(direction, flow)
        else:
            # Until every informer has listed, a policy that isolates this pod may be unknown yet:
            # refusing is safe (the client retries), allowing could let through what a policy denies.
            verdict = Verdict(allowed=False, reason=NOT_SYNCED, direction=str(direction))
        if self.refine is not None and self._synced:
            verdict = self.refine(direction, flow, verdict)
        pod_at = self.compiler.evaluator().pod_at
        self.flowlog.add(self.clock(), direction, flow, verdict, pod_at(flow.src_ip), pod_at(flow.dst_ip))
        return verdict

    # ---- informers -----------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in self.informers.values():
                group.create_task(informer.run())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(informer.wait_synced() for informer in self.informers.values()))

    @property
    def synced(self) -> bool:
        return all(informer.synced for informer in self.informers.values())

    def _check_synced(self) -> bool:
        self._synced = self.synced
        return self._synced

    # ---- RPC -----------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Any]:
        return {AgentMethod.FLOWS: self.rpc_flows, AgentMethod.POLICY_STATUS: self.rpc_policy_status}

    async def rpc_policy_status(self, params: Any) -> dict:
        """What this node enforces: the policies by the resourceVersion compiled and when each took
        effect (seconds since the epoch), those refused, and how many pods and flow records it knows."""
        return {
            "node": self.node_name,
            "synced": self.synced,
            "policies": dict(self.policy_versions),
            "applied_at": dict(self.policy_times),
            "errors": dict(self.compiler.errors),
            "pods": len(self.compiler.evaluator().pods),
            "flows": len(self.flowlog),
            "followers": self.flowlog.listeners,
            "verdicts": {f"{d}/{v}": n for (d, v), n in self.flowlog.counts.items()},
        }

    async def rpc_flows(self, params: dict | None) -> AsyncIterator[dict]:
        """Recent records (the last `limit`, all when absent), then with `follow` every new one."""
        params = params or {}
        verdict = params.get("verdict") or None
        limit = params.get("limit")
        if verdict is not None and verdict not in VERDICTS:
            raise RpcError("BadRequest", f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise RpcError("BadRequest", f"limit must be a non-negative integer, not {limit!r}")
        queue: asyncio.Queue[FlowRecord] = asyncio.Queue(FOLLOW_QUEUE)
        unsubscribe = self.flowlog.subscribe(self._enqueue(queue, verdict)) if params.get("follow") else None
        try:
            for record in self.flowlog.records(verdict=verdict, limit=limit):
                yield record.to_dict()
            while unsubscribe is not None:
                yield (await queue.get()).to_dict()
        finally:
            if unsubscribe is not None:
                unsubscribe()

    def _enqueue(self, queue: asyncio.Queue, verdict: str | None) -> Callable[[FlowRecord], None]:
        def put(record: FlowRecord) -> None:
            if not record.matches(verdict):
                return
            if queue.full():
                # A slow reader loses the oldest unsent records, never slows the dataplane.
                self.follow_drops += 1
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(record)

        return put

    # ---- /metrics ------------------------------------------------------------------------------

    def collect(self):
        verdicts = CounterMetricFamily(
            "podnet_policy_verdicts",
            "NetworkPolicy verdicts on new connections",
            labels=["direction", "verdict"],
        )
        for (direction, verdict), count in sorted(self.flowlog.counts.items()):
            verdicts.add_metric([direction, verdict], count)
        policies = GaugeMetricFamily("podnet_policy_networkpolicies", "NetworkPolicies compiled on this node")
        policies.add_metric([], len(self.policy_versions))
        refused = GaugeMetricFamily(
            "podnet_policy_refused", "NetworkPolicies not enforced because they are invalid"
        )
        refused.add_metric([], len(self.compiler.errors))
        drops = CounterMetricFamily(
            "podnet_policy_flow_follow_drops", "Flow records a slow `flows -f` reader did not get"
        )
        drops.add_metric([], self.follow_drops)
        return [verdicts, policies, refused, drops]
