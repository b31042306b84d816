"""The asyncio side every controller shares: the controller skeleton (informers →
handlers → a bounded-frequency runner (podnet/runner.py) → API writes) and the settings read from the API server's config."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from podnet.apiserver.config import ApiServerConfig

from podnet.client import ApiClient, ApiError, Informer
from podnet.runner import BoundedFrequencyRunner

log = logging.getLogger(__name__)

MAX_RETRY = 5.0  # the longest wait before a failed reconcile is tried again


def now_timestamp() -> str:
    """Wall-clock time as the API writes it in conditions and taints."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Settings:
    service_cidr: str = "10.96.0.0/12"
    cluster_cidr: str = "10.244.0.0/16"
    node_cidr_prefix: int = 24
    node_grace_period: float = 40.0
    pod_eviction_timeout: float = 300.0
    orphaned_pod_quarantine: float = 40.0
    api_address: str = "127.0.0.1"
    api_port: int = 6443
    root_ca_file: str = ""  # the CA published as kube-root-ca.crt: the one the serving certificate chains to

    @classmethod
    def from_config(cls, config: ApiServerConfig, server_url: str) -> Settings:
        """What the controllers read of the API server's config. The `kubernetes` Service's endpoint is
        the advertised address and port when the config names them, else the address the controllers'
        own client reaches the API server at (right even when the server bound port 0)."""
        url = urlsplit(server_url)
        address = config.advertise_address or url.hostname or "127.0.0.1"
        try:
            ipaddress.IPv4Address(address)
        except ValueError:  # a host name in the URL ("localhost")
            address = "127.0.0.1"
        port = config.advertise_port or url.port or (443 if url.scheme == "https" else 80)
        return cls(
            service_cidr=config.service_cidr,
            cluster_cidr=config.cluster_cidr,
            node_cidr_prefix=config.node_cidr_mask_size,
            node_grace_period=config.node_grace_period,
            pod_eviction_timeout=config.eviction_timeout,
            orphaned_pod_quarantine=config.orphaned_pod_quarantine,
            api_address=address,
            api_port=port,
            root_ca_file=config.root_ca,
        )


class Controller:
    """Informers → handlers → a coalesced reconcile. Subclasses name the informers they read (`needs`),
    mark work in `on_event` and do it in `reconcile`; they start only once those informers have synced."""

    name = "controller"
    needs: tuple[str, ...] = ()
    min_interval = 0.05
    max_interval = 30.0

    def __init__(self, client: ApiClient, informers: dict[str, Informer], settings: Settings):
        self.client = client
        self.informers = informers
        self.settings = settings
        self.log = logging.getLogger(f"{__name__}.{self.name}")
        self.runner = BoundedFrequencyRunner(self.name, self.reconcile, min_interval=self.min_interval,
                                             max_interval=self.max_interval, retry=self.min_interval,
                                             max_retry=MAX_RETRY)
        for kind in self.needs:
            informers[kind].add_handler(lambda event, old, new, kind=kind: self.on_event(kind, event, old, new))

    def store(self, kind: str) -> dict[str, dict]:
        return self.informers[kind].store

    def on_event(self, kind: str, event: str, old: dict | None, new: dict | None) -> None:
        self.runner.trigger()

    async def run(self) -> None:
        await asyncio.gather(*(self.informers[kind].wait_synced() for kind in self.needs))
        self.log.info("%s: caches synced, starting", self.name)
        self.runner.trigger()
        await self.runner.run()

    async def reconcile(self) -> None:
        raise NotImplementedError

    async def write(self, what: str, call: Awaitable[dict]) -> dict | None:
        """One API write. A conflict, an object that already exists or is already gone means the cache is
        behind: the watch event on its way triggers another pass, so it is not an error. An invalid request
        waits for the periodic resync; an unreachable or failing server gets another pass shortly."""
        try:
            return await call
        except ApiError as exc:
            if exc.code in (404, 409):
                self.log.debug("%s: %s: %s", self.name, what, exc)
            else:
                self.log.warning("%s: %s failed: %s", self.name, what, exc)
                if exc.code not in (400, 403, 422):
                    asyncio.get_running_loop().call_later(1.0, self.runner.trigger)
            return None
