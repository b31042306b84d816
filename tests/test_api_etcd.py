"""The API server on a real etcd: etcd SIGKILLed under a write load."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from kubernetes import client, watch
from support.apiserver import kubernetes_client

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


def _request(server, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15, context=server.ssl_context()) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _pod(name: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "agnhost:2.39"}]}}


def test_etcd_killed_under_load_gives_503_then_recovers_without_losing_a_write(make_api_server, etcd_server):
    server = make_api_server(etcd_server.url)
    assert _request(server, "POST", "/api/v1/namespaces", {"metadata": {"name": "load"}})[0] == 201
    acknowledged: dict[str, int] = {}
    codes: list[int] = []
    revisions: list[int] = []
    stop = threading.Event()  # the writer
    stop_watching = threading.Event()

    def writer() -> None:
        for i in range(100_000):
            if stop.is_set():
                return
            code, body = _request(server, "POST", "/api/v1/namespaces/load/pods", _pod(f"p{i}"))
            codes.append(code)
            if code == 201:
                acknowledged[body["metadata"]["name"]] = int(body["metadata"]["resourceVersion"])
                revisions.append(int(body["metadata"]["resourceVersion"]))
            elif code != 409:  # a write whose acknowledgement was lost may have been applied: retried as 409
                assert body["kind"] == "Status"
                time.sleep(0.05)

    watched: list[tuple[str, int]] = []

    def watcher() -> None:
        core = client.CoreV1Api(kubernetes_client(server, server.token))
        resource_version = "1"
        while not stop_watching.is_set():
            try:
                for event in watch.Watch().stream(
                    core.list_namespaced_pod, "load", resource_version=resource_version, timeout_seconds=2
                ):
                    metadata = event["object"].metadata
                    watched.append((metadata.name, int(metadata.resource_version)))
                    resource_version = metadata.resource_version
            except Exception:  # storage down: the stream ends; resume from the last resourceVersion
                time.sleep(0.1)

    thread = threading.Thread(target=writer)
    thread.start()
    watch_thread = threading.Thread(target=watcher)
    watch_thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(acknowledged) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        etcd_server.kill()
        down_at = len(codes)
        deadline = time.monotonic() + 20
        while 503 not in codes[down_at:] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 503 in codes[down_at:], codes[down_at:]
        readyz = urllib.request.Request(server.url + "/readyz")
        with pytest.raises(urllib.error.HTTPError) as unready:
            urllib.request.urlopen(readyz, timeout=10, context=server.ssl_context())
        assert unready.value.code == 503
        etcd_server.start()
        before = len(acknowledged)
        deadline = time.monotonic() + 30
        while len(acknowledged) < before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acknowledged) >= before + 20, "the API server did not recover by itself"
        stop.set()
        thread.join(timeout=30)
        deadline = time.monotonic() + 10
        while (not watched or watched[-1][1] < max(revisions)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        stop_watching.set()
        thread.join(timeout=30)
        watch_thread.join(timeout=30)
    assert 500 not in codes
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    code, listed = _request(server, "GET", "/api/v1/namespaces/load/pods")
    assert code == 200
    stored = {item["metadata"]["name"]: int(item["metadata"]["resourceVersion"]) for item in listed["items"]}
    assert acknowledged.items() <= stored.items(), "an acknowledged write was lost"
    assert int(listed["metadata"]["resourceVersion"]) >= max(revisions)
    # The watch across the outage: every acknowledged write once, in order, never going backwards.
    watched_revisions = [revision for _, revision in watched]
    assert watched_revisions == sorted(set(watched_revisions))
    assert acknowledged.items() <= dict(watched).items()
