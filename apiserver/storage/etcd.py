"""The Store protocol on a real etcd cluster, through aetcd.

Writes are etcd transactions guarded by the key's create revision (create) or mod revision (update,
delete), so a write lands only on the state it was decided on, and the failure branch reads the key
back to say why. Reads at a revision and paged reads use the Range RPC directly (aetcd's helpers take
no revision or limit). A watch is its own gRPC Watch stream (aetcd's shared watcher drops progress
notifications): created with prev_kv, so DELETE events carry the deleted value, and progress_notify, so
an idle watch yields Progress at the etcd server's --experimental-watch-progress-notify-interval.

With `tls` (kube-apiserver's --etcd-cafile, --etcd-certfile, --etcd-keyfile) every channel is TLS: etcd's
certificate must chain to the given CA and name the endpoint's address, and the store presents its client
certificate, which an etcd run with --client-cert-auth demands.

Outages: gRPC reconnects each channel by itself with a short backoff; until then every call raises
Unavailable (after at most `request_timeout` seconds, in attempts of half that), and a watch raises Unavailable so that its caller
resumes from the last revision it saw. With several endpoints, a call that finds one unavailable moves
the store to the next one.

Elections: while a cluster elects a new leader its members answer UNAVAILABLE ("etcdserver: leader
changed", "no leader", a proposal dropped or timed out, a connection to the old leader lost). Such a call
is made again, after _ELECTION_DELAYS, on the next member: a read as it is; a write too, since each is a
guarded transaction whose second attempt cannot apply twice. Only its answer needs care: when the first
attempt did land, the second finds its own guard failed, so a refused retry looks for the first one's
effect (_landed_put, _landed_delete) and answers with that instead. Another writer storing the very same
bytes meanwhile would be taken for our own write, which leaves the key as this write asked.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import TypeVar

import aetcd
import grpc
from aetcd import rpc, watcher
from podnet.apiserver.storage.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    FutureRevision,
    Guard,
    KeyValue,
    NotFound,
    OpensAsContext,
    Progress,
    StorageError,
    Unavailable,
    WatchEvent,
)
from podnet.apiserver.storage.keyrange import prefix_end

# gRPC's default reconnect backoff grows to two minutes; a restarted etcd must be found again at once.
T = TypeVar("T")

_CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # A peer that vanished without closing the connection is noticed by these pings.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}
# What etcd answers for a read below the compacted revision, and for a compaction to an older one.
_COMPACTED = "required revision has been compacted"
_FUTURE = "required revision is a future revision"
_UNAVAILABLE_CODES = (rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED)
# gRPC's words for a call that found no connection to make: nothing was sent.
_NOT_CONNECTED = "failed to connect to all addresses"
# What members answer (with gRPC's UNKNOWN) while they have no leader: a proposal a follower cannot forward,
# and a request that found no quorum within etcd's own deadline.
_NO_LEADER_ANSWERS = ("raft proposal dropped", "context deadline exceeded", "etcdserver: request timed out")
# The pauses before each new attempt of a call that met an election, within the request timeout: etcd
# elects within about two election timeouts (a second each by default).
_ELECTION_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.2, 1.2, 1.2)


def _failover(landed: Callable[..., Awaitable[object]] | None = None) -> Callable[[Callable[..., Awaitable[T]]],
                                                                                  Callable[..., Awaitable[T]]]:
    """Runs a store call again on the next endpoint when the one it tried could not be connected to, once
    per endpoint: a dead member costs a request nothing while another member answers. A call that met an
    election or timed out (_InElection) is made again after a pause while the request timeout lasts (see
    the module docstring); then a refusal of a write is checked against `landed(self, *args)`: the first
    attempt's effect, if it had one, is the answer."""

    def wrap(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(method)
        async def call(self: EtcdStore, *args: object, **kwargs: object) -> T:
            unreachable = 0
            delays = iter(_ELECTION_DELAYS)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.request_timeout
            uncertain = False  # an earlier attempt may have been applied
            while True:
                try:
                    return await method(self, *args, **kwargs)
                except _Unreachable:
                    unreachable += 1
                    if unreachable >= len(self._clients):
                        raise
                except _InElection:
                    uncertain = True
                    delay = next(delays, None)
                    if delay is None or loop.time() + delay >= deadline:
                        raise
                    self.election_retries += 1
                    unreachable = 0  # a new round over every endpoint
                    await asyncio.sleep(delay)
                except (AlreadyExists, Conflict, NotFound):
                    if uncertain and landed is not None:
                        found = await landed(self, *args, **kwargs)
                        if found is not None:
                            return found  # type: ignore[return-value]
                    raise

        return call

    return wrap


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """PEM bytes: the CA etcd's certificate chains to, and the client certificate and key to present."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


class _TlsClient(aetcd.Client):
    """An aetcd client over a TLS channel with a client certificate. aetcd 1.0 opens only plaintext
    channels; this opens the channel itself and builds the same stubs over it (no etcd user/password:
    the certificate is the credential)."""

    def __init__(self, host: str, port: int, tls: EtcdTls, **options: object) -> None:
        super().__init__(host, port, **options)  # type: ignore[arg-type]
        self._credentials = grpc.ssl_channel_credentials(tls.ca_pem, tls.key_pem, tls.cert_pem)
        self._connecting = asyncio.Lock()

    async def connect(self) -> None:
        async with self._connecting:
            if self._connected.is_set():
                return
            self.channel = rpc.secure_channel(f"{self._host}:{self._port}", self._credentials,
                                              options=self._options.items())
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout)
            self._connected.set()


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member's own account of the cluster, as `etcdctl endpoint status` prints it; `error` when it
    did not answer."""

    endpoint: str
    member_id: int = 0
    leader_id: int = 0  # 0: it knows no leader
    raft_term: int = 0
    raft_index: int = 0
    version: str = ""
    error: str | None = None

    @property
    def is_leader(self) -> bool:
        return self.error is None and self.member_id != 0 and self.member_id == self.leader_id


def _key_range(prefix: str) -> tuple[bytes, bytes]:
    end = prefix_end(prefix)
    # An empty range end means "this key only" to etcd; b"\0" means "every key from here".
    return prefix.encode(), end.encode() if end is not None else b"\0"


def _key_value(kv: rpc.KeyValue | aetcd.KeyValue) -> KeyValue:
    return KeyValue(kv.key.decode(), kv.value, kv.create_revision, kv.mod_revision)


def _event(event: rpc.Event) -> WatchEvent:
    prev_value = event.prev_kv.value if event.HasField("prev_kv") else None
    key = event.kv.key.decode()
    if event.type == rpc.Event.DELETE:
        return WatchEvent("DELETE", key, event.kv.mod_revision, None, prev_value, False)
    created = event.kv.create_revision == event.kv.mod_revision
    return WatchEvent("PUT", key, event.kv.mod_revision, event.kv.value, prev_value, created)


def _rpc_error(error: BaseException) -> rpc.AioRpcError | None:
    """The gRPC error behind `error` (aetcd wraps it in a ClientError), if any."""
    while error is not None:
        if isinstance(error, rpc.AioRpcError):
            return error
        error = error.__cause__  # type: ignore[assignment]
    return None


class EtcdStore(OpensAsContext):
    """The Store protocol over etcd (see the module docstring). `endpoints`: "host:port" strings."""

    def __init__(self, endpoints: list[str], *, request_timeout: float = 5.0, tls: EtcdTls | None = None) -> None:
        if not endpoints:
            raise ValueError("an etcd store needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.request_timeout = request_timeout
        # One attempt's: a proposal a follower forwarded to a leader that died is lost, and only a timeout
        # ends the wait for it; half the request's leaves time to make it again once a leader is elected.
        self.attempt_timeout = request_timeout / 2
        self.tls = tls
        self._clients: list[aetcd.Client] = []
        self._active = 0
        self._closed = False
        self.election_retries = 0  # calls made again after an election's UNAVAILABLE

    # -- connection ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Prepares a client per endpoint; connects lazily, so this succeeds while etcd is down."""
        self._closed = False
        self._clients = []
        for endpoint in self.endpoints:
            host, _, port = endpoint.rpartition(":")
            options = {"timeout": self.attempt_timeout, "options": _CHANNEL_OPTIONS}
            self._clients.append(
                _TlsClient(host or "127.0.0.1", int(port), self.tls, **options) if self.tls is not None
                else aetcd.Client(host or "127.0.0.1", int(port), **options)  # type: ignore[arg-type]
            )

    async def close(self) -> None:
        self._closed = True
        for client in self._clients:
            await client.close()
        self._clients = []

    async def _client(self) -> aetcd.Client:
        if not self._clients:
            raise Unavailable("the etcd store is not open")
        client = self._clients[self._active]
        with self._errors(client):
            await client.connect()
        return client

    @contextmanager
    def _errors(self, client: aetcd.Client) -> Iterator[None]:
        """Turns gRPC and aetcd errors into storage errors; moves on to the next endpoint when down."""
        try:
            yield
        except StorageError:
            raise
        except Exception as e:
            grpc_error = _rpc_error(e)
            code = grpc_error.code() if grpc_error is not None else None
            details = (grpc_error.details() if grpc_error is not None else None) or str(e)
            if code in _UNAVAILABLE_CODES or isinstance(
                e, aetcd.ConnectionFailedError | aetcd.ConnectionTimeoutError | TimeoutError
            ):
                self._next_endpoint(client)
                # aetcd turns every UNAVAILABLE into ConnectionFailedError, a reset after the request went out
                # too: only gRPC's own words say that nothing was sent.
                never_sent = (code == rpc.StatusCode.UNAVAILABLE and _NOT_CONNECTED in details) or (
                    grpc_error is None and isinstance(e, aetcd.ConnectionFailedError))
                failure = _Unreachable if never_sent else _InElection
                raise failure(f"etcd {self._endpoint_of(client)}: {details}") from e
            if any(answer in details for answer in _NO_LEADER_ANSWERS):
                raise _InElection(f"etcd {self._endpoint_of(client)}: {details}") from e
            if _COMPACTED in details:
                raise _CompactedRead(details) from e
            if _FUTURE in details:
                raise _FutureRead(details) from e
            raise StorageError(f"etcd: {details}") from e

    def _next_endpoint(self, failed: aetcd.Client) -> None:
        if self._clients and self._clients[self._active] is failed:
            self._active = (self._active + 1) % len(self._clients)

    def _endpoint_of(self, client: aetcd.Client) -> str:
        return self.endpoints[self._clients.index(client)] if client in self._clients else "?"

    async def member_statuses(self) -> list[MemberStatus]:
        """Every endpoint's Status, each asked of that member itself (no failover: a member that does not
        answer is reported so)."""
        statuses = []
        for endpoint, client in zip(self.endpoints, self._clients, strict=True):
            try:
                with self._errors(client):
                    await client.connect()
                    answer = await client.maintenancestub.Status(rpc.StatusRequest(), timeout=self.attempt_timeout)
            except StorageError as e:
                statuses.append(MemberStatus(endpoint, error=str(e)))
                continue
            statuses.append(MemberStatus(endpoint, answer.header.member_id, answer.leader, answer.raftTerm,
                                         answer.raftIndex, answer.version))
        return statuses

    # -- reads ---------------------------------------------------------------------------------

    @_failover()
    async def current_revision(self) -> int:
        client = await self._client()
        with self._errors(client):
            response = await client.kvstub.Range(
                rpc.RangeRequest(key=b"\0", count_only=True), timeout=self.attempt_timeout
            )
        return response.header.revision

    @_failover()
    async def get(self, key: str) -> KeyValue | None:
        client = await self._client()
        with self._errors(client):
            found = await client.get(key.encode())
        return None if found is None else _key_value(found)

    @_failover()
    async def list(
        self, prefix: str, *, revision: int = 0, limit: int = 0, start_after: str | None = None
    ) -> tuple[list[KeyValue], int]:
        start, end = _key_range(prefix)
        if start_after is not None:
            # The smallest key after `start_after`.
            start = max(start, start_after.encode() + b"\0")
        client = await self._client()
        try:
            with self._errors(client):
                response = await client.kvstub.Range(
                    rpc.RangeRequest(key=start, range_end=end, revision=revision, limit=limit),
                    timeout=self.attempt_timeout,
                )
        except _CompactedRead as e:
            raise Compacted(revision, await self._compacted_revision(prefix, revision)) from e.__cause__
        except _FutureRead as e:
            raise FutureRevision(revision, await self.current_revision()) from e.__cause__
        return [_key_value(kv) for kv in response.kvs], revision or response.header.revision

    # -- writes --------------------------------------------------------------------------------

    async def _landed_put(self, key: str, value: bytes, *_: object, **__: object) -> int | None:
        """The revision of an earlier attempt's put of `value` to `key`, if it is what the key holds."""
        current = await self.get(key)
        return current.mod_revision if current is not None and current.value == value else None

    async def _landed_delete(self, key: str, expected_mod_revision: int = 0) -> tuple[int, KeyValue] | None:
        """What an earlier attempt's delete of `key` at `expected_mod_revision` answers, if the key is gone:
        the value it had at that revision (read from history, unless compacted away), at the current one."""
        if not expected_mod_revision or await self.get(key) is not None:
            return None
        client = await self._client()
        try:
            with self._errors(client):
                response = await client.kvstub.Range(rpc.RangeRequest(key=key.encode(), revision=expected_mod_revision),
                                                     timeout=self.attempt_timeout)
        except (_CompactedRead, _FutureRead):
            return None
        if not response.kvs or response.kvs[0].mod_revision != expected_mod_revision:
            return None
        return await self.current_revision(), _key_value(response.kvs[0])

    @_failover(_landed_put)
    async def create(self, key: str, value: bytes, *, beside: Guard | None = None) -> int:
        client = await self._client()
        encoded = key.encode()
        compare = [client.transactions.create(encoded) == 0]
        failure = []
        if beside is not None:
            compare.append(self._guard(client, beside.key.encode(), beside.mod_revision))
            failure = [client.transactions.get(encoded), client.transactions.get(beside.key.encode())]
        with self._errors(client):
            succeeded, responses = await client.transaction(compare=compare, success=[client.transactions.put(encoded, value)],
                                                            failure=failure)
        if not succeeded:
            if beside is None or responses[0]:
                raise AlreadyExists(key)
            raise self._refusal(beside.key, responses[1:])
        return responses[0].response_put.header.revision

    def _guard(self, client: aetcd.Client, key: bytes, expected_mod_revision: int) -> object:
        """The comparison a conditional write of `key` makes: this mod revision, or any live key."""
        if expected_mod_revision:
            return client.transactions.mod(key) == expected_mod_revision
        return client.transactions.create(key) > 0

    def _refusal(self, key: str, failure_responses: list) -> StorageError:
        """Why a guarded write failed, from the read its failure branch made."""
        found = failure_responses[0] if failure_responses else []
        if not found:
            return NotFound(key)
        _, current = found[0]
        return Conflict(key, _key_value(current))

    @_failover(_landed_put)
    async def update(self, key: str, value: bytes, expected_mod_revision: int) -> int:
        client = await self._client()
        encoded = key.encode()
        with self._errors(client):
            succeeded, responses = await client.transaction(
                compare=[self._guard(client, encoded, expected_mod_revision)],
                success=[client.transactions.put(encoded, value)],
                failure=[client.transactions.get(encoded)],
            )
        if not succeeded:
            raise self._refusal(key, responses)
        return responses[0].response_put.header.revision

    @_failover(_landed_delete)
    async def delete(self, key: str, expected_mod_revision: int = 0) -> tuple[int, KeyValue]:
        client = await self._client()
        encoded = key.encode()
        with self._errors(client):
            succeeded, responses = await client.transaction(
                compare=[self._guard(client, encoded, expected_mod_revision)],
                success=[client.transactions.delete(encoded, prev_kv=True)],
                failure=[client.transactions.get(encoded)],
            )
        if not succeeded:
            raise self._refusal(key, responses)
        deleted = responses[0].response_delete_range
        return deleted.header.revision, _key_value(deleted.prev_kvs[0])

    @_failover()
    async def compact(self, revision: int) -> None:
        client = await self._client()
        try:
            with self._errors(client):
                await client.compact(revision)
        except _CompactedRead:
            pass  # already compacted at least this far, as asked

    # -- watch ---------------------------------------------------------------------------------

    def watch(self, prefix: str, after_revision: int) -> AsyncIterator[WatchEvent | Progress]:
        return self._watch(prefix, after_revision)

    async def _watch_responses(
        self, client: aetcd.Client, prefix: str, start_revision: int
    ) -> AsyncIterator[rpc.WatchResponse]:
        """The responses of one Watch stream on `prefix` from `start_revision`; Unavailable if it breaks."""
        key, end = _key_range(prefix)
        call = rpc.WatchStub(client.channel).Watch()
        try:
            with self._errors(client):
                await call.write(
                    rpc.WatchRequest(
                        create_request=rpc.WatchCreateRequest(
                            key=key,
                            range_end=end,
                            start_revision=start_revision,
                            prev_kv=True,
                            progress_notify=True,
                        )
                    )
                )
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        break
                    yield response
        except StorageError:
            if self._closed:
                return  # the store closed under the watch
            raise
        finally:
            call.cancel()
        if not self._closed:
            raise Unavailable(f"etcd {self._endpoint_of(client)} ended the watch stream")

    async def _watch(self, prefix: str, after_revision: int) -> AsyncIterator[WatchEvent | Progress]:
        client = await self._client()
        async with aclosing(self._watch_responses(client, prefix, after_revision + 1)) as responses:
            async for response in responses:
                if response.compact_revision:
                    raise Compacted(after_revision + 1, response.compact_revision)
                if response.canceled:
                    raise StorageError(f"etcd canceled the watch: {response.cancel_reason}")
                if response.created:
                    continue
                if not response.events:
                    yield Progress(response.header.revision)
                    continue
                for event in response.events:
                    yield _event(event)

    async def _compacted_revision(self, prefix: str, revision: int) -> int:
        """etcd's compacted revision, which its compaction error does not carry: a watch from below it
        is told."""
        client = await self._client()
        async with aclosing(self._watch_responses(client, prefix, revision)) as responses:
            async for response in responses:
                if response.compact_revision:
                    return response.compact_revision
                if not response.created:
                    break
        return 0


class _Unreachable(Unavailable):
    """The endpoint could not be connected to: the request never reached etcd, so another member may take it."""


class _InElection(Unavailable):
    """The request reached etcd and came to nothing: UNAVAILABLE (an election, a member lost meanwhile) or
    no answer within the attempt's timeout (a proposal lost with its leader). Made again after a pause
    (see _failover)."""


class _CompactedRead(StorageError):
    """etcd refused a revision below its compacted one (mapped to Compacted by the caller)."""


class _FutureRead(StorageError):
    """etcd refused a revision above its current one (mapped to FutureRevision by the caller)."""
