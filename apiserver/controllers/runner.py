"""The asyncio side every controller shares: a coalescing runner, the controller skeleton (informers →
handlers → coalesced reconcile → API writes) and the settings read from the API server's config."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from podnet.client import ApiClient, ApiError, Informer

log = logging.getLogger(__name__)


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
    def from_config(cls, config: object, server_url: str) -> Settings:
        """Reads the API server's config by name, with defaults. The `kubernetes` Service's endpoint is
        the advertised address and port when the config names them, else the address the controllers'
        own client reaches the API server at (right even when the server bound port 0)."""
        url = urlsplit(server_url)
        address = getattr(config, "api_advertise_address", None) or url.hostname or "127.0.0.1"
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            address = "127.0.0.1"
        port = getattr(config, "api_port", None) or url.port or (443 if url.scheme == "https" else 80)
        default = cls()
        return cls(
            service_cidr=getattr(config, "service_cidr", default.service_cidr),
            cluster_cidr=getattr(config, "cluster_cidr", default.cluster_cidr),
            node_cidr_prefix=int(getattr(config, "node_cidr_prefix", default.node_cidr_prefix)),
            node_grace_period=float(getattr(config, "node_grace_period", default.node_grace_period)),
            pod_eviction_timeout=float(
                getattr(config, "pod_eviction_timeout", getattr(config, "eviction_timeout", default.pod_eviction_timeout))
            ),
            orphaned_pod_quarantine=float(getattr(config, "orphaned_pod_quarantine", default.orphaned_pod_quarantine)),
            api_address=address,
            api_port=int(port),
            root_ca_file=str(getattr(config, "root_ca", "")),
        )


class CoalescingRunner:
    """Runs `reconcile` after `trigger()`, never sooner than `min_interval` after its previous run (a burst of
    triggers costs one run), and at least every `max_interval` (a periodic resync). A failed run is retried
    with backoff. As Kubernetes' BoundedFrequencyRunner."""

    def __init__(
        self,
        name: str,
        reconcile: Callable[[], Awaitable[None]],
        *,
        min_interval: float = 0.05,
        max_interval: float = 30.0,
        max_backoff: float = 5.0,
    ):
        self.name = name
        self._reconcile = reconcile
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()
        self.runs = 0

    def trigger(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last = float("-inf")
        backoff = self.min_interval
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.max_interval)
            except TimeoutError:
                pass
            delay = last + self.min_interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._wake.clear()
            last = loop.time()
            self.runs += 1
            try:
                await self._reconcile()
                backoff = self.min_interval
            except Exception:
                log.exception("%s: reconcile failed; retrying in %.1fs", self.name, backoff)
                await asyncio.sleep(backoff)
                backoff = min(max(backoff * 2, 0.1), self.max_backoff)
                self._wake.set()


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
        self.runner = CoalescingRunner(self.name, self.reconcile, min_interval=self.min_interval,
                                       max_interval=self.max_interval)
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
