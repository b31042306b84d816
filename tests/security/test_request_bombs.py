"""One request must not freeze the API server (issue 23, item 3).

A YAML body of nested aliases (CVE-2019-11253) and a JSON patch of repeated `copy` operations
(CVE-2019-1002100) each expand a few hundred bytes into gigabytes. Against a real API server process,
each is answered with a 4xx within 100 ms while a watch on the same server keeps receiving the events of
writes made meanwhile; objects that a patch or an alias grows past the body limit are refused.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from podnet.apiserver.config import MAX_BODY_BYTES

# The classic, under 500 bytes: nine levels of nine aliases, 9^9 (387 million) strings once expanded.
BILLION_LAUGHS = b"""apiVersion: v1
kind: Namespace
metadata:
  name: laughs
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

# Each operation copies the whole metadata into itself: the object doubles thirty times.
COPY_BOMB = [{"op": "copy", "from": "/metadata", "path": f"/metadata/x{n}"} for n in range(30)]


class Server:
    def __init__(self, api_server, session: aiohttp.ClientSession):
        self.url = api_server.url
        self.session = session
        self.ssl = api_server.ssl_context()
        self.headers = {"Authorization": f"Bearer {api_server.token}"}

    async def send(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict, float]:
        """Status code, decoded Status and seconds taken."""
        started = time.monotonic()
        async with self.session.request(method, self.url + path, data=body, ssl=self.ssl,
                                        headers={**self.headers, "Content-Type": content_type}) as response:
            answer = await response.json(content_type=None)
            return response.status, answer, time.monotonic() - started


async def _watch(server: Server, seen: list[float], ready: asyncio.Event) -> None:
    async with server.session.get(f"{server.url}/api/v1/namespaces/watched/services?watch=true",
                                  ssl=server.ssl, headers=server.headers, timeout=aiohttp.ClientTimeout(total=None)) as stream:
        ready.set()
        async for line in stream.content:
            if json.loads(line)["type"] == "ADDED":
                seen.append(time.monotonic())


async def _write_services(server: Server, count: int) -> None:
    for n in range(count):
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{n}"},
                   "spec": {"ports": [{"port": 80}]}}
        code, answer, _ = await server.send("POST", "/api/v1/namespaces/watched/services",
                                            json.dumps(service).encode(), "application/json")
        assert code == 201, answer
        await asyncio.sleep(0.02)


async def test_alias_and_copy_bombs_are_refused_fast_while_a_watch_keeps_flowing(api_server_module):
    async with aiohttp.ClientSession() as session:
        server = Server(api_server_module, session)
        namespace = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "watched"}}).encode()
        assert (await server.send("POST", "/api/v1/namespaces", namespace, "application/json"))[0] == 201
        seen: list[float] = []
        ready = asyncio.Event()
        watcher = asyncio.create_task(_watch(server, seen, ready))
        await asyncio.wait_for(ready.wait(), 10)
        writer = asyncio.create_task(_write_services(server, 40))
        try:
            await asyncio.sleep(0.2)
            answers = []
            for _ in range(3):
                answers.append(await server.send("POST", "/api/v1/namespaces", BILLION_LAUGHS, "application/yaml"))
                answers.append(await server.send("PATCH", "/api/v1/namespaces/watched", json.dumps(COPY_BOMB).encode(),
                                                 "application/json-patch+json"))
            await writer
            await asyncio.sleep(0.2)
        finally:
            watcher.cancel()
    laughs, copies = answers[0], answers[1]
    assert (laughs[0], laughs[1]["reason"], laughs[1]["message"]) == (
        400, "BadRequest", "yaml: document contains excessive aliasing"), laughs
    assert copies[0] == 422 and copies[1]["message"].startswith(
        "the patch cannot be applied: Unable to complete the copy, the accumulated size increase of copy is "), copies
    assert copies[1]["message"].endswith(f"exceeding the limit {3 * 1024 * 1024}")
    assert max(seconds for _, _, seconds in answers) < 0.1, [seconds for _, _, seconds in answers]
    # Every write made while the bombs went in reached the watcher, none held up behind them.
    assert len(seen) == 40
    assert max(b - a for a, b in zip(seen, seen[1:], strict=False)) < 0.5


async def test_too_many_patch_operations_and_objects_grown_past_the_limit_are_413(api_server_module):
    async with aiohttp.ClientSession() as session:
        server = Server(api_server_module, session)
        namespace = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "grown"}}).encode()
        assert (await server.send("POST", "/api/v1/namespaces", namespace, "application/json"))[0] == 201
        tests = [{"op": "test", "path": "/kind", "value": "Namespace"}] * 10_001
        code, answer, _ = await server.send("PATCH", "/api/v1/namespaces/grown", json.dumps(tests).encode(),
                                            "application/json-patch+json")
        assert (code, answer["reason"], answer["message"]) == (
            413, "RequestEntityTooLarge", "The allowed maximum operations in a JSON patch is 10000, got 10001")

        # A pod carrying 1.2 MB is a legal body; two copies of it (within the copy limit) are not a legal object.
        big = "x" * 1_200_000
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
               "spec": {"containers": [{"name": "c", "image": "busybox", "env": [{"name": "BIG", "value": big}]}]}}
        code, answer, _ = await server.send("POST", "/api/v1/namespaces/grown/pods", json.dumps(pod).encode(),
                                            "application/json")
        assert code == 201, answer
        grow = [{"op": "copy", "from": "/spec/containers/0/env/0", "path": "/spec/containers/0/env/-"}] * 2
        code, answer, _ = await server.send("PATCH", "/api/v1/namespaces/grown/pods/big", json.dumps(grow).encode(),
                                            "application/json-patch+json")
        assert (code, answer["reason"], answer["message"]) == (
            413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY_BYTES}"), answer

        # Few aliases of one long string: far from go-yaml's alias share, but four times the body limit.
        expanding = (f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: expanding\n"
                     f"x: &big {'y' * 1_000_000}\nz: [{', '.join(['*big'] * 12)}]\n").encode()
        code, answer, _ = await server.send("POST", "/api/v1/namespaces", expanding, "application/yaml")
        assert (code, answer["reason"]) == (413, "RequestEntityTooLarge"), answer
        code, answer, _ = await server.send("POST", "/api/v1/namespaces", b"a: &a [*a]\n", "application/yaml")
        assert (code, answer["message"]) == (400, "yaml: an anchor's value contains an alias of itself"), answer


@pytest.mark.parametrize("aliases, refused", [(100, False), (2000, True)])
def test_the_alias_share_rule_is_go_yamls(aliases, refused):
    """Pure: a small anchored list aliased many times passes until aliases are over 99% of 1000+ decodes."""
    from podnet.apiserver import yamlbody

    body = ("k: &k [1, 2, 3, 4, 5, 6, 7, 8, 9]\nv: [" + ", ".join(["*k"] * aliases) + "]\n").encode()
    if refused:
        with pytest.raises(yamlbody.DecodeError, match="excessive aliasing"):
            yamlbody.load(body, MAX_BODY_BYTES)
    else:
        assert len(yamlbody.load(body, MAX_BODY_BYTES)["v"]) == aliases


@pytest.mark.parametrize("levels", [99, 100, 101])
def test_yaml_and_json_bodies_nest_equally_deep(levels):
    """The YAML measure refuses exactly the depths the JSON decoder refuses."""
    from podnet.apiserver import codec, yamlbody

    body = ("[" * levels + "1" + "]" * levels).encode()  # the same document in both languages
    outcomes = []
    for load in (lambda: codec.decode(body, codec.JSON), lambda: yamlbody.load(body, MAX_BODY_BYTES)):
        try:
            load()
            outcomes.append("accepted")
        except codec.DecodeError as e:
            outcomes.append(str(e))
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0] == "accepted") == (levels < codec.MAX_DEPTH)
