"""The node agent's RPC handlers, one per `AgentMethod` (podnet/rpc/agentmethods.py): the tables kube-proxy
and the BGP speaker program, what a virtual pod does from its own stack (`pod.*`), probes and traces, packet
capture, counters, and the faults `podnet partition` plays.

Handlers check their parameters and answer a bad one with `RpcError("BadRequest", ...)`; the work itself is
the dataplane's and the pods' own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from podnet.nodeagent import encryption
from podnet.nodeagent.endpoints import KernelPod, VirtualPod
from podnet.nodeagent.pods.netns import probe as netns_probe
from podnet.nodeagent.pods.virtual import client as ops
from podnet.nodeagent.pods.virtual.resolver import UnresolvableError
from podnet.nodeagent.pods.virtual.stack import PodStack
from podnet.nodeagent.savedservices import SavedServiceTable
from podnet.nodeagent.traces import PROTOCOL_NUMBERS
from podnet.overlay.pipeline.model import Encapsulation, Output, Peer, Stage, describe_key, vtep_mac
from podnet.overlay.pipeline.nat import ServiceTable, TableError
from podnet.overlay.pipeline.routes import Route, RouteKind, parse_prefix
from podnet.overlay.wire import ipv4, udp
from podnet.overlay.wire.addresses import ip_to_int

from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcError

if TYPE_CHECKING:
    from podnet.nodeagent.agent import NodeAgent

log = logging.getLogger(__name__)


class AgentRpc:
    def __init__(self, agent: NodeAgent):
        self.agent = agent
        self.config = agent.config
        self.dataplane = agent.dataplane
        self.pods = agent.lifecycle.pods
        self.saved_services = SavedServiceTable(agent.config.state_path)

    def handlers(self) -> dict[str, Any]:
        return {
            AgentMethod.NODE_INFO: self.node_info,
            AgentMethod.SERVICES_APPLY: self.services_apply,
            AgentMethod.SERVICES_GET: self.services_get,
            AgentMethod.NODEPORTS_APPLY: self.nodeports_apply,
            AgentMethod.ROUTES_APPLY: self.routes_apply,
            AgentMethod.ROUTES_LIST: self.routes_list,
            AgentMethod.CONNTRACK_LIST: self.conntrack_list,
            AgentMethod.PODS_LIST: self.pods_list,
            AgentMethod.POD_HTTP: self.pod_http,
            AgentMethod.POD_CONNECT: self.pod_connect,
            AgentMethod.POD_PING: self.pod_ping,
            AgentMethod.POD_DIG: self.pod_dig,
            AgentMethod.POD_SEND_UDP: self.pod_send_udp,
            AgentMethod.POD_TCP_TRANSFER: self.pod_tcp_transfer,
            AgentMethod.POD_EXEC_COMMAND: self.pod_exec_command,
            AgentMethod.PROBE: self.probe,
            AgentMethod.TRACE: self.trace,
            AgentMethod.TRACE_WATCH: self.trace_watch,
            AgentMethod.CAPTURE: self.capture,
            AgentMethod.COUNTERS: self.counters,
            AgentMethod.FAULTS_PARTITION: self.partition,
            AgentMethod.FAULTS_PARTITIONS: self.partitions,
        }

    # ---- the node and its tables -----------------------------------------------------------------

    async def pod_exec_command(self, params: dict) -> dict | None:
        """`podnet exec` into a netns pod: the command line that runs `argv` in its sandbox."""
        key = f"{params.get('namespace') or 'default'}/{params.get('pod')}"
        return self.agent.lifecycle.exec_command(key, [str(a) for a in params.get("argv") or []])

    async def node_info(self, params: Any) -> dict:
        dataplane = self.dataplane
        encapsulation = dataplane.pipeline.node.encapsulation
        return {
            "name": self.config.name,
            "address": self.config.address,
            "pod_cidr": self.agent.registration.pod_cidr,
            "backend": self.config.backend,
            "encapsulation": encapsulation.value,
            "vxlan_port": encryption.carried_port(dataplane.tunnel) if encapsulation is Encapsulation.VXLAN else None,
            "fou_port": encryption.carried_port(dataplane.tunnel) if encapsulation is Encapsulation.FOU else None,
            "encryption": self.config.encryption,
            "wireguard_port": dataplane.tunnel.port if encryption.encrypted(self.config) else None,
            "vtep_mac": vtep_mac(self.config.address),
            "status_port": self.agent.status_port,
        }

    async def services_apply(self, params: dict) -> dict:
        """Replaces the whole service table at once; conntrack entries (and so established
        connections) stay, but for UDP flows to a Service endpoint that no longer serves it, and ClientIP
        affinity records carry over to the new table. The table is kept on disk, for the agent's next
        start (nodeagent/savedservices.py)."""
        try:
            data = params["table"]
            table, cleared = await self._install_services(data)
        except (KeyError, TypeError, TableError) as exc:
            raise RpcError("BadRequest", f"services.apply: {exc}") from None
        await self.saved_services.save(data)
        return {"rules": len(table), "conntrack_cleared": cleared}

    async def restore_services(self) -> None:
        """At start, before any pod is attached: the table a previous run was last given, until kube-proxy
        sends its own."""
        data = self.saved_services.load()
        if data is None:
            return
        try:
            table, _ = await self._install_services(data)
        except (TypeError, TableError) as exc:
            log.warning("the saved service table is not installed: %s", exc)
            return
        log.info("service table of %d rules restored from the previous run", len(table))

    async def _install_services(self, data: Any) -> tuple[ServiceTable, int]:
        """The table `data` describes, installed; with the number of stale UDP flows it cleared."""
        pipeline = self.dataplane.pipeline
        table = ServiceTable.from_data(data, previous=pipeline.services)
        pipeline.services = table
        cleared = pipeline.conntrack.clear_stale_udp(table.udp_serving())
        pipeline.counters["conntrack.cleared-stale-udp"] += cleared
        cleared += self.dataplane.nodeports.forget_stale_udp(table.udp_node_port_serving())
        await self.dataplane.nodeports.reconcile(table.node_ports())
        return table, cleared

    async def services_get(self, params: Any) -> dict:
        """The installed service table as kube-proxy sent it (`{"service": "ns/name"}`: that Service's
        entries only), with its rule count and the nodePorts listening."""
        table = self.dataplane.pipeline.services
        if table is None:
            return {"installed": False, "rules": 0, "table": None, "node_ports": []}
        data = table.to_data()
        wanted = (params or {}).get("service") if isinstance(params, dict) else None
        if wanted:
            data["services"] = [entry for entry in data["services"] if entry["service"] == wanted]
        listening = [list(key) for key in sorted(self.dataplane.nodeports.listening)]
        return {"installed": True, "rules": len(table), "table": data, "node_ports": listening}

    async def nodeports_apply(self, params: dict) -> dict:
        """Listeners for exactly these [nodePort, protocol] pairs (services.apply opens the table's)."""
        try:
            ports = [(int(port), str(protocol)) for port, protocol in params.get("ports") or []]
        except (TypeError, ValueError) as exc:
            raise RpcError("BadRequest", f"nodeports.apply takes [port, protocol] pairs: {exc}") from None
        return {"listening": [list(p) for p in await self.dataplane.nodeports.reconcile(ports)]}

    async def routes_apply(self, params: dict) -> dict:
        pipeline = self.dataplane.pipeline
        source = params.get("source", "bgp")
        routes = []
        for entry in params.get("routes") or []:
            try:
                prefix = parse_prefix(entry["prefix"])
                ip_to_int(entry["next_hop"])
            except (KeyError, ValueError, TypeError) as exc:
                raise RpcError("BadRequest", f"bad route {entry!r}: {exc}") from None
            if entry["next_hop"] not in pipeline.peers:
                hop = entry["next_hop"]
                pipeline.set_peer(Peer(hop, hop, vtep_mac(hop)), None)
            routes.append(Route(prefix, RouteKind.TUNNEL, entry["next_hop"], source))
        try:
            count = pipeline.routes.replace_source(source, routes)
        except ValueError as exc:
            raise RpcError("BadRequest", str(exc)) from None
        return {"routes": count}

    async def routes_list(self, params: Any) -> list[dict]:
        return [
            {"prefix": str(r.prefix), "kind": r.kind.name.lower(), "next_hop": r.next_hop, "source": r.source}
            for r in self.dataplane.pipeline.routes.routes()
        ]

    async def conntrack_list(self, params: Any) -> list[dict]:
        """The connections the node tracks: both directions' tuples (they differ when DNATted), state,
        packets each way and seconds left."""
        now = time.monotonic()
        return [
            {
                "original": describe_key(entry.original),
                "reply": describe_key(entry.reply),
                "state": entry.state.name.lower(),
                "note": entry.note,
                "packets": list(entry.packets),
                "expires_in": round(entry.expires - now, 1),
            }
            for entry in self.dataplane.pipeline.conntrack.entries()
        ]

    async def pods_list(self, params: Any) -> list[dict]:
        return [
            {"namespace": p.port.namespace, "name": p.port.name, "ip": p.port.ip, "mac": p.port.mac,
             "counters": dict(p.netns.counters if isinstance(p, KernelPod) else p.stack.counters),
             "netns": p.netns.net.netns if isinstance(p, KernelPod) else None}
            for p in self.pods.values()
        ]

    async def counters(self, params: Any) -> dict[str, int]:
        return self.agent.counters()

    # ---- what a virtual pod does -----------------------------------------------------------------

    def _pod(self, params: dict) -> VirtualPod:
        namespace = params.get("namespace") or "default"
        pod = self.pods.get(f"{namespace}/{params.get('pod')}")
        if pod is None:
            raise RpcError("NotFound", f"pod {namespace}/{params.get('pod')} has no network on {self.config.name}")
        if isinstance(pod, KernelPod):
            raise RpcError("BadRequest", f"pod {pod.port.key} is a netns pod: run a real program in it "
                                         "(podnet exec POD -- CMD ...)")
        return pod

    async def pod_http(self, params: dict) -> dict:
        pod = self._pod(params)
        timeout = float(params.get("timeout") or 10.0)
        try:
            address = await self.agent.dns.url_address(pod, params["url"], timeout)
        except UnresolvableError as exc:
            return {"ok": False, "reason": str(exc)}
        method = str(params.get("method") or "GET")
        if not (method.isascii() and method.isalpha()):
            raise RpcError("BadRequest", f"method must be an HTTP method name, not {method!r}")
        start = lambda s, now: s.http_get(params["url"], now, timeout=timeout, address=address, method=method)  # noqa: E731
        event = await self.dataplane.operate(pod, start, timeout)
        if isinstance(event, ops.Failed):
            return {"ok": False, "reason": event.reason}
        response: ops.HttpResponse = event.result
        return {
            "ok": 200 <= response.status < 300,
            "status": response.status,
            "reason": response.reason,
            "headers": [list(h) for h in response.headers],
            "body": response.body,
        }

    async def pod_connect(self, params: dict) -> dict:
        pod = self._pod(params)
        timeout = float(params.get("timeout") or 5.0)
        port = int(params["port"])
        try:
            host = await self.agent.dns.address(pod, params["host"], timeout)
        except UnresolvableError as exc:
            return {"ok": False, "reason": str(exc)}
        operate = self.dataplane.operate
        if (params.get("protocol") or "TCP").upper() == "UDP":
            payload = params.get("payload") or b"hostname"
            payload = payload.encode() if isinstance(payload, str) else payload
            event = await operate(pod, lambda s, now: s.udp_exchange(host, port, payload, now, timeout=timeout), timeout)
            if isinstance(event, ops.Failed):
                return {"ok": False, "reason": event.reason}
            return {"ok": True, "peer": event.result.peer, "reply": event.result.payload}
        event = await operate(pod, lambda s, now: s.connect(host, port, now, timeout=timeout), timeout)
        if isinstance(event, ops.Failed):
            return {"ok": False, "reason": event.reason}
        return {"ok": True, "local": event.result.local, "remote": event.result.remote}

    async def pod_ping(self, params: dict) -> dict:
        pod = self._pod(params)
        count = int(params.get("count") or 3)
        interval = float(params.get("interval") or 0.2)
        timeout = float(params.get("timeout") or (count - 1) * interval + 2.0)

        def start(stack: PodStack, now: float) -> int:
            return stack.ping(params["ip"], now, count=count, interval=interval, timeout=timeout)

        event = await self.dataplane.operate(pod, start, timeout)
        if isinstance(event, ops.Failed):
            return {"ok": False, "reason": event.reason, "transmitted": count, "received": 0, "rtts": []}
        result: ops.PingResult = event.result
        return {
            "ok": result.received > 0,
            "transmitted": result.transmitted,
            "received": result.received,
            "rtts": list(result.rtts),
        }

    async def pod_dig(self, params: dict) -> dict:
        return await self.agent.dns.dig(self._pod(params), params)

    async def pod_send_udp(self, params: dict) -> dict:
        """The pod sends a stream of UDP datagrams to `dst:port` for `seconds`, as fast as the node
        forwards them, without waiting for answers (what `iperf -u -b 0` does): a load generator."""
        pod = self._pod(params)
        size, seconds = int(params.get("size") or 64), float(params.get("seconds") or 1.0)
        try:
            body = udp.encode(udp.UdpDatagram(40000, int(params["port"]), bytes(size)), pod.port.ip, params["dst"])
            packet = ipv4.encode(ipv4.IPv4Packet(pod.port.ip, params["dst"], ipv4.IPProtocol.UDP, body))
        except (KeyError, ValueError) as exc:
            raise RpcError("BadRequest", f"pod.send_udp: {exc}") from None
        start = time.monotonic()
        end, sent = start + seconds, 0
        from_pod, run, port = self.dataplane.pipeline.from_pod, self.dataplane.run, pod.port
        while (now := time.monotonic()) < end:
            outputs: list[Output] = []
            for _ in range(64):
                outputs += from_pod(port, packet, now)
            run(outputs, now)  # one pass carries out the burst, as the tunnel's batches do
            sent += 64
            await asyncio.sleep(0)  # let the loop read the tunnel socket between bursts
        return {"sent": sent, "seconds": time.monotonic() - start}

    async def pod_tcp_transfer(self, params: dict) -> dict:
        """The pod opens TCP to `dst:port` (an agnhost port echoes raw bytes back), waits `hold` seconds
        with the connection open, writes `bytes` bytes and reads the echo; returns how long the round trip of
        all of it took."""
        pod = self._pod(params)
        total, timeout = int(params.get("bytes") or 1 << 20), float(params.get("timeout") or 30.0)
        hold = float(params.get("hold") or 0.0)
        loop, emit = self.dataplane.loop, self.dataplane.emit
        opened, echoed = loop.create_future(), loop.create_future()
        received = 0

        def on_event(event: Any) -> None:
            nonlocal received
            if isinstance(event, ops.Opened) and not opened.done():
                opened.set_result(event)
            elif isinstance(event, ops.Received):
                received += len(event.data)
                if received >= total and not echoed.done():
                    echoed.set_result(received)
            elif isinstance(event, ops.Failed):
                for future in (opened, echoed):
                    if not future.done():
                        future.set_exception(RpcError("Failed", event.reason))

        now = time.monotonic()
        op = pod.stack.open_tcp(params["dst"], int(params["port"]), now, timeout=timeout)
        pod.listeners[op] = on_event
        try:
            emit(pod, pod.stack.poll(now), now)
            await asyncio.wait_for(opened, timeout)
            await asyncio.sleep(hold)
            payload = b"x" * total  # made before the clock starts: the transfer is timed, not the memset
            start = time.monotonic()
            pod.stack.send(op, payload, start)
            emit(pod, pod.stack.poll(start), start)
            await asyncio.wait_for(echoed, timeout)
            elapsed = time.monotonic() - start
            now = time.monotonic()
            pod.stack.close(op, now)
            emit(pod, pod.stack.poll(now), now)
        finally:
            pod.listeners.pop(op, None)
        return {"bytes": total, "echoed": received, "seconds": elapsed}

    # ---- probes and traces -----------------------------------------------------------------------

    async def _probe(self, params: dict, trace: list[Stage] | None) -> dict:
        try:
            namespace, _, name = (params.get("src") or "").rpartition("/")
            timeout = float(params.get("timeout") or 2.0)
            dst, port = params["dst"], int(params["port"])
            protocol = (params.get("protocol") or "TCP").upper()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RpcError("BadRequest", f"a probe needs src, dst and port (protocol, timeout): {exc!r}") from None
        pipeline = self.dataplane.pipeline
        drops_before = dict(pipeline.counters)
        source = self.pods.get(f"{namespace or 'default'}/{name}")
        if isinstance(source, KernelPod):
            tracer = self.dataplane.traces.tracer(source.port.ip, dst, port, protocol, trace)
            outcome = await netns_probe(source.netns.net, dst, port, protocol, timeout, tracer)
            if outcome["ok"]:
                return outcome
            reason = outcome["reason"]
        else:
            pod = self._pod({"namespace": namespace or "default", "pod": name})
            if protocol == "UDP":
                payload = self.agent.dns.probe_payload(port)
                start = lambda s, now: s.udp_exchange(dst, port, payload, now, timeout=timeout)  # noqa: E731
            else:
                start = lambda s, now: s.connect(dst, port, now, timeout=timeout)  # noqa: E731
            event = await self.dataplane.operate(pod, start, timeout, trace)
            if isinstance(event, ops.Completed):
                return {"ok": True, "reason": "connected" if not hasattr(event.result, "payload") else "answered"}
            reason = event.reason
        dropped = [k[5:] for k, v in pipeline.counters.items() if k.startswith("drop.") and v > drops_before.get(k, 0)]
        return {"ok": False, "reason": reason, "dropped": dropped}

    async def probe(self, params: dict) -> dict:
        return await self._probe(params, None)

    async def trace(self, params: dict) -> list[dict]:
        trace: list[Stage] = []
        try:
            outcome = await self._probe(params, trace)
        finally:
            self.dataplane.traces.forget(trace)
        verdict = "answered" if outcome["ok"] else f"no answer: {outcome['reason']}"
        trace.append(Stage("result", verdict))
        return [stage.as_dict() for stage in trace]

    async def trace_watch(self, params: dict) -> list[dict]:
        """The destination half of a trace: waits up to `timeout` for the first packet of a flow from
        `src` to `dst:port` to arrive over the tunnel and returns what happened to it and to its reply.
        `matches: [{"dst", "port"}, ...]` in place of `dst` and `port` waits for the first flow to any of
        them: the endpoints of a Service on this node, one of which the source node's DNAT may choose."""
        try:
            protocol = PROTOCOL_NUMBERS[(params.get("protocol") or "TCP").upper()]
            src = ip_to_int(params["src"])
            targets = params["matches"] if "matches" in params else [params]
            matches = frozenset((protocol, src, ip_to_int(t["dst"]), int(t["port"])) for t in targets)
        except (KeyError, ValueError, TypeError) as exc:
            raise RpcError(
                "BadRequest", f"trace.watch needs protocol, src, and either dst and port or matches: {exc}"
            ) from None
        stages = await self.dataplane.traces.watch(matches, float(params.get("timeout") or 3.0))
        return [stage.as_dict() for stage in stages]

    async def capture(self, params: dict) -> AsyncIterator[dict]:
        count = int(params.get("count") or 0)
        seconds = float(params.get("seconds") or 0)
        tunnel = self.dataplane.tunnel
        try:
            queue = encryption.subscribe(tunnel, bool(params.get("decrypted")))
        except ValueError as exc:
            raise RpcError("BadRequest", str(exc)) from None
        deadline = time.monotonic() + seconds if seconds else None
        sent = 0
        try:
            while not count or sent < count:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    return
                sent += 1
                yield item
        finally:
            tunnel.unsubscribe(queue)

    # ---- faults ----------------------------------------------------------------------------------

    async def partition(self, params: dict) -> dict:
        peer = params.get("peer")
        if not isinstance(peer, str):
            raise RpcError("BadRequest", "faults.partition: peer is the address of a node")
        return {"partitioned": self.dataplane.partition(peer, bool(params.get("drop", True)))}

    async def partitions(self, params: Any) -> dict:
        """The peers `faults.partition` cut off, without changing them (for `podnet partition --list`)."""
        return {"partitioned": sorted(self.dataplane.tunnel.partitioned)}
