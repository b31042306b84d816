"""The cluster DNS process: informers on Services, EndpointSlices and Pods feed the records; the UDP/TCP
server answers from them; the process registers a pod of its own in kube-system that the kube-dns Service
selects, whose ports its node agent relays to this process (podnet/api/clusterdns.py), so that clients
reach it as they reach CoreDNS: at a pod IP on port 53."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections.abc import Callable

from podnet.dns.config import DnsConfig
from podnet.dns.records import Records
from podnet.dns.server import DnsServer
from prometheus_client import CollectorRegistry

import podnet
from podnet.api import clusterdns, manifests
from podnet.client import ApiClient, ApiError, Informer
from podnet.process import start_status_server

log = logging.getLogger(__name__)

# The pod's metrics and readiness port, CoreDNS's; relayed to the process's real --metrics-port.
METRICS_PORT = 9153
# How often the registration looks at its pod even when no deletion was seen.
RECHECK_SECONDS = 30.0
# The label that tells one replica's pods from another's.
REPLICA_LABEL = "podnet.io/dns-replica"


def _handler(records: Records, apply: Callable[[dict], None], remove: Callable[[dict], None]):
    def handle(event_type: str, old: dict | None, new: dict | None) -> None:
        if event_type == "DELETED":
            remove(old or {})
        elif new is not None:
            apply(new)
        # CoreDNS's SOA serial is the time of the last change, in seconds.
        records.set_serial(int(time.time()))

    return handle


def load_objects(records: Records, text: str, source: str) -> None:
    """Feeds the records from manifests instead of an API server."""
    apply = {"Service": records.set_service, "EndpointSlice": records.set_endpoint_slice, "Pod": records.set_pod}
    for obj in manifests.load(text, source):
        if obj.get("kind") in apply:
            apply[obj["kind"]](obj)


def replica_name(config: DnsConfig, port: int) -> str:
    """This replica's name (a label value on its pods): given, or where the process serves, so that
    replicas differ."""
    return config.replica or f"{config.address.replace(':', '-')}-{port}"


def dns_pod(config: DnsConfig, port: int, metrics_port: int | None) -> dict:
    """The pod this replica is reached as: CoreDNS's labels, ports and readiness probe, its ports relayed by
    the node agent that runs it to this process's real ones (`podnet.io/relay`). Named as a ReplicaSet names
    its pods (a fresh suffix for each), so that a replacement need not wait for a terminating one to go."""
    replica = replica_name(config, port)
    relay = {53: (config.address, port)}
    ports = [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
             {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]
    container: dict = {"name": "coredns", "image": f"podnet/dns:{podnet.__version__}", "ports": ports}
    if metrics_port is not None:
        relay[METRICS_PORT] = (config.address, metrics_port)
        ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
        # /healthz answers 200 once the caches have synced: the pod is Ready when the server answers.
        container["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": METRICS_PORT, "scheme": "HTTP"},
                                       "periodSeconds": 1, "timeoutSeconds": 1, "successThreshold": 1,
                                       "failureThreshold": 3}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": f"coredns-{replica.replace('.', '-').replace('_', '-').lower()}-",
                     "namespace": config.service_namespace,
                     "labels": {**clusterdns.POD_LABELS, REPLICA_LABEL: replica},
                     "annotations": {clusterdns.RELAY_ANNOTATION: clusterdns.format_relay(relay)}},
        "spec": {"containers": [container], "dnsPolicy": "Default"},
    }


def _relay_text(pod: dict) -> str | None:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(clusterdns.RELAY_ANNOTATION)


def pod_changes(pods: list[dict], wanted: dict) -> tuple[bool, list[str]]:
    """Given this replica's pods: whether the wanted pod must be created, and which pods to delete: those
    that relay elsewhere (an earlier run on other ports; a pod's relay is read once, when its node agent adds
    it) and all but the oldest of those that relay here. Terminating pods are left to finish and do not count.
    Pure."""
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    relaying_here = sorted((p for p in live if _relay_text(p) == _relay_text(wanted)),
                           key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    stale = [p for p in live if _relay_text(p) != _relay_text(wanted)] + relaying_here[1:]
    return not relaying_here, sorted(p["metadata"]["name"] for p in stale)


async def _ensure(client: ApiClient, obj: dict) -> None:
    """Creates `obj` unless it exists."""
    try:
        await client.create(obj)
    except ApiError as exc:
        if exc.code != 409:
            raise


def _replica_selector(pod: dict) -> str:
    return f"{REPLICA_LABEL}={pod['metadata']['labels'][REPLICA_LABEL]}"


async def _ensure_pod(client: ApiClient, pod: dict) -> None:
    namespace = pod["metadata"]["namespace"]
    listed = await client.list("pods", namespace, label_selector=_replica_selector(pod))
    create, stale = pod_changes(listed.get("items") or [], pod)
    for name in stale:
        log.info("deleting pod %s/%s: it relays elsewhere, or another relays here", namespace, name)
        with contextlib.suppress(ApiError):
            await client.delete("pods", name, namespace)
    if create:
        created = await client.create(pod)
        log.info("registered pod %s/%s", namespace, created["metadata"]["name"])


async def register(client: ApiClient, config: DnsConfig, pod: dict, recheck: asyncio.Event) -> None:
    """Keeps one pod of this replica registered, as a ReplicaSet of one would: the kube-system namespace and
    the kube-dns Service when missing (an API server without its controllers), then the pod, again whenever
    `recheck` is set (a pod of the replica was deleted or is terminating) and every RECHECK_SECONDS. Retries
    failures with backoff; never ends the process."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": config.service_namespace}}
    backoff = 0.2
    while True:
        recheck.clear()
        try:
            await _ensure(client, namespace)
            await _ensure(client, clusterdns.kube_dns_service(config.cluster_ip))
            await _ensure_pod(client, pod)
            backoff = 0.2
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recheck.wait(), RECHECK_SECONDS)
            continue
        except ApiError as exc:
            log.warning("registering with the API server failed: %s; retrying in %.1fs", exc, backoff)
        except Exception:
            # Answering queries matters more than being registered: never let this end the process.
            log.exception("registering with the API server failed; retrying in %.1fs", backoff)
        await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
        backoff = min(backoff * 2, 5.0)


def _watch_own_pods(pod: dict, recheck: asyncio.Event):
    """A Pod informer handler that sets `recheck` when a pod of this replica is deleted or starts
    terminating."""
    replica = pod["metadata"]["labels"][REPLICA_LABEL]

    def handle(event_type: str, old: dict | None, new: dict | None) -> None:
        meta = (new or old or {}).get("metadata") or {}
        if (meta.get("labels") or {}).get(REPLICA_LABEL) == replica and (
                event_type == "DELETED" or meta.get("deletionTimestamp")):
            recheck.set()

    return handle


async def deregister(client: ApiClient, pod: dict) -> None:
    """A graceful stop deletes the replica's pods, as a replica scaled away leaves the Service's endpoints."""
    namespace = pod["metadata"]["namespace"]
    with contextlib.suppress(ApiError, asyncio.TimeoutError):
        async with asyncio.timeout(2.0):
            listed = await client.list("pods", namespace, label_selector=_replica_selector(pod))
            for item in listed.get("items") or []:
                await client.delete("pods", item["metadata"]["name"], namespace)


async def serve(config: DnsConfig, *, shutdown_trigger: asyncio.Event | None = None) -> None:
    shutdown = shutdown_trigger or asyncio.Event()
    records = Records(config.zone, config.ttl, serial=int(time.time()))
    informers: dict[str, Informer] = {}
    client: ApiClient | None = None
    if config.objects_file is not None:
        load_objects(records, config.objects_file.read_text(), str(config.objects_file))
    elif config.server:
        client = ApiClient(config.server, config.token, tls=config.tls, fallbacks=config.fallbacks)
        for kind, apply, remove in (
            ("Service", records.set_service, records.delete_service),
            ("EndpointSlice", records.set_endpoint_slice, records.delete_endpoint_slice),
            ("Pod", records.set_pod, records.delete_pod),
        ):
            informer = Informer(client, kind)
            informer.add_handler(_handler(records, apply, remove))
            informers[kind] = informer
    else:
        raise ValueError("the DNS server needs --server or an objects file to take its records from")

    def synced() -> bool:
        return all(informer.synced for informer in informers.values())

    registering = config.register
    if registering and ipaddress.ip_address(config.address).is_unspecified:
        log.warning("not registering a kube-dns pod: %s is not an address its node can relay to",
                    config.address)
        registering = False
    server = DnsServer(records, synced, list(config.upstreams), forward_timeout=config.forward_timeout)
    registry = CollectorRegistry()
    registry.register(server.counters.collector(records, synced))
    async with contextlib.AsyncExitStack() as stack:
        if client is not None:
            stack.push_async_callback(client.close)
        port = await server.start(config.address, config.port)
        stack.push_async_callback(server.close)
        metrics_port = None
        if config.metrics_port is not None:
            runner, metrics_port = await start_status_server(config.address, config.metrics_port, synced, registry)
            stack.push_async_callback(runner.cleanup)
        log.info("serving DNS", extra={"fields": {
            "address": config.address, "port": port, "metrics_port": metrics_port, "zone": records.zone,
            "upstreams": [f"{h}:{p}" for h, p in config.upstreams]}})
        registering = registering and client is not None
        pod, recheck = dns_pod(config, port, metrics_port), asyncio.Event()
        if registering:
            informers["Pod"].add_handler(_watch_own_pods(pod, recheck))
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(informer.run()) for informer in informers.values()]
            if registering:
                tasks.append(group.create_task(register(client, config, pod, recheck)))
            await shutdown.wait()
            for task in tasks:
                task.cancel()
        if registering:
            await deregister(client, pod)
        log.info("stopped")

