"""Bad input never gets a 500: random bodies, patches and queries against the application over a real
SQLite store."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
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
        runner = web.AppRunner(app, access_log=None)
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
