"""Cilium's policies in a node agent: informers for CiliumNetworkPolicies and
CiliumClusterwideNetworkPolicies beside the NetworkPolicy enforcer's, the combined verdict on each new
connection (nodeagent.l7.verdict), and the L7 verdict of each connection the proxy must filter, handed to
the destination pod's stack when its first segment arrives.

Until the Cilium policy kinds are listed (or when their CRDs are not installed) no Cilium policy is known
and NetworkPolicies alone decide, as in a cluster without Cilium's policies. The index of Cilium policies
is rebuilt on the first verdict after any change of a policy, a pod or a namespace.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from podnet.nodeagent.l7.cilium import CiliumPolicyIndex
from podnet.nodeagent.l7.proxy import Judged
from podnet.nodeagent.l7.verdict import ConnectionVerdict, combine
from podnet.nodeagent.netpol import PolicyEnforcer
from podnet.nodeagent.policy import INGRESS, Flow, Verdict
from podnet.nodeagent.policy.compile import namespace_labels, pod_info

from podnet.api.ciliumpolicy import CILIUM_KINDS, NotModelled, parse_cilium_policy
from podnet.api.httprules import RuleError
from podnet.client import ApiClient, Informer

log = logging.getLogger(__name__)

# L7 verdicts of connections judged but whose first segment has not reached the pod yet.
PENDING_CONNECTIONS = 4096


class L7Enforcer:
    def __init__(self, client: ApiClient, policies: PolicyEnforcer) -> None:
        self.policies = policies
        self.errors: dict[str, str] = {}  # policy key -> why it is not enforced
        self.informers = {kind: Informer(client, k) for kind, k in CILIUM_KINDS.items()}
        # The nodes' addresses tell the host and remote-node entities from the world.
        self.nodes = Informer(client, "nodes")
        for informer in (*self.informers.values(), self.nodes):
            informer.add_handler(self._changed)
        for kind in ("Pod", "Namespace"):
            policies.informers[kind].add_handler(self._changed)
        self._index: CiliumPolicyIndex | None = None
        self.pending: OrderedDict[tuple[str, int, str, int], ConnectionVerdict] = OrderedDict()
        # A netns pod's connections its egress HTTP rules cover, by source address and port: the SYN is
        # judged in the pipeline, and the dataplane takes the verdict right after.
        self.pending_egress: OrderedDict[tuple[str, int], ConnectionVerdict] = OrderedDict()
        # Whether a pod of this node can have the L7 proxy in front of it (and behind it); set by the agent.
        self.proxied: Callable[[str], bool] = lambda ip: False
        policies.refine = self.refine

    def _changed(self, event: str, old: Any, new: Any) -> None:
        self._index = None

    def index(self) -> CiliumPolicyIndex:
        if self._index is None:
            specs, errors = [], {}
            for kind, informer in self.informers.items():
                for key, obj in informer.store.items():
                    try:
                        specs.append(parse_cilium_policy({**obj, "kind": kind}))
                    except (RuleError, NotModelled) as e:
                        errors[f"{kind}/{key}"] = str(e)
            for key in errors.keys() - self.errors.keys():
                log.warning("%s is not enforced: %s", key, errors[key])
            self.errors = errors
            pods = [p for p in map(pod_info, self.policies.informers["Pod"].store.values()) if p is not None]
            labels = {
                obj["metadata"]["name"]: namespace_labels(obj)
                for obj in self.policies.informers["Namespace"].store.values()
            }
            addresses = {
                obj["metadata"]["name"]: [
                    a["address"] for a in (obj.get("status") or {}).get("addresses") or []
                    if a.get("type") == "InternalIP" and a.get("address")
                ]
                for obj in self.nodes.store.values()
            }
            self._index = CiliumPolicyIndex(
                specs,
                pods,
                labels,
                host_addresses=addresses.get(self.policies.node_name, []),
                node_addresses=[a for found in addresses.values() for a in found],
            )
        return self._index

    # ---- the hooks -----------------------------------------------------------------------------

    def refine(self, direction: str, flow: Any, verdict: Verdict) -> Verdict:
        """The NetworkPolicy verdict of a new connection, with Cilium's policies joined in."""
        decision = self.index().decide(direction, flow)
        if not decision.isolated and not decision.allows:
            return verdict
        combined = combine(verdict, decision)
        if combined.l7 is not None:
            ingress = direction == INGRESS
            subject = str(flow.dst_ip if ingress else flow.src_ip)
            if not self.proxied(subject):
                # Letting the connection through unfiltered would ignore the HTTP rules: refuse it, and say why.
                where = "a relayed pod's ports"
                return Verdict(
                    allowed=False,
                    reason=f"denied: HTTP rules of {combined.policy} cover it and podnet has no L7 proxy for {where} yet",
                    policy=combined.policy,
                    rule_index=combined.rule_index,
                    direction=direction,
                )
            if ingress:
                key = (str(flow.src_ip), flow.src_port, str(flow.dst_ip), flow.dst_port)
                pending = self.pending
            else:
                key, pending = (str(flow.src_ip), flow.src_port), self.pending_egress
            pending[key] = combined
            while len(pending) > PENDING_CONNECTIONS:
                pending.popitem(last=False)
        return Verdict(
            allowed=combined.allowed,
            reason=combined.reason,
            policy=combined.policy,
            rule_index=combined.rule_index,
            direction=direction,
            l7=None if combined.l7 is None else self._describe_filter(combined),
        )

    def _describe_filter(self, combined: ConnectionVerdict) -> str:
        """What the trace's l7-policy stage says of a connection whose requests the proxy filters."""
        rules = "; ".join(
            f"{r.policy} {combined.direction} rule {r.rule_index} http[{r.http_index}] {r.rule.text}"
            for r in combined.l7
        )
        return (
            f"each HTTP request goes through the L7 proxy on {self.policies.node_name}: allowed if it "
            f"matches {rules}; otherwise answered 403 Access denied"
        )

    def l7_for(
        self, remote_ip: str, remote_port: int, local_ip: str, local_port: int
    ) -> ConnectionVerdict | None:
        """The stack's question for a new connection to one of its pods: filtered by which HTTP rules."""
        return self.pending.pop((remote_ip, remote_port, local_ip, local_port), None)

    def l7_egress_for(self, src_ip: str, src_port: int) -> ConnectionVerdict | None:
        """The dataplane's question right after a netns pod's SYN went through the pipeline."""
        return self.pending_egress.pop((src_ip, src_port), None)

    def report(
        self,
        client: str,
        server: str,
        judged: Judged,
        status: int | None,
        direction: str = INGRESS,
        latency: float | None = None,
    ) -> None:
        """One request the proxy judged, into the node's flow log (Hubble's L7 records): who asked what of
        whom, the answer's status and the rule that decided."""
        src_ip, _, src_port = client.rpartition(":")
        dst_ip, _, dst_port = server.rpartition(":")
        flow = Flow("HTTP", src_ip, int(src_port), dst_ip, int(dst_port))
        answer = "no answer" if status is None else str(status)
        if latency is not None:
            answer += f" ({latency * 1000:.1f} ms)"
        verdict = judged.verdict
        record = Verdict(
            allowed=verdict.allowed,
            reason=f"{judged.method} http://{judged.host or dst_ip}{judged.target} → {answer}  {verdict.reason}",
            policy=verdict.policy,
            rule_index=verdict.rule_index,
            direction=direction,
        )
        pod_at = self.policies.compiler.evaluator().pod_at
        self.policies.flowlog.add(
            self.policies.clock(), direction, flow, record, pod_at(src_ip), pod_at(dst_ip)
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in (*self.informers.values(), self.nodes):
                group.create_task(informer.run())
