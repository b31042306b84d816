"""The reference plugins chained after podnet-cni doing their real work on netns pods from the API: Debian's
`portmap` makes a pod's hostPort answer on its node's address, `bandwidth` shapes what reaches a pod with
an ingress-bandwidth annotation (iperf3 measures it), and a restarted agent keeps its attachments."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support.local_cluster import eventually

from podnet.netns.ip import namespace_pids
from podnet.netns.names import namespace_name
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcError

pytestmark = [pytest.mark.root, pytest.mark.slow]

# hostPorts are for privileged namespaces only (Pod Security's baseline level refuses them).
NAMESPACE = "edge"
PRIVILEGED = {"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}


# Each test's cluster has a pod network of its own: the host's routes to pod addresses (portmap's path)
# are one table for every cluster on this machine.


def netns_pod(name: str, node: str, command: list[str], *, ports: list[dict] | None = None,
              annotations: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name},
                         "annotations": {"podnet.io/pod-mode": "netns", **(annotations or {})}},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox", "command": command,
                                                       "ports": ports or []}]}}


async def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, list(argv), capture_output=True, text=True, timeout=timeout)


async def test_a_host_port_answers_on_the_nodes_address_through_portmap(local_cluster):
    cluster = await local_cluster("127.0.205", nodes=1, cluster_cidr="10.205.0.0/16")
    node = cluster.topo.nodes[0]
    serve = ["sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www"]
    await cluster.create(PRIVILEGED, netns_pod("web", node.name, serve,
                                   ports=[{"containerPort": 8080, "hostPort": 18080, "protocol": "TCP"}]))
    [web] = await cluster.wait_running(NAMESPACE, "app=web", 1)

    async def fetched() -> str | None:
        done = await run("curl", "-s", "--max-time", "3", f"http://{node.address}:18080/")
        return done.stdout if done.returncode == 0 else None

    assert await eventually(fetched, 30, "the hostPort answers on the node's address") == "web\n"
    # portmap's own rules did it: its DNAT chain for the pod sends 18080 to the pod's address.
    rules = (await run("iptables", "-t", "nat", "-S")).stdout
    assert f"--dport 18080 -j DNAT --to-destination {web['status']['podIP']}:8080" in rules, rules

    # The host end is for the host's connections to the pod and their replies, not the pod's to the host:
    # a program of the host's listening on every address is out of the pod's reach through it.
    host_listener = subprocess.Popen(["busybox", "httpd", "-f", "-p", "0.0.0.0:18090", "-h", "/etc"])
    try:
        assert (await run("curl", "-s", "-o", "/dev/null", "--max-time", "3", "http://127.0.0.1:18090/hostname")).returncode == 0
        pod_netns = namespace_name(node.name, NAMESPACE, "web")
        through_host_end = await run("ip", "netns", "exec", pod_netns, "curl", "-s", "--max-time", "3",
                                     "http://169.254.1.1:18090/hostname")
        assert through_host_end.returncode == 28, through_host_end  # timed out: dropped, not answered
    finally:
        host_listener.kill()
        host_listener.wait()

    await cluster.client.delete("pods", "web", NAMESPACE)

    async def unmapped() -> bool:
        return f"{web['status']['podIP']}:8080" not in (await run("iptables", "-t", "nat", "-S")).stdout

    await eventually(unmapped, 30, "portmap's DEL removes the pod's rules when it goes")
    assert (await run("curl", "-s", "--max-time", "3", f"http://{node.address}:18080/")).returncode != 0


async def iperf3_rate(client_netns: str, server_ip: str) -> float:
    """What an iperf3 client in `client_netns` gets through to `server_ip`, in bit/s (the server's view)."""
    done = await run("ip", "netns", "exec", client_netns, "iperf3", "-c", server_ip, "-t", "6", "-J", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"]


async def test_bandwidth_annotations_shape_what_reaches_a_pod_and_what_leaves_one(local_cluster):
    cluster = await local_cluster("127.0.206", nodes=1, cluster_cidr="10.206.0.0/16")
    node = cluster.topo.nodes[0].name
    iperf = ["iperf3", "-s", "-p", "5201"]
    await cluster.create(PRIVILEGED, netns_pod("slow", node, iperf, annotations={"kubernetes.io/ingress-bandwidth": "1M"}),
                         netns_pod("fast", node, iperf), netns_pod("client", node, ["sleep", "3600"]),
                         netns_pod("sender", node, ["sleep", "3600"], annotations={"kubernetes.io/egress-bandwidth": "1M"}))
    pods = {p["metadata"]["name"]: p for p in await cluster.wait_running(NAMESPACE, None, 4)}
    client = namespace_name(node, NAMESPACE, "client")
    await asyncio.sleep(1)  # the servers listen

    slow = await iperf3_rate(client, pods["slow"]["status"]["podIP"])
    fast = await iperf3_rate(client, pods["fast"]["status"]["podIP"])
    # The egress limit: bandwidth redirects what the sender sends to an ifb device whose token bucket
    # shapes it; the agent reads the sender's frames there.
    sent = await iperf3_rate(namespace_name(node, NAMESPACE, "sender"), pods["fast"]["status"]["podIP"])
    print(f"\nbandwidth: ingress shaped {slow / 1e6:.2f} Mbit/s, unshaped {fast / 1e6:.2f} Mbit/s,"
          f" egress shaped {sent / 1e6:.2f} Mbit/s")
    assert 0.5e6 < slow < 1.3e6, f"shaped to 1 Mbit/s, measured {slow / 1e6:.2f} Mbit/s"
    assert fast > 5e6, f"unshaped, measured {fast / 1e6:.2f} Mbit/s"
    assert 0.5e6 < sent < 1.3e6, f"egress shaped to 1 Mbit/s, measured {sent / 1e6:.2f} Mbit/s"
    # bandwidth's token bucket sits on the host end of the shaped pod's veth pair only.
    result = await cluster.rpc(node, AgentMethod.CNI_RESULT, {"namespace": NAMESPACE, "pod": "slow"})
    qdiscs = (await run("tc", "qdisc", "show", "dev", result["interfaces"][0]["name"])).stdout
    assert "qdisc tbf" in qdiscs and "rate 1Mbit" in qdiscs, qdiscs


async def podnet_cni_add(socket: Path, container: str, netns: str) -> dict:
    """ADD by hand, as a runtime other than the agent does it."""
    config = {"cniVersion": "1.1.0", "name": "podnet", "type": "podnet-cni", "agentSocket": str(socket)}
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": container,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    done = await asyncio.to_thread(subprocess.run, [str(Path(sys.executable).parent / "podnet-cni")],
                                   input=json.dumps(config), capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _running(pid: int) -> bool:
    """Whether `pid` runs: a zombie (killed, its parent gone, not yet reaped by init) does not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def namespaces():
    made: list[str] = []

    def make() -> str:
        made.append(f"cnirestart-{uuid.uuid4().hex[:8]}")
        subprocess.run(["ip", "netns", "add", made[-1]], check=True)
        return made[-1]

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], check=False)


async def test_a_restarted_agent_keeps_its_attachments_and_collects_those_gone(local_cluster, namespaces):
    """SIGKILLed and started again, the agent finds its attachments (pods' and a runtime's) on their veth
    pairs, without a new ADD; those whose pod or namespace went while it was away get their DEL, and a pod
    whose namespace went is attached again, with its address."""
    cluster = await local_cluster("127.0.207", nodes=1, cluster_cidr="10.207.0.0/16")
    node = cluster.topo.nodes[0]
    serve = ["sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www"]
    await cluster.create(PRIVILEGED, netns_pod("kept", node.name, serve, ports=[{"containerPort": 8080, "hostPort": 18081}]),
                         netns_pod("gone", node.name, serve, ports=[{"containerPort": 8080, "hostPort": 18082}]),
                         netns_pod("lost", node.name, serve))
    pods = {p["metadata"]["name"]: p for p in await cluster.wait_running(NAMESPACE, None, 3)}
    by_hand_namespace, vanishing = namespaces(), namespaces()
    by_hand = await podnet_cni_add(cluster.topo.agent_socket(node), "c-by-hand", f"/run/netns/{by_hand_namespace}")
    lost = await podnet_cni_add(cluster.topo.agent_socket(node), "c-vanishing", f"/run/netns/{vanishing}")
    before = {a["name"]: a for a in await cluster.rpc(node.name, AgentMethod.CNI_LIST)}
    assert set(before) == {"kept", "gone", "lost", "c-by-hand", "c-vanishing"}

    agent = f"{node.name}/agent"
    cluster.kill(agent, signal.SIGKILL)
    await cluster.wait_dead(agent)
    await cluster.client.delete("pods", "gone", NAMESPACE, grace_period=0)
    subprocess.run(["ip", "netns", "delete", vanishing], check=True)
    lost_namespace = namespace_name(node.name, NAMESPACE, "lost")
    lost_processes = namespace_pids(lost_namespace)
    subprocess.run(["ip", "netns", "delete", lost_namespace], check=True)  # its processes keep it alive
    log = next(cluster.home.glob("**/cni/runtime.log"))
    calls_before = len(log.read_text().splitlines())
    await cluster.start(agent)

    async def recovered() -> dict | None:
        listed = {a["name"]: a for a in await cluster.rpc(node.name, AgentMethod.CNI_LIST)}
        return listed if set(listed) == {"kept", "lost", "c-by-hand"} else None

    after = await eventually(recovered, 30, "the kept attachments are back, the gone pod's collected")
    assert after == {name: before[name] for name in ("kept", "lost", "c-by-hand")}

    async def reattached() -> bool | None:
        try:  # NotFound until the lost pod is admitted again
            return await cluster.probe(pods["lost"], "10.96.0.10", 53, timeout=3) or None
        except RpcError:
            return None

    assert await eventually(reattached, 30, "the lost pod's network, attached again, answers")
    # A runtime's attachment is back in the pipeline: the node answers it on its gateway address.
    gateway = by_hand["ips"][0]["gateway"]
    ping = await run("ip", "netns", "exec", by_hand_namespace, "ping", "-c", "1", "-W", "3", gateway)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # The vanished namespace's attachment let its address go.
    address = lost["ips"][0]["address"].split("/")[0]
    assert not any(cluster.home.glob(f"**/ipam/*/{address}"))
    # The kept pod's interface was never re-added: the chain ran the gone pod's DEL, and the lost pod's DEL
    # and ADD, which gave it its address again (in a namespace of its own again).
    calls = [json.loads(line) for line in log.read_text().splitlines()[calls_before:]]
    assert {(c["env"]["CNI_COMMAND"], c["env"]["CNI_CONTAINERID"]) for c in calls} == {
        ("DEL", pods["gone"]["metadata"]["uid"]), ("DEL", pods["lost"]["metadata"]["uid"]),
        ("ADD", pods["lost"]["metadata"]["uid"])}
    addresses = json.loads((await run("ip", "-n", lost_namespace, "-json", "addr", "show", "dev", "eth0")).stdout)
    assert [a["local"] for a in addresses[0]["addr_info"]] == [pods["lost"]["status"]["podIP"]]
    # ... and its processes, which kept the old namespace alive without a name, were stopped.
    assert lost_processes and not [pid for pid in lost_processes if _running(pid)]
    assert not Path(f"/run/netns/{namespace_name(node.name, NAMESPACE, 'gone')}").exists()

    async def fetched() -> str | None:
        done = await run("curl", "-s", "--max-time", "3", f"http://{node.address}:18081/")
        return done.stdout if done.returncode == 0 else None

    assert await eventually(fetched, 30, "the kept pod's hostPort still answers") == "kept\n"
    # ... and so does its place in the pod network, through the agent: the cluster DNS answers it over TCP.
    assert await cluster.probe(pods["kept"], "10.96.0.10", 53, timeout=3)
    rules = (await run("iptables", "-t", "nat", "-S")).stdout
    assert f"{pods['gone']['status']['podIP']}:8080" not in rules
    check = await run(sys.executable, "-m", "podnet", "cni", node.name, "--check", "--home", str(cluster.home))
    assert check.returncode == 0, check.stdout + check.stderr
    assert [line.split()[-1] for line in check.stdout.splitlines()[1:]] == ["ok", "ok", "ok"], check.stdout

    # An agent that dies for good leaves its pods' chains behind; `podnet clean` runs their DEL.
    cluster.kill(agent, signal.SIGKILL)
    await cluster.wait_dead(agent)
    assert f"{pods['kept']['status']['podIP']}:8080" in (await run("iptables", "-t", "nat", "-S")).stdout
    cleaned = await run(sys.executable, "-m", "podnet", "clean", "--home", str(cluster.home))
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert f"removed the chain of {pods['kept']['metadata']['uid']}" in cleaned.stdout
    assert f"{pods['kept']['status']['podIP']}:8080" not in (await run("iptables", "-t", "nat", "-S")).stdout
