"""The etcd part of `podnet status`: each member's own account (its id, the leader it knows, the raft term
and index), asked over TLS with the cluster's etcd client certificate, as `etcdctl endpoint status` does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from podnet.apiserver.storage.etcd import EtcdStore, EtcdTls, MemberStatus
from podnet.cluster import etcd_credentials
from podnet.cluster.supervisor import Process

CLIENT_URLS = "--listen-client-urls"


def members(processes: Sequence[Process]) -> list[tuple[str, str]]:
    """(component name, "host:port") of every etcd member the supervisor runs."""
    found = []
    for proc in processes:
        if proc.external and CLIENT_URLS in proc.argv:
            url = proc.argv[proc.argv.index(CLIENT_URLS) + 1]
            found.append((proc.name, url.partition("://")[2]))
    return found


async def statuses(home: Path, endpoints: Sequence[str], timeout: float = 2.0) -> list[MemberStatus]:
    cert, key = etcd_credentials.client_files(home)
    try:
        tls = EtcdTls(etcd_credentials.ca_file(home).read_bytes(), cert.read_bytes(), key.read_bytes())
    except OSError as e:
        return [MemberStatus(endpoint, error=f"no etcd client certificate: {e}") for endpoint in endpoints]
    async with EtcdStore(list(endpoints), request_timeout=timeout * 2, tls=tls) as store:
        return await store.member_statuses()


def render(names: Sequence[str], found: Sequence[MemberStatus]) -> list[str]:
    """The lines `podnet status` prints: a summary (the leader by component name, the term), then a row per
    member. Members disagree during an election; the summary names the leader of the highest term."""
    by_id = {status.member_id: name for name, status in zip(names, found, strict=True) if status.error is None}
    answering = [status for status in found if status.error is None]
    newest = max(answering, key=lambda status: status.raft_term, default=None)
    if newest is None:
        summary = "etcd: no member answers"
    elif newest.leader_id == 0:
        summary = f"etcd: no leader (raft term {newest.raft_term})"
    else:
        summary = f"etcd: leader {by_id.get(newest.leader_id, f'{newest.leader_id:x}')}, raft term {newest.raft_term}"
    rows = [["MEMBER", "ENDPOINT", "ID", "ROLE", "RAFT TERM", "RAFT INDEX", "VERSION"]]
    for name, status in zip(names, found, strict=True):
        if status.error is not None:
            rows.append([name, status.endpoint, "-", "unreachable", "-", "-", "-"])
            continue
        role = "leader" if status.is_leader else "follower" if status.leader_id else "no leader"
        rows.append([name, status.endpoint, f"{status.member_id:x}", role, str(status.raft_term),
                     str(status.raft_index), status.version])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [summary, *("  " + "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)]
