"""`kubectl exec` and `kubectl logs`, the real kubectl with the kubeconfig `podnet up` wrote, through the API
server to the pods' node agents: virtual pods running the agnhost probes of Kubernetes' NetworkPolicy e2e
suite, and a netns pod running a real program (root).
"""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.kubectl import Kubectl
from support.local_cluster import deployment, eventually, pod_on, service

from podnet import kubeconfig
from podnet.cluster import credentials, kubelet_credentials
from podnet.netns.names import namespace_name

pytestmark = pytest.mark.slow

DENY_BACKEND_INGRESS = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "backend-deny", "namespace": "shop"},
    "spec": {"podSelector": {"matchLabels": {"app": "backend"}}, "policyTypes": ["Ingress"]},
}


async def _shop(cluster) -> tuple[str, str]:
    await cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                         deployment("frontend", "shop", 1, 80), deployment("backend", "shop", 1, 8080),
                         service("backend", "shop", 8080))
    frontend = (await cluster.wait_running("shop", "app=frontend", 1))[0]["metadata"]["name"]
    backend = (await cluster.wait_running("shop", "app=backend", 1))[0]["metadata"]["name"]
    await eventually(lambda: cluster.ready_endpoints("shop", "backend"), 20, "backend endpoints")
    return frontend, backend


async def test_kubectl_exec_and_logs_in_virtual_pods(local_cluster, tmp_path):
    cluster = await local_cluster("127.0.85", nodes=2)
    kubectl = Kubectl(cluster.home)
    frontend, backend = await _shop(cluster)

    # The e2e harness's probe: agnhost connect exits 0 when the connection opens (deploy/ picks the pod).
    async def connects() -> bool:
        done = await kubectl.arun("exec", "-n", "shop", "deploy/frontend", "--", "/agnhost", "connect",
                                  "backend:8080", "--timeout=1s", "--protocol=tcp")
        return done.returncode == 0

    await eventually(connects, 30, "frontend connects to backend:8080")
    local = await kubectl.arun("exec", "-n", "shop", frontend, "--", "/agnhost", "connect", "localhost:80", "--timeout=1s")
    assert local.returncode == 0, local  # the pod's own port, as its /etc/hosts names it
    served = await kubectl.arun("exec", "-n", "shop", frontend, "--", "http", "http://backend:8080/hostname")
    assert served.returncode == 0 and served.stdout == f"{backend}\n", served
    curled = await kubectl.arun("exec", "-n", "shop", frontend, "--", "curl", "-sS", "-m", "2", "backend:8080/hostname")
    assert curled.returncode == 0 and curled.stdout == backend, curled
    fetched = await kubectl.arun("exec", "-n", "shop", frontend, "--", "wget", "-qO-", "--timeout=2", "backend:8080/hostname")
    assert fetched.returncode == 0 and fetched.stdout == backend, fetched

    # The backend's access log names the request, as agnhost netexec logs it.
    logs = await kubectl.arun("logs", "-n", "shop", "deploy/backend")
    assert logs.returncode == 0 and "GET /hostname" in logs.stdout.splitlines(), logs
    stamped = await kubectl.arun("logs", "-n", "shop", backend, "--tail=1", "--timestamps")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z GET /hostname\n", stamped.stdout), stamped
    previous = await kubectl.arun("logs", "-n", "shop", backend, "--previous")
    assert previous.returncode == 1
    assert previous.stderr.strip() == (f'Error from server (BadRequest): previous terminated container "backend" '
                                       f'in pod "{backend}" not found')

    # A NetworkPolicy denying the backend's ingress makes the same probe fail, with agnhost's TIMEOUT.
    await cluster.create(DENY_BACKEND_INGRESS)

    async def denied() -> subprocess.CompletedProcess | None:
        done = await kubectl.arun("exec", "-n", "shop", frontend, "--", "/agnhost", "connect", "backend:8080",
                                  "--timeout=1s", "--protocol=tcp")
        return done if done.returncode != 0 else None

    refused = await eventually(denied, 30, "the policy denies frontend -> backend")
    assert refused.returncode == 1 and refused.stderr == "TIMEOUT\ncommand terminated with exit code 1\n", refused

    # Bad requests get kube-apiserver's answers and kubectl's own lines.
    unknown = await kubectl.arun("exec", "-n", "shop", frontend, "-c", "nope", "--", "hostname")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == f"Error from server (BadRequest): container nope is not valid for pod {frontend}"
    missing = await kubectl.arun("exec", "-n", "shop", "nope", "--", "hostname")
    assert missing.returncode == 1 and missing.stderr.strip() == 'Error from server (NotFound): pods "nope" not found'
    spdy = await kubectl.arun("create", "--raw", f"/api/v1/namespaces/shop/pods/{frontend}/exec?command=hostname",
                              "-f", "/dev/null")  # a POST without the upgrade, as kubectl's SPDY retry
    assert spdy.returncode == 1 and spdy.stderr.startswith("Error from server (BadRequest): Upgrade request required")
    no_program = await kubectl.arun("exec", "-n", "shop", frontend, "--", "bash")
    assert no_program.returncode == 127 and 'exec: "bash": executable file not found in $PATH' in no_program.stderr

    # A view-only user may read logs but not exec.
    viewer = ("victor", ("view",))
    forbidden = await kubectl.arun("exec", "-n", "shop", frontend, "--", "hostname", user=viewer)
    assert forbidden.returncode == 1
    assert forbidden.stderr.strip() == (
        f'Error from server (Forbidden): pods "{frontend}" is forbidden: User "victor" cannot create resource '
        f'"pods/exec" in API group "" in the namespace "shop"')
    assert (await kubectl.arun("logs", "-n", "shop", backend, user=viewer)).returncode == 0

    # Only the API server (and cluster administrators) may use a node's kubelet API: TLS with a client
    # certificate from the cluster CA, its key its owner's alone.
    node_name = (await cluster.client.get("pods", backend, "shop"))["spec"]["nodeName"]
    node = await cluster.client.get("nodes", node_name)
    kubelet_port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    assert kubelet_port == {"node-1": 10252, "node-2": 10262}[node_name]
    for path in (*kubelet_credentials.client_files(cluster.home), *kubelet_credentials.serving_files(cluster.home)):
        assert path.stat().st_mode & 0o077 == 0, path
    url = f"https://{cluster.topo.node(node_name).address}:{kubelet_port}/containerLogs/shop/{backend}/backend"
    ca = str(credentials.ca_file(cluster.home))

    def kubelet_get(certificate: tuple[Path, Path] | None) -> int:
        context = ssl.create_default_context(cafile=ca)
        if certificate is not None:
            context.load_cert_chain(*certificate)
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert await asyncio.to_thread(kubelet_get, kubelet_credentials.client_files(cluster.home)) == 200
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        await asyncio.to_thread(kubelet_get, None)  # no certificate: no TLS session
    viewer_kubeconfig = kubeconfig.load(kubectl.kubeconfig_of(*viewer))
    viewer_files = (tmp_path / "viewer.crt", tmp_path / "viewer.key")
    viewer_files[0].write_bytes(viewer_kubeconfig.tls.cert_pem)
    viewer_files[1].write_bytes(viewer_kubeconfig.tls.key_pem)
    assert await asyncio.to_thread(kubelet_get, viewer_files) == 403

    # logs -f follows new lines and ends when the pod is deleted.
    await cluster.create(pod_on("lone", "shop", "node-2", 8080))
    lone = (await cluster.wait_running("shop", "role=lone", 1))[0]
    follower = kubectl.popen("logs", "-f", "-n", "shop", "lone")
    try:
        await asyncio.sleep(1.0)
        hit = await kubectl.arun("exec", "-n", "shop", frontend, "--", "http",
                                 f"http://{lone['status']['podIP']}:8080/echo?msg=followed")
        assert hit.returncode == 0 and hit.stdout == "followed\n", hit
        await asyncio.sleep(1.0)
        await cluster.client.delete("pods", "lone", "shop")
        out, err = await asyncio.to_thread(follower.communicate, timeout=20)
    finally:
        if follower.poll() is None:
            follower.send_signal(signal.SIGKILL)
    assert follower.returncode == 0, err
    assert out.decode().splitlines() == ["GET /echo?msg=followed"]

    # A Job's virtual pod runs its probe command; its log is what the command wrote, each time it ran (port 81
    # is not served: refused, and under OnFailure run again in the same pod).
    target = (await cluster.client.get("pods", frontend, "shop"))["status"]["podIP"]
    await cluster.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "probe", "namespace": "shop"},
                          "spec": {"backoffLimit": 6, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [
                              {"name": "probe", "image": "busybox",
                               "command": ["/agnhost", "connect", f"{target}:81", "--timeout=1s"]}]}}}})

    async def refused_twice() -> str | None:
        logged = await kubectl.arun("logs", "-n", "shop", "job/probe")
        return logged.stdout if logged.returncode == 0 and logged.stdout.count("REFUSED\n") >= 2 else None

    logged = await eventually(refused_twice, 30, "the probe's log")
    assert set(logged.splitlines()) == {"REFUSED"}
    (pod,) = (await cluster.client.list("pods", "shop", label_selector="job-name=probe"))["items"]
    assert pod["status"]["phase"] == "Running" and pod["status"]["containerStatuses"][0]["restartCount"] >= 1

    # Not only a Job's pod: one that may end runs its command too. The check users copy into CI, a probe in a
    # pod of its own that prints what it got, is deleted, and ends kubectl with its exit code: it reaches the
    # frontend, and the backend's policy still denies it.
    async def probe(name: str, url: str) -> subprocess.CompletedProcess:
        return await kubectl.arun("run", "-n", "shop", "-i", "--rm", "--restart=Never", name, "--image=busybox", "--",
                                  "wget", "-qO-", "-T", "2", url)

    reached = await probe("probe-frontend", f"http://{target}:80/hostname")
    assert (reached.returncode, reached.stdout) == (0, f'{frontend}\npod "probe-frontend" deleted\n'), reached
    denied_probe = await probe("probe-backend", "http://backend:8080/hostname")
    assert denied_probe.returncode == 1 and denied_probe.stdout == 'pod "probe-backend" deleted\n', denied_probe
    assert "pod shop/probe-backend terminated (Error)" in denied_probe.stderr, denied_probe
    names = {p["metadata"]["name"] for p in (await cluster.client.list("pods", "shop"))["items"]}
    assert not names & {"probe-frontend", "probe-backend"}, names


@pytest.mark.root
async def test_kubectl_exec_and_logs_in_a_netns_pod(local_cluster):
    cluster = await local_cluster("127.0.86", nodes=1)
    kubectl = Kubectl(cluster.home)
    talker = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "talker", "namespace": "default", "labels": {"role": "talker"},
                     "annotations": {"podnet.io/pod-mode": "netns"}},
        "spec": {"containers": [{"name": "talk", "image": "busybox", "command": [
            "sh", "-c", "echo started; echo warning >&2; read line < /dev/null; sleep 1.5; echo ending; exit 3"]}]},
    }
    await cluster.create(talker)
    await cluster.wait_running("default", "role=talker", 1)
    # logs -f follows the running instance to its end, its last line included.
    follower = kubectl.popen("logs", "-f", "talker")
    try:
        out, err = await asyncio.to_thread(follower.communicate, timeout=20)
    finally:
        if follower.poll() is None:
            follower.send_signal(signal.SIGKILL)
    assert follower.returncode == 0 and out.decode().splitlines() == ["started", "warning", "ending"], (out, err)

    # The real program runs in the pod's namespace: its address, its stdin, its exit code.
    address = await kubectl.arun("exec", "talker", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    pod_ip = (await cluster.client.get("pods", "talker", "default"))["status"]["podIP"]
    assert address.returncode == 0 and f"inet {pod_ip}/24" in address.stdout, address
    echoed = await kubectl.arun("exec", "-i", "talker", "--", "tr", "a-z", "A-Z", input=b"through stdin\n")
    assert echoed.returncode == 0 and echoed.stdout == "THROUGH STDIN\n", echoed
    failed = await kubectl.arun("exec", "talker", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert failed.returncode == 3 and failed.stdout == "out\n"
    assert failed.stderr == "err\ncommand terminated with exit code 3\n"

    # -t: a terminal of the size kubectl's own terminal has.
    terminal = await asyncio.to_thread(
        kubectl.in_terminal, "stty cols 100 rows 30; $KUBECTL exec -it talker -- sh -c 'tty; stty size'")
    lines = terminal.stdout.replace("\r", "").split("\n")
    assert terminal.returncode == 0 and re.fullmatch(r"/dev/pts/\d+", lines[0]) and lines[1] == "30 100", terminal

    # Logs: stdout and stderr of the container; after it exits and restarts, --previous has the whole run.
    # (A container that has just been restarted has written nothing yet: its log is empty for a moment.)
    async def logged() -> bool:
        first = await kubectl.arun("logs", "talker")
        return first.returncode == 0 and first.stdout.startswith("started\nwarning\n")

    await eventually(logged, 10, "the container's lines in its log")

    async def restarted() -> bool:
        pod = await cluster.client.get("pods", "talker", "default")
        return (pod["status"]["containerStatuses"][0].get("restartCount") or 0) >= 1

    await eventually(restarted, 20, "the container restarts")
    previous = await kubectl.arun("logs", "talker", "--previous", "--timestamps")
    lines = previous.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["started", "warning", "ending"], previous
    times = [time.mktime(time.strptime(line.split(".")[0], "%Y-%m-%dT%H:%M:%S")) for line in lines]
    assert times[2] - times[0] >= 1, previous  # each line stamped when it was written


def _job(name: str, command: list[str], *, netns: bool = False) -> dict:
    template: dict = {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "busybox", "command": command}]}}
    if netns:
        template["metadata"] = {"annotations": {"podnet.io/pod-mode": "netns"}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": {"backoffLimit": 0, "template": template}}


@pytest.mark.root
async def test_kubectl_logs_of_pods_that_ended_until_they_are_deleted(local_cluster):
    """A Job's pods end, their network goes, and `kubectl logs job/...` still shows what they wrote (a
    netns pod's program, a virtual pod's command), as a kubelet keeps a finished container's log; once the
    pods are deleted the logs go too."""
    cluster = await local_cluster("127.0.251", nodes=1)
    kubectl = Kubectl(cluster.home)
    await cluster.create(_job("said", ["sh", "-c", "echo done; sleep 0.2; echo and said so >&2"], netns=True),
                         _job("named", ["hostname"]))
    for job in ("said", "named"):
        waited = await kubectl.arun("wait", "--for=condition=complete", f"job/{job}", "--timeout=60s")
        assert waited.returncode == 0, waited
    pods = {p["metadata"]["labels"]["job-name"]: p["metadata"]["name"]
            for p in (await cluster.client.list("pods", "default"))["items"]}
    netns = namespace_name(cluster.topo.nodes[0].name, "default", pods["said"])
    # The agent takes an ended pod's network down once it has seen it end, a moment after the Job has.
    await eventually(lambda: _netns_gone(netns), 20, "the ended pod's network namespace removed")
    said = await kubectl.arun("logs", "job/said")
    assert said.returncode == 0 and said.stdout == "done\nand said so\n", said
    named = await kubectl.arun("logs", "job/named")
    assert named.returncode == 0 and named.stdout == f"{pods['named']}\n", named
    followed = await kubectl.arun("logs", "-f", pods["said"])  # an ended container's log has its end
    assert followed.returncode == 0 and followed.stdout == said.stdout, followed

    deleted = await kubectl.arun("delete", "pods", pods["said"], pods["named"])
    assert deleted.returncode == 0, deleted
    await eventually(lambda: _logs_gone(cluster.home, netns), 20, "the deleted pod's logs removed")
    gone = await kubectl.arun("logs", pods["said"])
    assert gone.returncode == 1 and gone.stderr == (f'error: error from server (NotFound): pods "{pods["said"]}" not '
                                                    'found in namespace "default"\n'), gone


async def _netns_gone(netns: str) -> bool:
    return netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


async def _logs_gone(home: Path, netns: str) -> bool:
    return next(home.rglob(netns), None) is None
