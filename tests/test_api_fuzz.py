"""Bad input never gets a 500: random bodies, patches and queries against the application over a real
SQLite store."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse

import aiohttp
import msgpack
import pytest
import yarl
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from podnet.apiserver.app import make_app
from podnet.apiserver.config import ApiServerConfig
from podnet.apiserver.storage.sqlite import SqliteStore

from podnet.api.kinds import KINDS

_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_field_names = st.sampled_from(
    ["name", "namespace", "labels", "ports", "port", "containers", "spec", "status", "metadata", "selector", "type",
     "clusterIP", "ingress", "egress", "from", "to", "ipBlock", "cidr", "except", "endPort", "protocol", "podSelector",
     "policyTypes", "targetPort", "nodePort", "image", "containerPort", "generateName", "resourceVersion", "template",
     "replicas", "subsets", "addresses", "endpoints", "addressType", "finalizers", "sessionAffinity"]
)
_shaped = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_field_names, children, max_size=5),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def server(loop, tmp_path_factory):
    """The application on a real socket; hypothesis drives it from synchronous tests through `loop`."""
    path = tmp_path_factory.mktemp("fuzz") / "store.db"
    store = SqliteStore(str(path))
    state: dict = {}

    async def start():
        await store.open()
        app = make_app(ApiServerConfig(compaction_interval=0), store)
        # As serve() runs it: at teardown, watches still streaming get two seconds, not aiohttp's sixty.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"] = runner
        state["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        state["session"] = aiohttp.ClientSession()
        async with state["session"].post(state["url"] + "/api/v1/namespaces", json={"metadata": {"name": "fuzz"}}) as r:
            assert r.status == 201

    loop.run_until_complete(start())
    yield state
    loop.run_until_complete(state["session"].close())
    loop.run_until_complete(state["runner"].cleanup())
    loop.run_until_complete(store.close())


def request(loop, server, method: str, path: str, **kwargs) -> tuple[int, dict]:
    async def go():
        async with server["session"].request(method, server["url"] + path, **kwargs) as response:
            return response.status, await response.json(content_type=None)

    return loop.run_until_complete(go())


def collection(kind) -> str:
    return kind.path("fuzz") if kind.namespaced else kind.path()


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(kind=st.sampled_from(KINDS), body=st.one_of(_json, _shaped, st.fixed_dictionaries({"metadata": _shaped, "spec": _shaped})))
def test_random_creates_get_a_status_not_a_500(loop, server, kind, body):
    code, reply = request(loop, server, "POST", collection(kind), data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert code in (201, 400, 403, 404, 409, 422), reply
    if code != 201:
        assert reply["kind"] == "Status" and reply["code"] == code


@FUZZ
@given(
    patch=st.one_of(_json, _shaped),
    content_type=st.sampled_from(
        ["application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json"]
    ),
    subresource=st.sampled_from(["", "/status"]),
)
def test_random_patches_get_a_status_not_a_500(loop, server, patch, content_type, subresource):
    code, _ = request(
        loop, server, "PUT", "/api/v1/namespaces/fuzz/pods/target",
        data=json.dumps({"metadata": {"name": "target"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        headers={"Content-Type": "application/json"},
    )
    if code == 404:
        request(
            loop, server, "POST", "/api/v1/namespaces/fuzz/pods",
            json={"metadata": {"name": "target"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
        )
    code, reply = request(
        loop, server, "PATCH", f"/api/v1/namespaces/fuzz/pods/target{subresource}", data=json.dumps(patch),
        headers={"Content-Type": content_type},
    )
    assert code in (200, 400, 409, 415, 422), reply


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "resourceVersionMatch", "watch", "timeoutSeconds"]),
        st.text(max_size=12),
        max_size=4,
    )
)
def test_random_list_queries_get_a_status_not_a_500(loop, server, params):
    if params.get("watch", "").lower() in ("true", "1"):
        params["timeoutSeconds"] = "1"
    async def go():
        async with server["session"].get(server["url"] + "/api/v1/namespaces/fuzz/pods", params=params) as response:
            await response.read()
            return response.status

    assert loop.run_until_complete(go()) in (200, 400, 410)


@pytest.mark.parametrize("depth", [150, 900, 100_000])
def test_deeply_nested_bodies_are_400(loop, server, depth):
    body = '{"metadata": {"name": "deep"}, "spec": ' + "[" * depth + "]" * depth + "}"
    code, reply = request(loop, server, "POST", "/api/v1/namespaces/fuzz/pods", data=body, headers={"Content-Type": "application/json"})
    assert code == 400 and reply["reason"] == "BadRequest"
    code, reply = request(
        loop, server, "PATCH", "/api/v1/namespaces/fuzz", data=body, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert code == 400


def test_digits_int_refuses_are_a_bad_request_not_a_500(loop, server):
    # str.isdigit() admits superscripts and other digit signs that int() cannot read
    for value in ("¹", "²5", "٣"):
        status, body = request(loop, server, "GET", "/api/v1/namespaces/fuzz/pods", params={"limit": value})
        assert (status, body.get("reason")) == (400, "BadRequest"), (value, body)


def get_raw(loop, server, target: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    """GETs a request target exactly as written: the query string reaches the server unnormalised."""

    async def go():
        url = yarl.URL(server["url"] + target, encoded=True)
        async with server["session"].get(url, headers=headers or {}) as response:
            return response.status, response.content_type, await response.read()

    return loop.run_until_complete(go())


def status_of(content_type: str, body: bytes) -> dict:
    return msgpack.unpackb(body) if content_type == "application/msgpack" else json.loads(body)


@pytest.mark.parametrize("parameter", ["limit", "resourceVersion", "timeoutSeconds"])
@pytest.mark.parametrize("value", ["99999999999999999999", str(2**63), "1" * 400])
def test_integers_past_int64_are_a_bad_request(loop, server, parameter, value):
    # resourceVersion is read as a revision with an Exact match, timeoutSeconds by a watch
    query = {parameter: value} | {"resourceVersion": {"resourceVersionMatch": "Exact"}, "timeoutSeconds": {"watch": "true"}}.get(parameter, {})
    code, reply = request(loop, server, "GET", "/api/v1/pods", params=query)
    assert (code, reply["kind"], reply["reason"]) == (400, "Status", "BadRequest"), reply
    assert parameter in reply["message"]


def test_the_largest_int64_limit_lists_everything(loop, server):
    code, reply = request(loop, server, "GET", "/api/v1/pods", params={"limit": str(2**63 - 1)})
    assert code == 200 and reply["kind"] == "PodList" and "continue" not in reply["metadata"]


@pytest.mark.parametrize("revision", [2**64, -1, "1e3", True])
def test_continue_tokens_with_odd_revisions_are_a_bad_request(loop, server, revision):
    token = base64.urlsafe_b64encode(json.dumps({"rv": revision, "start": "/registry/pods/fuzz/a"}).encode()).decode()
    code, reply = request(loop, server, "GET", "/api/v1/namespaces/fuzz/pods", params={"limit": "1", "continue": token})
    assert (code, reply["reason"]) == (400, "BadRequest"), reply


@pytest.mark.parametrize("accept", ["application/json", "application/msgpack"])
def test_a_url_over_8_kib_is_414_as_a_status(loop, server, accept):
    selector = "app in (" + ",".join(f"v{i}" for i in range(2000)) + ")"
    code, content_type, body = get_raw(
        loop, server, "/api/v1/pods?labelSelector=" + urllib.parse.quote(selector), headers={"Accept": accept})
    assert (code, content_type) == (414, accept)
    reply = status_of(content_type, body)
    assert (reply["kind"], reply["code"], reply["reason"]) == ("Status", 414, "RequestURITooLong"), reply


def test_a_url_of_8_kib_is_served(loop, server):
    values = 900  # each ",v00001" is 9 bytes quoted
    target = "/api/v1/pods?labelSelector=" + urllib.parse.quote("app in (" + ",".join(f"v{i:05}" for i in range(values)) + ")")
    assert 8100 < len(target) <= 8192
    code, _, body = get_raw(loop, server, target)
    assert code == 200 and json.loads(body)["kind"] == "PodList"


def test_a_list_at_a_future_revision_is_kube_apiservers_timeout(loop, server):
    code, reply = request(loop, server, "GET", "/api/v1/pods", params={"resourceVersion": str(2**63 - 1), "resourceVersionMatch": "Exact"})
    assert (code, reply["kind"], reply["reason"]) == (504, "Status", "Timeout"), reply
    assert reply["message"].startswith(f"Timeout: Too large resource version: {2**63 - 1}, current: ")
    assert reply["details"]["causes"] == [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]


def too_large_resource_version(reply: dict) -> bool:
    """The one 5xx a bad query earns from kube-apiserver too: a revision the store has not reached, which
    clients wait out and retry."""
    causes = reply.get("details", {}).get("causes", [])
    return reply["code"] == 504 and [c["reason"] for c in causes] == ["ResourceVersionTooLarge"]


LIST_PATHS = sorted({collection(kind) for kind in KINDS} | {kind.path() for kind in KINDS})
_query_strings = st.one_of(
    st.text(max_size=60).map(lambda text: urllib.parse.quote(text, safe="=&;%+?/:,!()")),
    st.lists(st.tuples(
        st.sampled_from(["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
                         "resourceVersionMatch", "watch", "timeoutSeconds", "allowWatchBookmarks", "dryRun", "x"]),
        st.one_of(st.text(max_size=16), st.integers().map(str), st.sampled_from(["0", "1", "Exact", "NotOlderThan"]))),
        max_size=4).map(urllib.parse.urlencode),
    st.binary(max_size=40).map(lambda raw: "".join(f"%{b:02x}" for b in raw)),
)


@FUZZ
@given(path=st.sampled_from(LIST_PATHS), query=_query_strings, accept=st.sampled_from(["application/json", "application/msgpack"]))
def test_any_query_string_on_any_list_path_gets_a_status_not_a_5xx(loop, server, path, query, accept):
    if "watch=" in urllib.parse.unquote_plus(query).lower():
        # A watch that was let through ends in a second instead of hanging the test. The server reads the
        # first of repeated parameters, so this one goes first: the query may carry a timeoutSeconds of its own.
        query = f"timeoutSeconds=1&{query}"
    code, content_type, body = get_raw(loop, server, f"{path}?{query}", headers={"Accept": accept})
    if code >= 400:
        assert content_type == accept
        reply = status_of(content_type, body)
        assert (reply["kind"], reply["status"], reply["code"]) == ("Status", "Failure", code), reply
        assert code < 500 or too_large_resource_version(reply), reply
