"""The official kubernetes Python client against a real API server process."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import msgpack
import pytest
from kubernetes import client, dynamic, watch
from kubernetes.client.rest import ApiException
from support.apiserver import kubernetes_client as api_client
from support.apiserver import sample_pod as pod


@pytest.fixture
def core(api_server_module) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(api_server_module, api_server_module.token))


@pytest.fixture
def networking(api_server_module) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(api_client(api_server_module, api_server_module.token))


@pytest.fixture
def namespace(core: client.CoreV1Api) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    return name


def raw(server, method: str, path: str, body: bytes | None = None, *, token: str | None = None, headers: dict | None = None):
    request = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=server.ssl_context()) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def test_namespaces_pods_services_and_policies_round_trip(core, networking, namespace):
    ns = core.read_namespace(namespace)
    assert ns.metadata.labels["kubernetes.io/metadata.name"] == namespace
    assert ns.status.phase == "Active"
    relabelled = core.patch_namespace(namespace, {"metadata": {"labels": {"kubernetes.io/metadata.name": "other", "team": "a"}}})
    assert relabelled.metadata.labels == {"kubernetes.io/metadata.name": namespace, "team": "a"}
    assert namespace in [n.metadata.name for n in core.list_namespace().items]

    created = core.create_namespaced_pod(namespace, pod("web-1", app="web"))
    assert created.metadata.uid and created.metadata.resource_version
    assert created.spec.containers[0].ports[0].protocol == "TCP"
    assert created.spec.restart_policy == "Always" and created.spec.dns_policy == "ClusterFirst"
    core.create_namespaced_pod(namespace, pod("db-1", app="db"))
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector="app in (web)").items] == ["web-1"]
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace, field_selector="metadata.name=db-1").items] == ["db-1"]
    patched = core.patch_namespaced_pod("web-1", namespace, {"metadata": {"labels": {"tier": "front"}}})
    assert patched.metadata.labels == {"app": "web", "tier": "front"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)

    service = core.create_namespaced_service(
        namespace,
        {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}},
    )
    assert service.spec.session_affinity == "None" and service.spec.internal_traffic_policy == "Cluster"
    assert service.spec.ports[0].protocol == "TCP"
    got = core.read_namespaced_service("web", namespace)
    assert got.metadata.uid == service.metadata.uid

    policy = networking.create_namespaced_network_policy(
        namespace,
        {
            "metadata": {"name": "allow-web"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]}],
            },
        },
    )
    assert policy.spec.policy_types == ["Ingress"]
    assert policy.spec.ingress[0].ports[0].protocol == "TCP"
    patched_policy = networking.patch_namespaced_network_policy(
        "allow-web", namespace, [{"op": "replace", "path": "/spec/ingress/0/ports/0/port", "value": 5433}]
    )
    assert patched_policy.spec.ingress[0].ports[0].port == 5433

    deleted = core.delete_namespaced_pod("web-1", namespace)
    assert deleted.metadata.name == "web-1"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("web-1", namespace)
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["reason"] == "NotFound"

    networking.delete_namespaced_network_policy("allow-web", namespace)
    core.delete_namespace(namespace)
    assert core.list_namespaced_pod(namespace).items == []
    assert core.list_namespaced_service(namespace).items == []
    with pytest.raises(ApiException) as gone:
        core.read_namespace(namespace)
    assert gone.value.status == 404


def test_watch_sees_added_modified_deleted(core, namespace):
    def mutate() -> None:
        time.sleep(0.3)
        core.create_namespaced_pod(namespace, pod("watched", app="w"))
        core.patch_namespaced_pod("watched", namespace, {"metadata": {"labels": {"seen": "yes"}}})
        core.delete_namespaced_pod("watched", namespace)

    writer = threading.Thread(target=mutate)
    writer.start()
    seen = []
    stream = watch.Watch()
    for event in stream.stream(core.list_namespaced_pod, namespace, timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            stream.stop()
    writer.join()
    assert seen == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]


def test_watch_with_a_label_selector_sees_objects_enter_and_leave(core, namespace):
    start = core.list_namespaced_pod(namespace).metadata.resource_version
    core.create_namespaced_pod(namespace, pod("p", app="other"))
    core.patch_namespaced_pod("p", namespace, {"metadata": {"labels": {"app": "web"}}})
    core.patch_namespaced_pod("p", namespace, {"metadata": {"labels": {"app": "other"}}})
    events = [
        e["type"]
        for e in watch.Watch().stream(
            core.list_namespaced_pod, namespace, label_selector="app=web", resource_version=start, timeout_seconds=1
        )
    ]
    assert events == ["ADDED", "DELETED"]


def test_a_stale_update_is_a_conflict(core, namespace):
    core.create_namespaced_pod(namespace, pod("p", app="a"))
    stale = core.read_namespaced_pod("p", namespace)
    core.patch_namespaced_pod("p", namespace, {"metadata": {"labels": {"app": "b"}}})
    stale.metadata.labels = {"app": "c"}
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_pod("p", namespace, stale)
    assert conflict.value.status == 409
    status = json.loads(conflict.value.body)
    assert status["kind"] == "Status" and status["reason"] == "Conflict"
    assert status["details"] == {"name": "p", "kind": "pods"}
    fresh = core.read_namespaced_pod("p", namespace)
    fresh.metadata.labels = {"app": "c"}
    assert core.replace_namespaced_pod("p", namespace, fresh).metadata.labels == {"app": "c"}


def test_an_invalid_network_policy_is_422_with_the_field(networking, namespace):
    bad = {
        "metadata": {"name": "bad"},
        "spec": {
            "podSelector": {},
            "egress": [{"ports": [{"port": 8080, "endPort": 80}], "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}],
        },
    }
    with pytest.raises(ApiException) as invalid:
        networking.create_namespaced_network_policy(namespace, bad)
    assert invalid.value.status == 422
    status = json.loads(invalid.value.body)
    assert status["reason"] == "Invalid"
    assert status["details"]["kind"] == "NetworkPolicy" and status["details"]["name"] == "bad"
    fields = {cause["field"] for cause in status["details"]["causes"]}
    assert fields == {"spec.egress[0].ports[0].endPort", "spec.egress[0].to[0].ipBlock.except[0]"}


def test_a_status_write_ignores_spec_and_a_spec_write_ignores_status(core, namespace):
    core.create_namespaced_pod(namespace, pod("p", app="a"))
    core.patch_namespaced_pod_status("p", namespace, {"status": {"phase": "Running", "podIP": "10.244.1.5"}, "metadata": {"labels": {"x": "y"}}})
    after_status = core.read_namespaced_pod("p", namespace)
    assert after_status.status.phase == "Running" and after_status.metadata.labels == {"app": "a"}
    core.patch_namespaced_pod("p", namespace, {"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}})
    after_spec = core.read_namespaced_pod("p", namespace)
    assert after_spec.status.phase == "Running" and after_spec.metadata.labels == {"app": "a", "x": "y"}


def test_services_get_cluster_ips_and_node_ports_on_create(core, namespace):
    def service(name: str, **spec) -> dict:
        return {"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}

    first = core.create_namespaced_service(namespace, service("first", type="NodePort"))
    ip, node_port = first.spec.cluster_ip, first.spec.ports[0].node_port
    assert ip.startswith("10.") and first.spec.cluster_ips == [ip]
    assert 30000 <= node_port <= 32767
    second = core.create_namespaced_service(namespace, service("second", type="NodePort"))
    assert second.spec.cluster_ip != ip and second.spec.ports[0].node_port != node_port
    for taken in ({"clusterIP": ip}, {"type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]}):
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_service(namespace, service("third", **taken))
        assert refused.value.status == 422
        assert "already allocated" in json.loads(refused.value.body)["details"]["causes"][0]["message"]
    # Re-applying the manifest without the allocated values keeps them; changing the address is refused.
    reapplied = core.replace_namespaced_service("first", namespace, service("first", type="NodePort"))
    assert reapplied.spec.cluster_ip == ip and reapplied.spec.ports[0].node_port == node_port
    with pytest.raises(ApiException) as moved:
        core.patch_namespaced_service("first", namespace, {"spec": {"clusterIP": "10.96.200.200", "clusterIPs": ["10.96.200.200"]}})
    assert moved.value.status == 422
    core.delete_namespaced_service("first", namespace)
    again = core.create_namespaced_service(namespace, service("third", clusterIP=ip, type="NodePort", ports=[{"port": 80, "nodePort": node_port}]))
    assert again.spec.cluster_ip == ip and again.spec.ports[0].node_port == node_port
    headless = core.create_namespaced_service(namespace, service("headless", clusterIP="None"))
    assert headless.spec.cluster_ip == "None"


def test_delete_collection_by_label(core, namespace):
    for name, app in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        core.create_namespaced_pod(namespace, pod(name, app=app))
    core.delete_collection_namespaced_pod(namespace, label_selector="app=a")
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace).items] == ["b1"]


def test_dry_run_checks_everything_but_writes_nothing(core, namespace):
    assert core.create_namespaced_pod(namespace, pod("dry"), dry_run="All").metadata.name == "dry"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("dry", namespace)
    assert missing.value.status == 404
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_pod(namespace, {"metadata": {"name": "dry"}, "spec": {"containers": []}}, dry_run="All")
    assert invalid.value.status == 422
    core.create_namespaced_pod(namespace, pod("real"))
    core.patch_namespaced_pod("real", namespace, {"metadata": {"labels": {"dry": "run"}}}, dry_run="All")
    # Created with `labels: {}`, which kube-apiserver leaves out as an empty omitempty map: still none.
    assert core.read_namespaced_pod("real", namespace).metadata.labels is None


def test_generate_name_and_pagination(core, namespace):
    names = {core.create_namespaced_pod(namespace, {**pod(""), "metadata": {"generateName": "gen-"}}).metadata.name for _ in range(5)}
    assert len(names) == 5 and all(n.startswith("gen-") and len(n) == 9 for n in names)
    first = core.list_namespaced_pod(namespace, limit=2)
    assert len(first.items) == 2 and first.metadata._continue
    rest = []
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_pod(namespace, limit=2, _continue=token)
        rest.extend(page.items)
        token = page.metadata._continue
    assert {p.metadata.name for p in first.items + rest} == names


def test_bodies_over_3_mib_are_413(api_server_module, namespace):
    body = json.dumps({**pod("big"), "metadata": {"name": "big", "annotations": {"a": "x" * (3 * 1024 * 1024)}}}).encode()
    code, _, reply = raw(
        api_server_module, "POST", f"/api/v1/namespaces/{namespace}/pods", body,
        token=api_server_module.token, headers={"Content-Type": "application/json"},
    )
    assert code == 413
    assert json.loads(reply)["reason"] == "RequestEntityTooLarge"


def test_authentication_and_roles(api_server_module, core, namespace):
    anonymous = client.CoreV1Api(api_client(api_server_module))
    with pytest.raises(ApiException) as unauthorized:
        anonymous.list_namespaced_pod(namespace)
    assert unauthorized.value.status == 401
    bad = client.CoreV1Api(api_client(api_server_module, "not-a-token"))
    with pytest.raises(ApiException) as also_unauthorized:
        bad.list_namespace()
    assert also_unauthorized.value.status == 401

    viewer = client.CoreV1Api(api_client(api_server_module, api_server_module.tokens["viewer"]))
    assert viewer.list_namespaced_pod(namespace).items == []
    with pytest.raises(ApiException) as forbidden:
        viewer.create_namespaced_pod(namespace, pod("p"))
    assert forbidden.value.status == 403
    assert json.loads(forbidden.value.body)["reason"] == "Forbidden"

    if "team-a" not in [n.metadata.name for n in core.list_namespace().items]:
        core.create_namespace({"metadata": {"name": "team-a"}})
    editor = client.CoreV1Api(api_client(api_server_module, api_server_module.tokens["editor"]))
    editor.create_namespaced_pod("team-a", pod(f"p-{namespace}"))
    editor.delete_namespaced_pod(f"p-{namespace}", "team-a")
    with pytest.raises(ApiException) as other_namespace:
        editor.create_namespaced_pod(namespace, pod("p"))
    assert other_namespace.value.status == 403
    with pytest.raises(ApiException) as cluster_scope:
        editor.create_namespace({"metadata": {"name": "not-mine"}})
    assert cluster_scope.value.status == 403

    nobody = client.CoreV1Api(api_client(api_server_module, api_server_module.tokens["nobody"]))
    with pytest.raises(ApiException) as no_role:
        nobody.list_namespaced_pod(namespace)
    assert no_role.value.status == 403
    assert raw(api_server_module, "GET", "/healthz")[0] == 200


def test_msgpack_round_trip(api_server_module, namespace):
    headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
    body = msgpack.packb(pod("packed", app="mp"))
    code, content_type, reply = raw(
        api_server_module, "POST", f"/api/v1/namespaces/{namespace}/pods", body, token=api_server_module.token, headers=headers
    )
    assert code == 201 and content_type == "application/msgpack"
    created = msgpack.unpackb(reply)
    assert created["metadata"]["name"] == "packed" and created["spec"]["containers"][0]["ports"][0]["protocol"] == "TCP"
    code, _, reply = raw(
        api_server_module, "GET", f"/api/v1/namespaces/{namespace}/pods/packed", token=api_server_module.token, headers={"Accept": "application/msgpack"}
    )
    assert msgpack.unpackb(reply) == created
    code, _, reply = raw(
        api_server_module, "GET", f"/api/v1/namespaces/{namespace}/pods?watch=1&resourceVersion=0&timeoutSeconds=1",
        token=api_server_module.token, headers={"Accept": "application/msgpack"},
    )
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(reply)
    events = list(unpacker)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "packed")]
    code, _, reply = raw(
        api_server_module, "POST", f"/api/v1/namespaces/{namespace}/pods", b"\xc1\xc1", token=api_server_module.token, headers=headers
    )
    assert code == 400 and msgpack.unpackb(reply)["reason"] == "BadRequest"
    # A msgpack body without an Accept header is answered in msgpack too.
    code, content_type, reply = raw(
        api_server_module, "POST", f"/api/v1/namespaces/{namespace}/pods", msgpack.packb(pod("packed-2")),
        token=api_server_module.token, headers={"Content-Type": "application/msgpack"},
    )
    assert code == 201 and content_type == "application/msgpack" and msgpack.unpackb(reply)["metadata"]["name"] == "packed-2"


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "code"),
    [
        ("POST", "/api/v1/namespaces/{ns}/pods", b"{not json", "application/json", 400),
        ("POST", "/api/v1/namespaces/{ns}/pods", b"[1, 2]", "application/json", 400),
        ("POST", "/api/v1/namespaces/{ns}/pods", b"{}", "text/plain", 415),
        ("GET", "/api/v1/namespaces/{ns}/pods?fieldSelector=spec.unknown%3Dx", None, None, 400),
        ("GET", "/api/v1/namespaces/{ns}/pods?labelSelector=a%20in%20(", None, None, 400),
        ("GET", "/api/v1/namespaces/{ns}/pods?watch=1&resourceVersion=abc", None, None, 400),
        ("GET", "/api/v1/namespaces/{ns}/pods?limit=2&continue=%%%", None, None, 400),
        ("PUT", "/api/v1/namespaces/{ns}/pods", b"{}", "application/json", 405),
        ("GET", "/api/v1/widgets", None, None, 404),
        ("POST", "/api/v1/namespaces/nowhere/pods", json.dumps(pod("p")).encode(), "application/json", 404),
        ("PATCH", "/api/v1/namespaces/{ns}", b'[{"op": "test", "path": "/metadata/name", "value": "x"}]', "application/json-patch+json", 422),
        ("PATCH", "/api/v1/namespaces/{ns}", b'{"op": "add"}', "application/json-patch+json", 400),
        ("PATCH", "/api/v1/namespaces/{ns}", b"{}", "application/apply-patch+yaml", 422),  # no fieldManager
        ("PATCH", "/api/v1/namespaces/{ns}?fieldManager=t", b"[1]", "application/apply-patch+yaml", 400),
        ("PATCH", "/api/v1/namespaces/{ns}?fieldManager=t", b"a: [", "application/apply-patch+yaml", 400),
        ("PATCH", "/api/v1/namespaces/{ns}?fieldManager=t", b"[" * 5000 + b"]" * 5000, "application/apply-patch+yaml", 400),
        ("PATCH", "/api/v1/namespaces/{ns}?fieldManager=t", b"a: " + b"[" * 200 + b"]" * 200, "application/apply-patch+yaml", 400),
        ("POST", "/api/v1/namespaces", b"a: " + b"[" * 5000 + b"]" * 5000, "application/yaml", 400),
        ("PATCH", "/api/v1/namespaces/{ns}", b"{}", "application/xml", 415),
        ("DELETE", "/api/v1/namespaces/default", None, None, 403),
    ],
)
def test_bad_requests_get_a_status_never_a_500(api_server_module, namespace, method, path, body, content_type, code):
    headers = {"Content-Type": content_type} if content_type else {}
    got, _, reply = raw(api_server_module, method, path.format(ns=namespace), body, token=api_server_module.token, headers=headers)
    assert got == code, reply
    status = json.loads(reply)
    assert status["kind"] == "Status" and status["code"] == code and status["status"] == "Failure"


def test_paths_not_served_are_answered_as_kube_apiserver_answers_them(api_server_module, namespace):
    # Under /api and /apis, a Status with empty details and a message that names nothing; elsewhere the plain page.
    for path in ("/api/v1/widgets", f"/api/v1/namespaces/{namespace}/pods/p/nosuch", "/apis/nosuch.io/v1/foos"):
        code, content_type, reply = raw(api_server_module, "GET", path, token=api_server_module.token)
        assert (code, content_type) == (404, "application/json"), path
        assert json.loads(reply) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                     "message": "the server could not find the requested resource", "reason": "NotFound",
                                     "details": {}, "code": 404}, path
    assert raw(api_server_module, "GET", "/nosuch", token=api_server_module.token) == (
        404, "text/plain; charset=utf-8", b"404 page not found\n")


def test_discovery_is_enough_for_the_dynamic_client(api_server_module, namespace):
    api = api_client(api_server_module, api_server_module.token)
    assert client.VersionApi(api).get_code().major == "1"
    assert "v1" in client.CoreApi(api).get_api_versions().versions
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"networking.k8s.io", "discovery.k8s.io", "coordination.k8s.io", "apps"} <= groups
    dyn = dynamic.DynamicClient(api)
    policies = dyn.resources.get(api_version="networking.k8s.io/v1", kind="NetworkPolicy")
    policies.create(body={"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny"}, "spec": {"podSelector": {}}}, namespace=namespace)
    assert [p.metadata.name for p in policies.get(namespace=namespace).items] == ["deny"]


def test_metrics_count_requests(api_server_module, core, namespace):
    core.list_namespaced_pod(namespace)
    code, _, text = raw(api_server_module, "GET", "/metrics", token=api_server_module.token)
    assert code == 200
    lines = text.decode().splitlines()
    assert any(line.startswith('apiserver_request_total{code="200",resource="pods",verb="LIST"}') for line in lines)
    assert any(line.startswith("apiserver_request_duration_seconds_bucket") for line in lines)
    assert any(line.startswith("# TYPE apiserver_registered_watchers gauge") for line in lines)


def test_namespace_deletion_leaves_nothing_behind_under_concurrent_creates(core, namespace):
    stop = threading.Event()
    outcomes: list[int] = []

    def creator(worker: int) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            try:
                core.create_namespaced_pod(namespace, pod(f"w{worker}-{i}"))
                outcomes.append(201)
            except ApiException as e:
                outcomes.append(e.status)

    threads = [threading.Thread(target=creator, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    core.delete_namespace(namespace)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert 201 in outcomes and set(outcomes) <= {201, 403, 404}
    assert core.list_namespaced_pod(namespace).items == []
