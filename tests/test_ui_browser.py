"""The web UI in a real browser: a three-node cluster with the demo app, started as `podnet up` starts it
(the UI one more supervised process), and headless Chromium driven through the DevTools protocol, clicking
and typing as a person would. What the page shows is held to what the CLI prints for the same question:
`podnet matrix -o json`, `podnet explain`, `podnet trace`.

Screenshots of each view are written under the test's tmp dir, and also into $PODNET_SCREENSHOTS when set
(`PODNET_SCREENSHOTS=docs/ui` refreshes the README's).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from support.browser import Browser, chromium_binary
from support.local_cluster import LocalCluster

from podnet.cli.resources import apply_object
from podnet.cluster import credentials, demo
from podnet.cluster.supervisor import ClusterState

PREFIX = "127.0.170"
GRACE = 6.0  # the node grace period: how soon a silent node is NotReady

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_binary() is None and os.environ.get("CI") != "true",
                       reason="needs chromium (Debian: apt-get install chromium; `make deps` installs it)"),
]


def podnet(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PODNET_HOME=str(cluster.home), KUBECONFIG=str(cluster.home / "kubeconfig"))
    return subprocess.run([sys.executable, "-m", "podnet", *args], capture_output=True, text=True, env=env, timeout=120)


async def run(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(podnet, cluster, *args)


class Shots:
    def __init__(self, browser: Browser, directory: Path):
        self.browser, self.directory = browser, directory
        self.extra = Path(os.environ["PODNET_SCREENSHOTS"]) if os.environ.get("PODNET_SCREENSHOTS") else None

    async def take(self, name: str) -> None:
        await asyncio.sleep(0.3)  # the last view pushed is drawn
        path = await self.browser.screenshot(self.directory / f"{name}.png")
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.extra / path.name)


async def log_in(browser: Browser, token: str) -> str:
    """Types the token into the login form and submits it; the message the form then shows ("" when in)."""
    await browser.wait_for("!document.getElementById('login').hidden", what="the login form")
    await browser.type("#token", token)
    await browser.click("#login-form button")
    return await browser.wait_for(
        "document.getElementById('login').hidden ? 'in' : document.getElementById('login-error').textContent",
        what="an answer to the login")


async def apply_demo(cluster: LocalCluster) -> dict[str, list[dict]]:
    """The demo app (deploy/demo/) applied and Running; shop's pods by workload."""
    objects = demo.load_objects()
    for obj in objects:
        await apply_object(cluster.client, obj, None)
    wanted = demo.replicas(objects)
    await demo.wait_for_pods(cluster.client, demo.per_namespace(wanted))
    await demo.wait_for_endpoints(cluster.client, "shop", "backend", wanted["shop", "backend"])
    pods: dict[str, list[dict]] = {}
    for pod in await cluster.running_pods("shop"):
        pods.setdefault(pod["metadata"]["labels"]["app"], []).append(pod)
    return pods


def key(pod: dict) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


async def test_the_web_ui_shows_the_cluster_live(local_cluster, tmp_path):
    cluster = await local_cluster(PREFIX, nodes=3, node_grace_period=GRACE)
    shop = await apply_demo(cluster)
    url = f"{cluster.topo.ui_url}/"
    browser = await Browser(tmp_path / "profile").start()
    shots = Shots(browser, tmp_path / "screenshots")
    try:
        # No token, a token the API server does not know: no way in, and nothing answers without a session.
        await browser.open(url)
        assert await log_in(browser, "") == "login refused: a bearer token is needed"
        assert await log_in(browser, "not-a-token") == "login refused: the API server does not accept this token"
        async with aiohttp.ClientSession() as session:
            for path in ("/api/events", "/api/whoami", "/api/matrix?namespace=shop"):
                async with session.get(f"{cluster.topo.ui_url}{path}") as response:
                    assert response.status == 401, path
            # A form on another site cannot post a login: a POST body must be JSON, which needs CORS.
            admin = credentials.user_token(cluster.home, credentials.ADMIN_USER)
            async with session.post(f"{cluster.topo.ui_url}/api/login", data={"token": admin}) as response:
                assert response.status == 415 and "podnet_ui" not in response.cookies
        await shots.take("login")

        # The viewer sees everything, read-only: no probe or trace, and the server refuses them too.
        assert await log_in(browser, credentials.user_token(cluster.home, credentials.VIEWER_USER)) == "in"
        assert await browser.wait_for("document.getElementById('who').textContent") == "viewer (read-only)"
        await browser.wait_for("document.querySelectorAll('g.node').length === 3", what="three nodes")
        assert await browser.evaluate("[...document.querySelectorAll('.probe')].every((b) => b.hidden)")
        refused = await browser.evaluate("""fetch('/api/trace', {method: 'POST', headers: {'Content-Type':
            'application/json'}, body: JSON.stringify({src: 'shop/x', destination: '10.244.0.1', port: '80'})})
            .then(async (r) => [r.status, (await r.json()).message])""")
        assert refused[0] == 403 and "create pods/exec" in refused[1]
        await browser.click("#logout")
        await browser.wait_for("!document.getElementById('login').hidden", what="logged out")

        # The administrator: the three nodes with their addresses and podCIDRs, every pod on its node.
        assert await log_in(browser, credentials.user_token(cluster.home, credentials.ADMIN_USER)) == "in"
        nodes = await browser.wait_for("""(() => { const found = [...document.querySelectorAll('g.node')];
            return found.length === 3 && found.map((g) => [g.dataset.node, g.dataset.ready, g.textContent]); })()""",
                                       what="three nodes")
        for (name, ready, text), spec in zip(nodes, cluster.topo.nodes, strict=True):
            assert (name, ready) == (spec.name, "true") and spec.address in text
            node = await cluster.client.get("nodes", name)
            assert node["spec"]["podCIDR"] in text
        shown = set(await browser.evaluate("[...document.querySelectorAll('[data-pod]')].map((p) => p.dataset.pod)"))
        assert {key(p) for pods in shop.values() for p in pods} <= shown
        await shots.take("topology")

        # The shop's service map: an allowed edge frontend -> backend once a frontend reached a backend, and a
        # red edge frontend -> database once a frontend tried the database.
        await browser.click("#tabs button[data-tab=services]")
        # A frontend with a backend on another node, whose journey crosses the overlay (three nodes, two of
        # each, spread by the scheduler).
        frontend, remote = next((f, b) for f in shop["frontend"] for b in shop["backend"]
                                if f["spec"]["nodeName"] != b["spec"]["nodeName"])
        backend, database = shop["backend"][0], shop["database"][0]
        assert await cluster.probe(frontend, backend["status"]["podIP"], 8080, timeout=2.0)
        edge = "g.edge[data-from='shop/frontend'][data-to='{}']"
        await browser.wait_for(f"document.querySelector(\"{edge.format('shop/backend')}\")?.dataset.verdict === 'allowed'",
                               what="an allowed edge frontend -> backend")
        assert not await browser.evaluate(f"!!document.querySelector(\"{edge.format('shop/database')}\")")
        assert not await cluster.probe(frontend, database["status"]["podIP"], 5432, timeout=1.0)
        await browser.wait_for(f"document.querySelector(\"{edge.format('shop/database')}\")?.dataset.verdict === 'denied'",
                               what="a red edge frontend -> database")
        await browser.click(f"{edge.format('shop/database')} text")
        panel = await browser.wait_for("document.getElementById('edge-panel').textContent", what="the edge's flows")
        assert "1 denied" in panel and "egress denied" in panel and "shop/default-deny" in panel
        await shots.take("service-map")

        # The matrix, probed from the page, cell for cell what `podnet matrix -o json` probes; a click on a
        # cell tells the rule that decides it, as `podnet explain` does.
        for _ in range(5):  # the policies reach the agents by watch: until probes and policies agree
            cli = await run(cluster, "matrix", "-n", "shop", "-p", "80", "-p", "8080", "-p", "5432", "-o", "json")
            if cli.returncode == 0:
                break
            await asyncio.sleep(1.0)
        assert cli.returncode == 0, cli.stderr
        expected = {(c["from"], c["to"], c["port"], c["protocol"]): c["allowed"] for c in json.loads(cli.stdout)["cells"]}
        await browser.click("#tabs button[data-tab=matrix]")
        await browser.type("#matrix-ports", "80,8080,5432")
        await browser.click("#matrix-probe")
        await browser.wait_for("document.body.dataset.matrix === 'probed'", timeout=60, what="the probed matrix")
        cells = await browser.evaluate("""[...document.querySelectorAll('rect.cell')].map((c) =>
            [c.dataset.from, c.dataset.to, Number(c.dataset.port), c.dataset.protocol, c.dataset.probed])""")
        assert {(f, t, port, protocol): probed == "true" for f, t, port, protocol, probed in cells} == expected
        target = f"rect.cell[data-from='{key(frontend)}'][data-to='{key(backend)}'][data-port='8080']"
        await browser.click(target)
        await browser.wait_for("!!document.getElementById('explain-verdict')", what="the explanation")
        rules = await browser.evaluate("""Object.fromEntries([...document.querySelectorAll('#explain-panel .rule')]
            .map((r) => [r.dataset.direction, [r.children[1].textContent, r.querySelector('.deciding')?.textContent]]))""")
        explained = await run(cluster, "explain", key(frontend), f"{key(backend)}:8080")
        assert explained.returncode == 0, explained.stderr
        said = dict(re.findall(r"^  (egress|ingress) at \S+: (.*)$", explained.stdout, re.MULTILINE))
        assert {direction: reason for direction, (reason, _) in rules.items()} == said
        assert rules["egress"][1] == "shop/frontend-to-backend · egress rule 0"
        assert rules["ingress"][1] == "shop/backend-from-frontend · ingress rule 0"
        await shots.take("matrix")

        # A denied cell explained: the egress side denies it, no rule of the frontend's policies allowing it;
        # its button traces that connection, drawn as `podnet trace` prints it, dropped at the egress policy.
        await browser.click(f"rect.cell[data-from='{key(frontend)}'][data-to='{key(database)}'][data-port='5432']")
        await browser.wait_for(f"""document.querySelector('#explain-panel h3')?.textContent.includes('{key(database)}')
            && !!document.getElementById('trace-cell')""", what="the denied cell's explanation")
        denied = await browser.evaluate("""[document.getElementById('explain-verdict').textContent,
            document.querySelector("#explain-panel .rule[data-direction=egress]").textContent]""")
        explained = await run(cluster, "explain", key(frontend), f"{key(database)}:5432")
        said = dict(re.findall(r"^  (egress|ingress) at \S+: (.*)$", explained.stdout, re.MULTILINE))
        assert denied[0] == "denied" and denied[1] == f"egress: denied{said['egress']}", (denied, explained.stdout)
        await browser.click("#trace-cell")
        await browser.wait_for("document.body.dataset.journey === 'done'", timeout=30, what="the cell's trace")
        drawn = await browser.evaluate("[...document.querySelectorAll('g.stage')].map((s) => s.dataset.stage)")
        printed = await run(cluster, "trace", key(frontend), f"{key(database)}:5432")
        assert drawn == re.findall(r"^\s*\d+\. (\S+)", printed.stdout, re.MULTILINE), printed.stdout
        assert "egress-policy" in drawn and "vxlan-encap" not in drawn

        # A packet's journey to a backend on another node: the stages `podnet trace` prints, in its order.
        await browser.click("#tabs button[data-tab=journey]")
        await browser.evaluate(f"document.getElementById('journey-src').value = {json.dumps(key(frontend))}")
        await browser.type("#journey-dst", key(remote))
        await browser.type("#journey-port", "8080")
        await browser.click("#journey-run")
        await browser.wait_for("document.body.dataset.journey === 'done'", timeout=30, what="the trace")
        drawn = await browser.evaluate("[...document.querySelectorAll('g.stage')].map((s) => [s.dataset.stage, s.dataset.node])")
        printed = await run(cluster, "trace", key(frontend), f"{key(remote)}:8080", "--bytes")
        assert printed.returncode == 0, printed.stderr
        stages = re.findall(r"^\s*\d+\. (\S+)", printed.stdout, re.MULTILINE)
        assert [stage for stage, _ in drawn] == stages
        assert {node for _, node in drawn} == {frontend["spec"]["nodeName"], remote["spec"]["nodeName"]}
        assert "vxlan-encap" in stages and stages[-1] == "result"
        # Opened, the encapsulation shows the packet as Wireshark would: the nodes' addresses outside, the
        # pods' inside; `podnet trace --bytes` prints the same layers under the stage.
        address = {spec.name: spec.address for spec in cluster.topo.nodes}
        outer = (address[frontend["spec"]["nodeName"]], address[remote["spec"]["nodeName"]])
        inner = (frontend["status"]["podIP"], remote["status"]["podIP"])
        await browser.click("g.stage[data-stage=vxlan-encap]")
        assert "vxlan-encap" in await browser.wait_for("document.getElementById('stage-panel').textContent")
        shown = await browser.wait_for("""(() => {
            const layers = [...document.querySelectorAll('#stage-panel .layer')];
            const fields = (layer) => Object.fromEntries([...layer.querySelectorAll('tr')]
                .map((row) => [row.querySelector('th').textContent, row.querySelector('td').textContent]));
            return layers.length > 0 && layers.map((layer) => [layer.dataset.protocol, fields(layer)]); })()""",
                                       what="the packet's layers")
        assert [protocol for protocol, _ in shown][:6] == ["ip", "udp", "vxlan", "eth", "ip", "tcp"]
        (_, outer_ip), (_, inner_ip) = [layer for layer in shown if layer[0] == "ip"]
        assert (outer_ip["Source Address"], outer_ip["Destination Address"]) == outer
        assert (inner_ip["Source Address"], inner_ip["Destination Address"]) == inner
        assert shown[2][1]["VXLAN Network Identifier (VNI)"] == "1" and shown[5][1]["Destination Port"] == "8080"
        hex_pane = await browser.evaluate("document.querySelector('#stage-panel pre.hex').textContent")
        assert hex_pane.startswith("0000  45 00")
        encap_lines = printed.stdout.split(" vxlan-encap ", 1)[1].splitlines()
        assert f"Internet Protocol Version 4, Src: {outer[0]}, Dst: {outer[1]}" in encap_lines[1]
        assert f"Internet Protocol Version 4, Src: {inner[0]}, Dst: {inner[1]}" in "\n".join(encap_lines[1:8])
        await shots.take("journey")

        # node-2's agent dies: within the grace period the page shows node-2 NotReady, its pods greyed; it
        # comes back after `podnet start`.
        # Each tunnel with its packet rate each way, from the sending agent's count of what it sent the other.
        await browser.click("#tabs button[data-tab=topology]")
        tunnels = await browser.wait_for("""(() => { const found = [...document.querySelectorAll('path[data-tunnel]')];
            return found.length === 3 && found.every((t) => t.dataset.rateAb !== '' && t.dataset.rateBa !== '') &&
                found.map((t) => [t.dataset.tunnel, Number(t.dataset.rateAb), Number(t.dataset.rateBa)]); })()""",
                                         timeout=15, what="every tunnel's rates")
        assert sorted(name for name, _, _ in tunnels) == ["node-1~node-2", "node-1~node-3", "node-2~node-3"]
        assert all(ab >= 0 and ba >= 0 for _, ab, ba in tunnels)
        labels = await browser.evaluate("[...document.querySelectorAll('.tunnel-label')].map((t) => t.textContent)")
        assert len(labels) == 3 and all(re.search(r"node-\d → [\d.]+/s · node-\d → [\d.]+/s$", text) for text in labels)
        assert (await run(cluster, "kill", "node-2/agent")).returncode == 0
        await browser.wait_for("document.querySelector('g.node[data-node=node-2] .node-agent').textContent"
                               ".startsWith('agent stopped')", what="the agent shown stopped")
        # A process that is there but does not answer its health check: unhealthy, then running again.
        assert (await run(cluster, "kill", "dns", "--signal", "STOP")).returncode == 0
        try:
            await browser.wait_for("document.querySelector('[data-process=dns]').textContent === 'dns unhealthy'",
                                   what="the stopped DNS shown unhealthy")
        finally:
            assert (await run(cluster, "kill", "dns", "--signal", "CONT")).returncode == 0
        node2 = "g.node[data-node=node-2]"
        await browser.wait_for(f"""document.querySelector("{node2}").dataset.ready === 'false' &&
            [...document.querySelectorAll("{node2} [data-pod]")].every((p) => p.dataset.greyed === 'true')""",
                               timeout=GRACE + 10, what="node-2 NotReady with its pods greyed")
        await browser.wait_for("document.querySelector('[data-process=dns]').textContent === 'dns running'",
                               what="the DNS healthy again")
        await shots.take("topology-node-down")
        started = await run(cluster, "start", "node-2/agent")
        # The CLI recorded the new process in cluster.json: the fixture stops it from there at the end.
        restarted = ClusterState.load(cluster.home).process("node-2/agent")
        agent = cluster.process("node-2/agent")
        agent.pid, agent.pid_start = restarted.pid, restarted.pid_start
        assert started.returncode == 0, started.stderr
        await browser.wait_for(f"""document.querySelector("{node2}").dataset.ready === 'true' &&
            [...document.querySelectorAll("{node2} [data-pod]")].some((p) => p.dataset.greyed === 'false')""",
                               timeout=30, what="node-2 Ready again")
    finally:
        await browser.close()
