"""Watches across an API server crash and across a compaction, with the official kubernetes client."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from support.apiserver import kubernetes_client as api_client
from support.apiserver import sample_pod as pod


def _core(server) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(server, server.token))


@pytest.mark.slow
def test_a_watch_resumes_after_a_server_crash_without_missing_or_repeating(make_api_server):
    server = make_api_server()
    core = _core(server)
    core.create_namespace({"metadata": {"name": "resume"}})
    start = core.list_namespaced_pod("resume").metadata.resource_version
    written: list[tuple[str, str, str]] = []
    seen: list[tuple[str, str, str]] = []
    done = threading.Event()

    def watcher() -> None:
        resource_version = start
        deadline = time.monotonic() + 40
        while not done.is_set() and time.monotonic() < deadline:
            try:
                for event in watch.Watch().stream(
                    core.list_namespaced_pod, "resume", resource_version=resource_version, timeout_seconds=2
                ):
                    metadata = event["object"].metadata
                    seen.append((event["type"], metadata.name, metadata.resource_version))
                    resource_version = metadata.resource_version
            except Exception:  # the server is down: reconnect from the last resourceVersion, as informers do
                time.sleep(0.1)

    thread = threading.Thread(target=watcher)
    thread.start()
    try:
        for i in range(5):
            created = core.create_namespaced_pod("resume", pod(f"p{i}"))
            written.append(("ADDED", f"p{i}", created.metadata.resource_version))
        time.sleep(0.3)
        server.kill()
        server.start()
        for i in range(5, 8):
            created = core.create_namespaced_pod("resume", pod(f"p{i}"))
            written.append(("ADDED", f"p{i}", created.metadata.resource_version))
        patched = core.patch_namespaced_pod("p0", "resume", {"metadata": {"labels": {"after": "restart"}}})
        written.append(("MODIFIED", "p0", patched.metadata.resource_version))
        deleted = core.delete_namespaced_pod("p1", "resume")
        written.append(("DELETED", "p1", deleted.metadata.resource_version))
        deadline = time.monotonic() + 20
        while len(seen) < len(written) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything repeated would arrive now
    finally:
        done.set()
        thread.join(timeout=10)
    assert seen == written
    assert [int(rv) for _, _, rv in seen] == sorted({int(rv) for _, _, rv in seen})


@pytest.mark.slow
def test_after_a_compaction_an_old_watch_gets_410_and_a_relist_recovers(make_api_server):
    server = make_api_server(extra_args=["--compaction-interval", "0.2"])
    core = _core(server)
    core.create_namespace({"metadata": {"name": "compact"}})
    old = core.create_namespaced_pod("compact", pod("a")).metadata.resource_version
    # A watcher from `old` while it is still in history: it fills the server's watch cache.
    early = [e["object"].metadata.name for e in watch.Watch().stream(
        core.list_namespaced_pod, "compact", resource_version=str(int(old) - 1), timeout_seconds=1
    )]
    assert early == ["a"]
    for name in ("b", "c"):
        core.create_namespaced_pod("compact", pod(name))
    time.sleep(1.0)  # a few compaction ticks: history up to at least `c` is gone
    with pytest.raises(ApiException) as expired:
        for _ in watch.Watch().stream(core.list_namespaced_pod, "compact", resource_version=old, timeout_seconds=2):
            pass
    assert expired.value.status == 410
    relisted = core.list_namespaced_pod("compact")
    assert sorted(p.metadata.name for p in relisted.items) == ["a", "b", "c"]
    core.create_namespaced_pod("compact", pod("d"))
    after = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_pod, "compact", resource_version=relisted.metadata.resource_version, timeout_seconds=1
        )
    ]
    assert after == [("ADDED", "d")]


def test_an_idle_watch_gets_bookmarks_that_resume_it(make_api_server):
    server = make_api_server(extra_args=["--bookmark-interval", "0.2"])
    core = _core(server)
    core.create_namespace({"metadata": {"name": "idle"}})
    start = core.list_namespaced_pod("idle").metadata.resource_version
    core.create_namespaced_pod("idle", pod("before"))
    stream = watch.Watch()
    events = [
        (e["type"], e["raw_object"]["metadata"]["resourceVersion"])
        for e in stream.stream(
            core.list_namespaced_pod, "idle", resource_version=start, allow_watch_bookmarks=True, timeout_seconds=1
        )
    ]
    assert events[0][0] == "ADDED"
    bookmarks = [rv for kind, rv in events if kind == "BOOKMARK"]
    assert bookmarks and int(bookmarks[-1]) >= int(events[0][1])
    # Resuming from the bookmark gives only what came after it.
    core.create_namespaced_pod("idle", pod("after"))
    after = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(core.list_namespaced_pod, "idle", resource_version=bookmarks[-1], timeout_seconds=1)
    ]
    assert after == [("ADDED", "after")]
