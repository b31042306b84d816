"""The cluster DNS process: informers on Services, EndpointSlices and Pods feed the records; the UDP/TCP
server answers from them; the process publishes itself as the endpoint of the kube-dns Service."""

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

from podnet.api import manifests
from podnet.client import ApiClient, ApiError, Informer
from podnet.process import start_status_server

log = logging.getLogger(__name__)

MANAGED_BY = "podnet-dns"
SLICE_NAME = "kube-dns-podnet"


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


def registration_objects(config: DnsConfig, port: int) -> list[dict]:
    """The kube-dns Service (only created when missing), its Endpoints and our EndpointSlice."""
    ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": config.service_name, "namespace": config.service_namespace,
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": config.cluster_ip, "type": "ClusterIP",
                 "ports": [{"name": n, "port": 53, "protocol": p, "targetPort": port} for n, p in ports]},
    }
    endpoints = {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": config.service_name, "namespace": config.service_namespace},
        "subsets": [{"addresses": [{"ip": config.address}],
                     "ports": [{"name": n, "port": port, "protocol": p} for n, p in ports]}],
    }
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": SLICE_NAME, "namespace": config.service_namespace,
                     "labels": {"kubernetes.io/service-name": config.service_name,
                                "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
        "addressType": "IPv6" if ":" in config.address else "IPv4",
        "endpoints": [{"addresses": [config.address], "conditions": {"ready": True}}],
        "ports": [{"name": n, "port": port, "protocol": p} for n, p in ports],
    }
    return [service, endpoints, endpoint_slice]


async def _upsert(client: ApiClient, obj: dict, *, replace: bool = True) -> None:
    meta = obj["metadata"]
    try:
        current = await client.get(obj["kind"], meta["name"], meta.get("namespace"))
    except ApiError as exc:
        if exc.code != 404:
            raise
        await client.create(obj)
        return
    if replace:
        updated = {**obj, "metadata": {**meta, "resourceVersion": current["metadata"].get("resourceVersion")}}
        await client.replace(updated)


async def register(client: ApiClient, config: DnsConfig, port: int) -> None:
    """Retries with backoff until the kube-dns Service points at this server."""
    service, endpoints, endpoint_slice = registration_objects(config, port)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": config.service_namespace}}
    backoff = 0.2
    while True:
        try:
            await _upsert(client, namespace, replace=False)
            await _upsert(client, service, replace=False)
            await _upsert(client, endpoints)
            await _upsert(client, endpoint_slice)
            log.info("registered as the endpoint of %s/%s", config.service_namespace, config.service_name,
                     extra={"fields": {"address": config.address, "port": port}})
            return
        except ApiError as exc:
            log.warning("registering with the API server failed: %s; retrying in %.1fs", exc, backoff)
        except Exception:
            # Answering queries matters more than being registered: never let this end the process.
            log.exception("registering with the API server failed; retrying in %.1fs", backoff)
        await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
        backoff = min(backoff * 2, 5.0)


async def deregister(client: ApiClient, config: DnsConfig) -> None:
    for kind, name in (("EndpointSlice", SLICE_NAME), ("Endpoints", config.service_name)):
        with contextlib.suppress(ApiError, asyncio.TimeoutError):
            await asyncio.wait_for(client.delete(kind, name, config.service_namespace), 2.0)


async def serve(config: DnsConfig, *, shutdown_trigger: asyncio.Event | None = None) -> None:
    shutdown = shutdown_trigger or asyncio.Event()
    records = Records(config.zone, config.ttl, serial=int(time.time()))
    informers: list[Informer] = []
    client: ApiClient | None = None
    if config.objects_file is not None:
        load_objects(records, config.objects_file.read_text(), str(config.objects_file))
    elif config.server:
        client = ApiClient(config.server, config.token, tls=config.tls)
        for kind, apply, remove in (
            ("Service", records.set_service, records.delete_service),
            ("EndpointSlice", records.set_endpoint_slice, records.delete_endpoint_slice),
            ("Pod", records.set_pod, records.delete_pod),
        ):
            informer = Informer(client, kind)
            informer.add_handler(_handler(records, apply, remove))
            informers.append(informer)
    else:
        raise ValueError("the DNS server needs --server or an objects file to take its records from")

    def synced() -> bool:
        return all(informer.synced for informer in informers)

    registering = config.register
    if registering and ipaddress.ip_address(config.address).is_unspecified:
        log.warning("not registering as the kube-dns endpoint: %s is not an address clients can reach",
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
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(informer.run()) for informer in informers]
            if client is not None and registering:
                tasks.append(group.create_task(register(client, config, port)))
            await shutdown.wait()
            for task in tasks:
                task.cancel()
        if client is not None and registering:
            await deregister(client, config)
        log.info("stopped")

