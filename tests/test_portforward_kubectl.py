"""`kubectl port-forward`, the real one, against a cluster of real processes: kubectl's WebSocket (SPDY inside)
ends at the API server, which relays each forwarded connection to the pod's node agent, which connects
to the pod's port. curl on the host reaches the pod; kubectl prints what it prints against kube-apiserver
when the pod's port is closed or the user may not forward."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support.kubectl import KUBECTL_MISSING
from support.local_cluster import AGNHOST, LocalCluster, eventually, pod_on

from podnet import kubeconfig, pki
from podnet.cluster import credentials, kubelet_credentials

pytestmark = pytest.mark.slow

NAMESPACE = "default"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class PortForward:
    """A running `kubectl port-forward`: its output, and its exit once it ends."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.output: list[str] = []

    async def forwarding(self, timeout: float = 20.0) -> None:
        """Waits for kubectl's `Forwarding from 127.0.0.1:...` line."""
        async with asyncio.timeout(timeout):
            while line := await self.process.stdout.readline():
                self.output.append(line.decode())
                if line.startswith(b"Forwarding from 127.0.0.1"):
                    return
        pytest.fail(f"kubectl port-forward did not start: {''.join(self.output)}{await self.stderr()}")

    async def stderr(self) -> str:
        return (await self.process.stderr.read()).decode() if self.process.returncode is not None else ""

    async def finished(self, timeout: float = 20.0) -> tuple[int, str, str]:
        async with asyncio.timeout(timeout):
            out, err = await self.process.communicate()
        return self.process.returncode, "".join(self.output) + out.decode(), err.decode()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


@contextlib.asynccontextmanager
async def port_forward(kubeconfig: Path, *args: str, websockets: bool = True) -> AsyncIterator[PortForward]:
    """`kubectl port-forward ARGS`; without `websockets` kubectl upgrades its connection to SPDY itself, as
    it falls back to doing when the WebSocket upgrade fails."""
    env = {**os.environ, "KUBECTL_PORT_FORWARD_WEBSOCKETS": "true" if websockets else "false"}
    process = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(kubeconfig), "port-forward", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    forward = PortForward(process)
    yield forward
    await forward.stop()


async def curl(url: str, timeout: float = 10.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
    "curl", "-sS", "-m", str(timeout), url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode, (out or err).decode()


async def echo(port: int, payload: bytes) -> bytes:
    """Writes `payload` to the forwarded port and reads as many bytes back (agnhost echoes raw bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    return await asyncio.wait_for(reader.readexactly(len(payload)), 30)
    writer.close()


def viewer_kubeconfig(cluster: LocalCluster, path: Path) -> Path:
    """The admin's server and CA, and a client certificate of the cluster CA for a view-only user."""
    admin = kubeconfig.load(cluster.home / "kubeconfig")
    ca_dir = credentials.pki_dir(cluster.home)
    ca = pki.KeyPair((ca_dir / "ca.crt").read_bytes(), (ca_dir / "ca.key").read_bytes())
    viewer = pki.make_client(ca, "viewer", ["view"], datetime.datetime.now(datetime.UTC))
    path.write_text(kubeconfig.render(admin.server, admin.tls.ca_pem, "viewer", cert_pem=viewer.cert_pem, key_pem=viewer.key_pem))
    return path


def web_pod(name: str, node: str) -> dict:
    pod = pod_on(name, NAMESPACE, node)
    pod["metadata"]["labels"] = {"app": "web"}
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "name": "http"}, {"containerPort": 8080}]
    return pod


WEB_SERVICE = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NAMESPACE},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 8000, "targetPort": "http"}]},
}


@pytest.mark.skipif(KUBECTL_MISSING, reason="kubectl is not on PATH")
async def test_kubectl_port_forward_reaches_virtual_pods(local_cluster, tmp_path):
    cluster = await local_cluster("127.0.90", nodes=2)
    admin, viewer = cluster.home / "kubeconfig", viewer_kubeconfig(cluster, tmp_path / "viewer.kubeconfig")
    await cluster.create(web_pod("web-1", "node-2"), WEB_SERVICE)
    await cluster.wait_running(NAMESPACE, "app=web", 1)

    # pod/x: curl on the host gets the pod's name from its agnhost, through the API server and node-2's agent.
    local = free_port()
    async with port_forward(admin, "pod/web-1", f"{local}:80") as forward:
        await forward.forwarding()
        assert await curl(f"http://127.0.0.1:{local}/hostname") == (0, "web-1")
        # Several connections at once, each its own stream pair and its own TCP into the pod.
        results = await asyncio.gather(*(curl(f"http://127.0.0.1:{local}/hostname") for _ in range(8)))
        assert results == [(0, "web-1")] * 8
        # A megabyte each way, beyond any SPDY window: kubectl does no flow control, nor do we with it.
        payload = os.urandom(1 << 20)
        started = time.monotonic()
        assert await echo(local, payload) == payload
        print(f"1 MiB echoed through port-forward in {time.monotonic() - started:.2f}s")

    # The same over kubectl's SPDY upgrade, the path it falls back to without WebSockets.
    local = free_port()
    async with port_forward(admin, "pod/web-1", f"{local}:80", websockets=False) as forward:
        await forward.forwarding()
        results = await asyncio.gather(*(curl(f"http://127.0.0.1:{local}/hostname") for _ in range(4)))
        assert results == [(0, "web-1")] * 4
        assert await echo(local, payload) == payload

    # Two ports in one kubectl: one session, stream pairs for either port.
    first, second = free_port(), free_port()
    async with port_forward(admin, "pod/web-1", f"{first}:80", f"{second}:8080") as forward:
        await forward.forwarding()
        results = await asyncio.gather(*(curl(f"http://127.0.0.1:{port}/hostname") for port in (first, second, first, second)))
        assert results == [(0, "web-1")] * 4

    # svc/x: kubectl picks the Service's pod and resolves the named targetPort itself.
    local = free_port()
    async with port_forward(admin, "svc/web", f"{local}:8000") as forward:
        await forward.forwarding()
        assert "-> 80" in "".join(forward.output)
        assert await curl(f"http://127.0.0.1:{local}/hostname") == (0, "web-1")

    # A closed port: the agent's refusal reaches kubectl on the error stream; kubectl prints its own line and
    # gives up on the pod, as against a real kubelet.
    local = free_port()
    async with port_forward(admin, "pod/web-1", f"{local}:81") as forward:
        await forward.forwarding()
        code, _ = await curl(f"http://127.0.0.1:{local}/hostname")
        assert code != 0
        returncode, _, stderr = await forward.finished()
    assert returncode == 1
    assert re.search(
        rf"an error occurred forwarding {local} -> 81: error forwarding port 81 to pod [0-9a-f-]+, uid : .*connection refused",
        stderr,
    ), stderr
    assert stderr.rstrip().endswith("error: lost connection to pod"), stderr

    # A view-only user may read the pod but not forward to it.
    local = free_port()
    async with port_forward(viewer, "pod/web-1", f"{local}:80") as forward:
        returncode, _, stderr = await forward.finished()
    assert returncode == 1
    assert stderr.strip().splitlines()[-1] == (
        'error: error upgrading connection: pods "web-1" is forbidden: User "viewer" cannot create resource '
        '"pods/portforward" in API group "" in the namespace "default"'
    ), stderr

    # A pod that does not exist: kubectl's own lookup answers, as against kube-apiserver.
    async with port_forward(admin, "pod/nope", f"{free_port()}:80") as forward:
        returncode, _, stderr = await forward.finished()
    assert (returncode, stderr.strip()) == (1, 'Error from server (NotFound): pods "nope" not found')

    # What kubectl never sends: no upgrade, or a WebSocket without the port-forward subprotocol.
    admin_credentials = kubeconfig.load(admin)
    portforward_url = f"{admin_credentials.server}/api/v1/namespaces/default/pods/web-1/portforward"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=admin_credentials.tls.context())) as session:
        async with session.post(portforward_url) as response:
            body = await response.json()
        assert (response.status, body["reason"]) == (400, "BadRequest") and "Upgrade request required" in body["message"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(portforward_url, protocols=("v4.channel.k8s.io",))
        assert refused.value.status == 403

    # The kubelet API itself (as the API server calls it, with its client certificate) refuses what the
    # kubelet refuses, with a Status the API server could pass on.
    node = await cluster.client.get("nodes", "node-2")
    kubelet = f"https://{cluster.topo.node('node-2').address}:{node['status']['daemonEndpoints']['kubeletEndpoint']['Port']}"
    context = ssl.create_default_context(cafile=str(credentials.ca_file(cluster.home)))
    context.load_cert_chain(*kubelet_credentials.client_files(cluster.home))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for path, code, message in [
            ("/portForward/default/web-1?port=http", 400, 'unable to parse "http" as a port'),
            ("/portForward/default/web-1", 400, 'unable to parse "" as a port'),
            ("/portForward/default/nope?port=80", 404, 'pod "nope" not found on node node-2'),
        ]:
            async with session.get(kubelet + path) as response:
                assert (response.status, (await response.json())["message"]) == (code, message), path

    # The pod's node agent dies under a running port-forward: the next connection cannot reach its kubelet
    # API, and kubectl reports the API server's dial error.
    local = free_port()
    async with port_forward(admin, "pod/web-1", f"{local}:80") as forward:
        await forward.forwarding()
        assert await curl(f"http://127.0.0.1:{local}/hostname") == (0, "web-1")
        cluster.kill("node-2/agent")
        await cluster.wait_dead("node-2/agent")
        assert (await curl(f"http://127.0.0.1:{local}/hostname"))[0] != 0
        returncode, _, stderr = await forward.finished()
    assert returncode == 1
    dial_error = rf"error dialing backend: dial tcp {re.escape(cluster.topo.node('node-2').address)}:\d+: connect: connection refused"
    assert re.search(rf"an error occurred forwarding {local} -> 80: error forwarding port 80: {dial_error}", stderr), stderr
    # A new port-forward to that node fails at once: the API server dials the kubelet before it upgrades.
    async with port_forward(admin, "pod/web-1", f"{free_port()}:80") as forward:
        returncode, _, stderr = await forward.finished()
    assert returncode == 1
    assert re.fullmatch(rf"error: error upgrading connection: {dial_error}", stderr.strip().splitlines()[-1]), stderr


@pytest.mark.root
@pytest.mark.skipif(KUBECTL_MISSING, reason="kubectl is not on PATH")
async def test_kubectl_port_forward_reaches_a_netns_pods_localhost(local_cluster):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    cluster = await local_cluster("127.0.91", nodes=1)
    admin = cluster.home / "kubeconfig"
    await cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "www", "namespace": NAMESPACE},
                          "data": {"index.html": "served from inside the pod\n"}})
    # The server listens on the pod's localhost only: nothing but a connection made inside the pod's
    # network namespace reaches it, which is what the kubelet's port-forward does.
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "py", "namespace": NAMESPACE, "annotations": {"podnet.io/pod-mode": "netns"}},
        "spec": {"nodeName": "node-1", "volumes": [{"name": "www", "configMap": {"name": "www"}}], "containers": [{
            "name": "main", "image": AGNHOST, "command": ["python3"],
            "args": ["-m", "http.server", "8080", "--bind", "127.0.0.1", "--directory", "/www"],
            "volumeMounts": [{"name": "www", "mountPath": "/www"}],
        }]},
    }
    await cluster.create(pod)
    await cluster.wait_running(NAMESPACE, None, 1)
    answers: list[tuple[int, str]] = []

    async def served() -> bool:
        # Until python3 listens a connection is refused, and kubectl gives up on the pod: start it anew.
        local = free_port()
        async with port_forward(admin, "pod/py", f"{local}:8080") as forward:
            await forward.forwarding()
            answers.append(await curl(f"http://127.0.0.1:{local}/"))
        return answers[-1] == (0, "served from inside the pod\n")

    await eventually(served, 30, "the pod's http.server answers through port-forward", interval=0.5)

    # Nothing listens on 8081 inside the pod: containerd's words for it, in kubectl's error line (klog quotes it).
    local = free_port()
    async with port_forward(admin, "pod/py", f"{local}:8081") as forward:
        await forward.forwarding()
        assert (await curl(f"http://127.0.0.1:{local}/"))[0] != 0
        returncode, _, stderr = await forward.finished()
    assert returncode == 1
    assert re.search(
        rf'an error occurred forwarding {local} -> 8081: error forwarding port 8081 to pod [0-9a-f-]+, uid : failed to '
        r'execute portforward in network namespace \\"/run/netns/[^"\\]+\\": failed to connect to localhost:8081 inside '
        r"namespace, IPv4: dial tcp4 127.0.0.1:8081: connect: connection refused",
        stderr,
    ), stderr
