"""The web UI at 30 nodes and 300 pods: the view the server pushes is built in a fraction of a second, and
the page draws every view of it in headless Chromium fast enough to stay responsive."""

from __future__ import annotations

import json
import os
import random
import time

import pytest
from podnet.nodeagent.policy import Matrix
from podnet.nodeagent.policy.flowlog import FlowRecord
from podnet.nodeagent.policy.matrix import Cell
from support.browser import Browser, chromium_binary
from test_ui_model import deployed, node

from podnet.ui import model

NODES, NAMESPACES, WORKLOADS, REPLICAS = 30, 10, 5, 6  # 300 pods
FLOWS = 5000


def cluster() -> tuple[list[dict], list[dict], list[dict], list[FlowRecord]]:
    rng = random.Random(7)
    nodes = [node(f"node-{i}", i % 7 != 3, f"127.0.0.{10 + i}", f"10.244.{i}.0/24") for i in range(1, NODES + 1)]
    pods, services = [], []
    for n in range(NAMESPACES):
        for w in range(WORKLOADS):
            app = f"app{w}"
            services.append({"metadata": {"namespace": f"ns{n}", "name": app},
                             "spec": {"selector": {"app": app}, "clusterIP": f"10.96.{n}.{w + 1}",
                                      "ports": [{"port": 80, "protocol": "TCP"}]}})
            for _ in range(REPLICAS):
                index = len(pods)
                pods.append(deployed(f"ns{n}", app, f"p{index:04d}", f"node-{index % NODES + 1}",
                                     f"10.244.{index % NODES + 1}.{index // NODES + 2}"))
    ips = [p["status"]["podIP"] for p in pods]
    flows = []
    for i in range(FLOWS):
        src, dst = rng.choice(ips), rng.choice(ips)
        flows.append(FlowRecord(1000.0 + i, "node-1", "egress", "TCP", src, 40000 + i % 20000, dst, 80,
                                rng.random() < 0.7, "allowed: by policy", None, None, None, None))
    return nodes, pods, services, flows


def view() -> dict:
    nodes, pods, services, flows = cluster()
    processes = [model.ProcessState(f"{n['metadata']['name']}/agent", True) for n in nodes]
    seen = model.connections(flows)
    return {"synced": True, "topology": model.topology(nodes, pods, processes, {}),
            "namespaces": [f"ns{n}" for n in range(NAMESPACES)],
            "maps": {f"ns{n}": model.service_map(f"ns{n}", pods, services, seen) for n in range(NAMESPACES)}}


def matrix_of(keys: list[str]) -> dict:
    cells = tuple(Cell(a, b, 80, "TCP", (i + j) % 3 != 0) for i, a in enumerate(keys) for j, b in enumerate(keys))
    where = {key: ("10.244.0.2", "node-1") for key in keys}
    return model.matrix(Matrix(tuple(keys), cells), Matrix(tuple(keys), cells), where)


def test_the_pushed_view_of_300_pods_is_built_quickly():
    started = time.perf_counter()
    built = view()
    seconds = time.perf_counter() - started
    assert sum(len(n["pods"]) for n in built["topology"]["nodes"]) == NAMESPACES * WORKLOADS * REPLICAS
    assert len(built["topology"]["tunnels"]) == NODES * (NODES - 1) // 2
    assert all(len(m["edges"]) > 0 for m in built["maps"].values())
    assert seconds < 1.5, f"{seconds:.2f}s to build the view"


@pytest.mark.skipif(chromium_binary() is None and os.environ.get("CI") != "true",
                    reason="needs chromium (Debian: apt-get install chromium; `make deps` installs it)")
async def test_the_page_draws_30_nodes_and_300_pods_quickly(tmp_path, aiohttp_static_page):
    built = view()
    keys = [n["pods"][0]["key"] for n in built["topology"]["nodes"]] * 2  # 60 pods: a namespace's worth
    keys = [f"{k}-{i}" for i, k in enumerate(keys)]
    browser = await Browser(tmp_path / "profile").start()
    try:
        await browser.open(aiohttp_static_page)
        await browser.wait_for("!document.getElementById('login').hidden", what="the page")
        timings = await browser.evaluate(f"""(() => {{
            ui.who = {{user: "admin", canProbe: true}};
            ui.view = {json.dumps(built)};
            const took = {{}};
            for (const tab of ["topology", "services", "matrix", "journey"]) {{
                const start = performance.now(); showTab(tab); took[tab] = performance.now() - start;
            }}
            ui.matrix = {json.dumps(matrix_of(keys))};
            const start = performance.now(); renderMatrix(); took.matrix = performance.now() - start;
            took.pods = document.querySelectorAll("#topology-svg [data-pod]").length;
            took.cells = document.querySelectorAll("rect.cell").length;
            document.getElementById("login").hidden = true;
            showTab("topology");
            return took;
        }})()""")
        await browser.screenshot(tmp_path / "topology-30-nodes.png")
    finally:
        await browser.close()
    print("render milliseconds:", timings)
    assert timings["pods"] == NAMESPACES * WORKLOADS * REPLICAS and timings["cells"] == len(keys) ** 2
    slowest = max(v for k, v in timings.items() if k not in ("pods", "cells"))
    assert slowest < 1000, timings  # milliseconds for one whole view, on a loaded two-core machine


@pytest.fixture
async def aiohttp_static_page():
    """The UI's page served as `podnet ui` serves it (its own files, no API behind it: it shows the login)."""
    from aiohttp import web

    from podnet.ui.server import STATIC

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static", STATIC)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.174.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.174.1:{port}/"
    finally:
        await runner.cleanup()
