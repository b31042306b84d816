"""A packet's journey: `trace` sends one probe from a pod and returns every stage the pipeline reports on
the way (the source node's half, then the destination node's, then the rest of the source's: the reply
and the result), as `podnet trace` prints it and the web UI draws it.

The destination node's half comes from a watch started there before the probe. For a Service, whose
endpoint the source node picks at random, every other node with a ready endpoint watches, and the one
the packet reached tells its half.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from podnet.client import ApiClient, ApiError
from podnet.observe import ObserveError
from podnet.observe.policy import SocketFor
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcClient, call_once

# The stages after which a packet is on the wire to another node, or gone; what carries the tunnel's
# datagram (WireGuard's encryption) may add its stage after the encapsulation's.
CROSSING_STAGES = ("vxlan-encap", "fou-encap", "drop")
CARRIER_STAGES = ("wireguard-encrypt",)


async def running_pod(client: ApiClient, namespace: str, name: str) -> dict:
    """The pod, which must be Running on a node."""
    try:
        pod = await client.get("pods", name, namespace)
    except ApiError as exc:
        if exc.code == 404:
            raise ObserveError(f'Error from server (NotFound): pods "{name}" not found in namespace {namespace}') from None
        raise
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    node = (pod.get("spec") or {}).get("nodeName")
    if phase != "Running" or not node:
        where = f" on {node}" if node else ", not scheduled"
        raise ObserveError(f"error: pod {namespace}/{name} is not Running (phase {phase}{where})")
    return pod


def split_pod(text: str, namespace: str) -> tuple[str, str]:
    """"ns/name" or "name" (in `namespace`) -> (namespace, name)."""
    ns, _, name = text.rpartition("/")
    return (ns or namespace), name


async def resolve_destination(client: ApiClient, text: str, namespace: str) -> tuple[str, str | None]:
    """(IP, node of the pod or None): an IP as given, else a pod's IP, else a service's ClusterIP."""
    try:
        ipaddress.IPv4Address(text)
        return text, None
    except ValueError:
        pass
    ns, name = split_pod(text, namespace)
    try:
        pod = await client.get("pods", name, ns)
        if ip := (pod.get("status") or {}).get("podIP"):
            return ip, (pod.get("spec") or {}).get("nodeName")
    except ApiError as exc:
        if exc.code != 404:
            raise
    try:
        service = await client.get("services", name, ns)
    except ApiError as exc:
        if exc.code == 404:
            raise ObserveError(f"error: {text} is neither an IP address, a pod nor a service in namespace {ns}") from None
        raise
    return service["spec"]["clusterIP"], None


async def _visible(client: ApiClient, kind: str, namespace: str, **selectors: str) -> list[dict]:
    """The objects of `kind` in every namespace, or in `namespace` alone for a user whose role covers no
    more (an `edit:<namespace>` token)."""
    try:
        listed = await client.list(kind, **selectors)
    except ApiError as exc:
        if exc.code != 403:
            raise
        listed = await client.list(kind, namespace, **selectors)
    return listed.get("items") or []


async def _node_of_ip(client: ApiClient, ip: str, namespace: str) -> str | None:
    """The node whose pod has `ip`, if any: for the destination half of a trace."""
    for pod in await _visible(client, "pods", namespace, field_selector=f"status.podIP={ip}"):
        if (pod.get("status") or {}).get("podIP") == ip:
            return (pod.get("spec") or {}).get("nodeName")
    return None


async def _service_at(client: ApiClient, ip: str, namespace: str) -> dict | None:
    """The Service whose ClusterIP is `ip`, if any."""
    for service in await _visible(client, "services", namespace):
        spec = service.get("spec") or {}
        if ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]):
            return service
    return None


def _service_port(service: dict, port: str, protocol: str) -> dict | None:
    """The port of the Service that a trace names, by number or by name."""
    for service_port in (service.get("spec") or {}).get("ports") or []:
        named = (str(service_port.get("port")), service_port.get("name"))
        if service_port.get("protocol", "TCP") == protocol and port in named:
            return service_port
    return None


async def _endpoints_by_node(client: ApiClient, service: dict, service_port: dict) -> dict[str, list[dict]]:
    """node -> `{"dst", "port"}` of each ready endpoint of the Service port on that node: where the source
    node's DNAT may send the packet. As kube-proxy does, the slices' port of the same name and protocol
    gives the number (a named targetPort arrives resolved per pod), and an endpoint counts unless its
    `ready` condition is false."""
    meta = service["metadata"]
    slices = await client.list(
        "endpointslices", meta["namespace"], label_selector=f"kubernetes.io/service-name={meta['name']}"
    )
    name, protocol = service_port.get("name") or "", service_port.get("protocol", "TCP")
    by_node: dict[str, list[dict]] = {}
    for endpoint_slice in slices.get("items") or []:
        numbers = [
            p["port"] for p in endpoint_slice.get("ports") or []
            if (p.get("name") or "") == name and (p.get("protocol") or "TCP") == protocol and p.get("port")
        ]
        if not numbers:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            node = endpoint.get("nodeName")
            if not node or (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                by_node.setdefault(node, []).append({"dst": address, "port": numbers[0]})
    return by_node


async def _far_half(watches: dict[asyncio.Task, str], grace: float = 1.0) -> tuple[list[dict], str | None]:
    """The stages of the watch that saw the flow arrive, and its node, once the local half is over. By then the packet
    has crossed (its answer came back, or the probe gave up long after it left), so that watch returns
    within moments; the others would only wait out their timeout with nothing, and are not waited for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    pending = set(watches)
    while pending:
        done, pending = await asyncio.wait(
            pending, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            break
        for task in done:
            if stages := task.result():
                return stages, watches[task]
    return [], None


@dataclass(frozen=True)
class Journey:
    """One probe's path: from `src` ("ns/name" on `src_node`) to `ip`:`port`, the stages in the order
    they happened, and the node of the far half (None when the packet stayed on one node or the far
    node did not report)."""

    src: str
    src_node: str
    ip: str
    port: int
    protocol: str
    local: list[dict]
    far: list[dict]
    far_node: str | None

    @property
    def split(self) -> int:
        """How many of the local stages come before the packet leaves the node."""
        split = next((i + 1 for i, s in enumerate(self.local) if s["stage"] in CROSSING_STAGES), len(self.local))
        while split < len(self.local) and self.local[split]["stage"] in CARRIER_STAGES:
            split += 1
        return split

    @property
    def stages(self) -> list[dict]:
        return [*self.local[:self.split], *self.far, *self.local[self.split:]]

    @property
    def answered(self) -> bool:
        return bool(self.local) and self.local[-1]["stage"] == "result" and self.local[-1]["detail"].startswith("answered")


async def trace(
    client: ApiClient, socket_for: SocketFor, src: str, destination: str, port_text: str, protocol: str = "TCP",
    *, namespace: str = "default", timeout: float = 2.0, watch_far_half: bool = True,
) -> Journey:
    """Probe from pod `src` ("ns/name" or a name in `namespace`) to `destination` (an IP, a pod or a
    Service) on `port_text` (a number, or a Service port's name), recording every stage."""
    namespace_src, name = split_pod(src, namespace)
    obj = await running_pod(client, namespace_src, name)
    ip, dst_node = await resolve_destination(client, destination, namespace)
    src_ip = obj["status"]["podIP"]
    src_node = obj["spec"]["nodeName"]
    dst_node = dst_node or await _node_of_ip(client, ip, namespace)
    service = None if dst_node else await _service_at(client, ip, namespace)
    service_port = _service_port(service, port_text, protocol) if service else None
    if service_port:
        port = service_port["port"]
        targets = await _endpoints_by_node(client, service, service_port)
    elif port_text.isascii() and port_text.isdigit():
        port = int(port_text)
        targets = {dst_node: [{"dst": ip, "port": port}]} if dst_node else {}
    else:
        raise ObserveError(f"error: {port_text!r} is neither a port number nor a port of a Service at {ip}")
    targets.pop(src_node, None)  # the local half shows what happens on the source node
    params = {"src": f"{namespace_src}/{name}", "dst": ip, "port": port, "protocol": protocol, "timeout": timeout}
    watchers: list[RpcClient] = []
    watches: dict[asyncio.Task, str] = {}
    try:
        for node, matches in targets.items():
            path = socket_for(node)
            if not watch_far_half or not Path(path).exists():
                continue
            watchers.append(watcher := await RpcClient(path).connect())
            watch = {"src": src_ip, "matches": matches, "protocol": protocol, "timeout": timeout}
            watches[asyncio.create_task(watcher.call(AgentMethod.TRACE_WATCH, watch, timeout=timeout + 10))] = node
            # The agent starts calls in the order they arrive: once it has answered this ping, the
            # watch is in place, before the probe's first packet leaves.
            await watcher.call("ping")
        local = await call_once(socket_for(src_node), AgentMethod.TRACE, params, timeout=timeout + 30)
        far, far_node = await _far_half(watches)
    finally:
        for task in watches:
            task.cancel()
        for watcher in watchers:
            await watcher.close()
    return Journey(f"{namespace_src}/{name}", src_node, ip, port, protocol, local, far, far_node)
