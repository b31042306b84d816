"""The `podnet-cni` binary driven by hand, as the CNI spec's conformance checks drive a plugin, against a
real node agent: fresh network namespaces, real `ip`, the spec's JSON on stdout and its exit codes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from support.local_cluster import eventually

from podnet.cni.conflist import ConfList
from podnet.cni.runtime import Container, Runtime
from podnet.netns.names import namespace_name
from podnet.rpc.agentmethods import AgentMethod

pytestmark = [pytest.mark.root, pytest.mark.slow]

PLUGIN = str(Path(sys.executable).parent / "podnet-cni")
CNI_PATH = "/usr/lib/cni"


class ByHand:
    """What a CNI runtime does, by hand: runs the plugin with the CNI_* variables and a configuration on stdin."""

    def __init__(self, socket: Path, log: Path):
        self.socket = socket
        self.log = log

    def config(self, version: str = "1.1.0", **fields) -> dict:
        return {"cniVersion": version, "name": "podnet", "type": "podnet-cni", "agentSocket": str(self.socket),
                **fields}

    async def run(self, command: str, config: dict | None = None, *, container: str = "", netns: str = "",
                  ifname: str = "eth0", args: str = "", omit: tuple[str, ...] = ()) -> tuple[int, dict | None]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": container,
               "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": CNI_PATH}
        env = {k: v for k, v in env.items() if k not in omit}
        stdin = json.dumps(config if config is not None else self.config()).encode()
        done = await asyncio.to_thread(subprocess.run, [PLUGIN, "--log", str(self.log)], input=stdin,
                                       capture_output=True, timeout=60, env=env)
        assert b"Traceback" not in done.stderr, done.stderr.decode()
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None


@pytest.fixture
def namespaces():
    made: list[str] = []

    def make() -> str:
        name = f"cnitest-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def ip_json(netns: str, *args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-n", netns, "-json", *args], capture_output=True, text=True,
                                     check=True).stdout)


@pytest.fixture
async def runtime(local_cluster, tmp_path):
    cluster = await local_cluster("127.0.175", nodes=1)
    socket = cluster.topo.agent_socket(cluster.topo.nodes[0])
    runtime = ByHand(socket, tmp_path / "cni.log")
    runtime.cluster = cluster
    runtime.node = cluster.topo.nodes[0].name
    return runtime


async def podnet_cni(runtime: ByHand) -> subprocess.CompletedProcess:
    """`podnet cni NODE --check`, the CLI's view of the node's attachments."""
    argv = [sys.executable, "-m", "podnet", "cni", runtime.node, "--check", "--home", str(runtime.cluster.home)]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)


async def test_add_check_del_follow_the_spec_in_a_real_namespace(runtime, namespaces):
    netns = namespaces()
    path = f"/run/netns/{netns}"
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart"
    status, result = await runtime.run("ADD", container="c-add", netns=path, args=args)
    assert status == 0, result
    assert result["cniVersion"] == "1.1.0"
    host, interface = result["interfaces"]
    [address] = result["ips"]
    assert interface["name"] == "eth0" and interface["sandbox"] == path and address["interface"] == 1
    assert "sandbox" not in host  # the veth pair's host end, as ptp lists it, for bandwidth to shape
    assert "version" not in address  # 1.0.0 dropped it
    assert result["routes"] == [{"dst": "169.254.1.1/32"}, {"dst": "0.0.0.0/0", "gw": address["gateway"]}]
    assert result["dns"]["search"][0] == "shop.svc.cluster.local"

    # What the result says is really in the namespace.
    [link] = [entry for entry in ip_json(netns, "link") if entry["ifname"] == "eth0"]
    assert link["address"] == interface["mac"] and "UP" in link["flags"]
    local = [f"{a['local']}/{a['prefixlen']}" for e in ip_json(netns, "addr", "show", "eth0") for a in e["addr_info"]
             if a["family"] == "inet"]
    assert local == [address["address"]]
    assert {"dst": "default", "gateway": address["gateway"]}.items() <= ip_json(netns, "route")[0].items()
    [peer] = json.loads(subprocess.run(["ip", "-json", "link", "show", host["name"]], capture_output=True,
                                       text=True, check=True).stdout)
    assert peer["address"] == host["mac"] and peer["link_netnsid"] is not None and link["link_index"] == peer["ifindex"]
    # ... and its other end is the agent's pipeline: the node answers on the gateway address.
    ping = subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "3", address["gateway"]],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    pods = await runtime.cluster.rpc(runtime.node, AgentMethod.CNI_LIST)
    assert [(p["container_id"], p["namespace"], p["name"], p["address"]) for p in pods] == [
        ("c-add", "shop", "cart", address["address"])]

    check = runtime.config(prevResult=result)
    assert await runtime.run("CHECK", check, container="c-add", netns=path) == (0, None)
    listed = await podnet_cni(runtime)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\n")[1].split() == ["c-add", "eth0", "shop/cart", address["address"], path, "ok"]
    subprocess.run(["ip", "-n", netns, "addr", "del", address["address"], "dev", "eth0"], check=True)
    listed = await podnet_cni(runtime)
    assert listed.returncode == 1 and f"address {address['address']} is not on eth0" in listed.stdout
    status, error = await runtime.run("CHECK", check, container="c-add", netns=path)
    assert status == 1
    assert error["cniVersion"] == "1.1.0" and error["code"] == 101 and error["msg"] == "CHECK failed"
    assert f"address {address['address']} is not on eth0" in error["details"]

    assert await runtime.run("DEL", check, container="c-add", netns=path) == (0, None)
    assert await runtime.run("DEL", check, container="c-add", netns=path) == (0, None)
    assert [e["ifname"] for e in ip_json(netns, "link")] == ["lo"]
    assert await runtime.cluster.rpc(runtime.node, AgentMethod.CNI_LIST) == []
    status, error = await runtime.run("CHECK", check, container="c-add", netns=path)
    assert (status, error["code"]) == (1, 3)  # unknown container

    calls = [json.loads(line) for line in runtime.log.read_text().splitlines()]
    assert [(c["env"]["CNI_COMMAND"], c["exit"]) for c in calls] == [
        ("ADD", 0), ("CHECK", 0), ("CHECK", 1), ("DEL", 0), ("DEL", 0), ("CHECK", 1)]
    assert calls[0]["env"]["CNI_ARGS"] == args and calls[0]["stdout"] == result


async def test_version_status_and_bad_invocations(runtime, namespaces):
    status, versions = await runtime.run("VERSION", {"cniVersion": "1.0.0"})
    assert status == 0 and {"1.0.0", "1.1.0"} <= set(versions["supportedVersions"])
    assert await runtime.run("STATUS") == (0, None)

    netns = f"/run/netns/{namespaces()}"
    status, error = await runtime.run("ADD", runtime.config(version="0.2.0"), container="c1", netns=netns)
    assert (status, error["code"]) == (1, 1)
    status, error = await runtime.run("ADD", container="c1", omit=("CNI_NETNS",))
    assert (status, error["code"]) == (1, 4) and "CNI_NETNS" in error["details"]
    status, error = await runtime.run("ADD", container="c1", netns="/run/netns/no-such-namespace")
    assert (status, error["code"]) == (1, 7)
    status, error = await runtime.run("STATUS", runtime.config(agentSocket="/nonexistent/agent.sock"))
    assert (status, error["code"]) == (1, 50)
    # 0.4.0 results carry each address's IP version.
    status, old = await runtime.run("ADD", runtime.config(version="0.4.0"), container="c-old", netns=netns)
    assert status == 0 and old["cniVersion"] == "0.4.0" and old["ips"][0]["version"] == "4"


async def test_gc_removes_attachments_the_runtime_no_longer_lists(runtime, namespaces):
    kept, stale = namespaces(), namespaces()
    _, kept_result = await runtime.run("ADD", container="c-kept", netns=f"/run/netns/{kept}")
    _, stale_result = await runtime.run("ADD", container="c-stale", netns=f"/run/netns/{stale}")
    assert kept_result["ips"][0]["address"] != stale_result["ips"][0]["address"]
    gc = runtime.config(**{"cni.dev/valid-attachments": [{"containerID": "c-kept", "ifname": "eth0"}]})
    assert await runtime.run("GC", gc) == (0, None)
    assert [p["container_id"] for p in await runtime.cluster.rpc(runtime.node, AgentMethod.CNI_LIST)] == ["c-kept"]
    assert [e["ifname"] for e in ip_json(stale, "link")] == ["lo"]
    assert "eth0" in [e["ifname"] for e in ip_json(kept, "link")]
    # The stale attachment's address is free again: no allocation of the agent's IPAM holds it.
    def allocated(result: dict) -> bool:
        return any(runtime.cluster.home.glob(f"**/ipam/*/{result['ips'][0]['address'].split('/')[0]}"))

    assert allocated(kept_result) and not allocated(stale_result)


async def test_the_agents_conflist_chained_with_the_reference_tuning_plugin(runtime, namespaces, tmp_path):
    """The runtime executes the node's conflist with a reference plugin a user appended: podnet's result
    reaches `portmap`, `bandwidth` and `tuning` as prevResult, their changes land in the namespace and on
    the veth pair's host end, DEL runs the list backwards."""
    written = next(runtime.cluster.home.glob("**/cni/net.d/10-podnet.conflist"))
    conflist = ConfList.parse(written.read_text())
    assert conflist.plugins == ({"type": "podnet-cni", "agentSocket": str(runtime.socket)},
                                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
                                {"type": "bandwidth", "capabilities": {"bandwidth": True}})
    chained = replace(conflist, plugins=(*conflist.plugins, {"type": "tuning", "mtu": 1400,
                                                             "sysctl": {"net.ipv4.conf.eth0.log_martians": "1"}}))
    log = tmp_path / "runtime.log"
    cni = Runtime(chained, (str(Path(PLUGIN).parent), CNI_PATH), tmp_path / "results", log)
    netns = namespaces()
    container = Container("c-chain", f"/run/netns/{netns}", args=(("K8S_POD_NAMESPACE", "shop"),))
    # bandwidth 1.1.1 is given a limit: its CHECK dereferences one that is missing (and panics).
    limits = {"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 800_000}}
    result = await cni.add(container, limits)
    assert result["cniVersion"] == "1.0.0" and result["ips"][0]["address"].startswith("10.244.")
    host = result["interfaces"][0]["name"]
    qdiscs = subprocess.run(["tc", "qdisc", "show", "dev", host], capture_output=True, text=True).stdout
    assert "qdisc tbf" in qdiscs and "rate 8Mbit" in qdiscs, qdiscs
    [link] = [entry for entry in ip_json(netns, "link") if entry["ifname"] == "eth0"]
    assert link["mtu"] == 1400
    sysctl = subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-n", "net.ipv4.conf.eth0.log_martians"],
                            capture_output=True, text=True)
    assert sysctl.stdout.strip() == "1"
    await cni.check(container, limits)
    await cni.delete(container, limits)
    await cni.delete(container, limits)
    assert not Path(f"/sys/class/net/{host}").exists()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    chain = ["podnet-cni", "portmap", "bandwidth", "tuning"]
    assert [(c["plugin"], c["env"]["CNI_COMMAND"]) for c in calls] == [
        *((plugin, "ADD") for plugin in chain), *((plugin, "CHECK") for plugin in chain),
        *((plugin, "DEL") for plugin in reversed(chain)), *((plugin, "DEL") for plugin in reversed(chain))]
    assert all(calls[i + 1]["stdin"]["prevResult"] == calls[i]["stdout"] for i in range(3))
    assert all(c["exit"] == 0 for c in calls)
    assert [e["ifname"] for e in ip_json(netns, "link")] == ["lo"]


async def test_the_agent_runs_plugins_chained_in_its_conflist_for_netns_pods(local_cluster):
    """The agent is the runtime of its conflist: a netns pod's network is set up by executing the chain,
    podnet-cni first (whose ADD the agent serves), then portmap and bandwidth; a user appends the
    reference `tuning` plugin and the next netns pod gets its MTU and sysctl from it, with the previous
    plugin's result as prevResult, and the whole chain's DEL, backwards, when the pod goes."""
    cluster = await local_cluster("127.0.176", nodes=1, pod_mode="netns")
    node = cluster.topo.nodes[0].name
    path = next(cluster.home.glob("**/cni/net.d/10-podnet.conflist"))
    conflist = ConfList.parse(path.read_text())
    tuning = {"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.log_martians": "1"}}
    path.write_text(replace(conflist, plugins=(*conflist.plugins, tuning)).to_json())
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tuned", "namespace": "default"},
           "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox",
                                                      "command": ["sleep", "3600"]}]}}
    await cluster.create(pod)
    [running] = await cluster.wait_running("default", None, 1)
    netns = namespace_name(node, "default", "tuned")
    log = path.parent.parent / "runtime.log"

    async def tuned() -> bool:
        links = ip_json(netns, "link") if Path(f"/run/netns/{netns}").exists() else []
        return any(link["ifname"] == "eth0" and link["mtu"] == 1400 for link in links)

    await eventually(tuned, 15, "tuning sets the pod's MTU")
    sysctl = subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-n", "net.ipv4.conf.eth0.log_martians"],
                            capture_output=True, text=True)
    assert sysctl.stdout.strip() == "1"
    chain = ["podnet-cni", "portmap", "bandwidth", "tuning"]
    adds = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(c["plugin"], c["env"]["CNI_COMMAND"], c["exit"]) for c in adds] == [(p, "ADD", 0) for p in chain]
    assert adds[0]["stdout"]["ips"][0]["address"].split("/")[0] == running["status"]["podIP"]
    assert all(adds[i + 1]["stdin"]["prevResult"] == adds[i]["stdout"] for i in range(3))
    assert all(c["env"]["CNI_CONTAINERID"] == running["metadata"]["uid"] for c in adds)
    assert "K8S_POD_NAME=tuned" in adds[0]["env"]["CNI_ARGS"]
    assert adds[0]["env"]["CNI_NETNS"] == f"/run/netns/{netns}"

    async def described() -> str | None:
        argv = [sys.executable, "-m", "podnet", "describe", "pod", "tuned", "--home", str(cluster.home)]
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
        return done.stdout if "CNI Result:" in done.stdout else None

    description = await eventually(described, 15, "podnet describe pod shows the chain's result")
    cni_section = description.split("CNI Result:", 1)[1]
    assert f"address: {running['status']['podIP']}/24" in cni_section and "sandbox: /run/netns/" in cni_section

    await cluster.client.delete("pods", "tuned", "default")

    async def deleted() -> bool:
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return [(c["plugin"], c["env"]["CNI_COMMAND"], c["exit"]) for c in calls[len(chain):]] == [
            (p, "DEL", 0) for p in reversed(chain)]

    await eventually(deleted, 30, "the chain's DEL runs backwards, and succeeds, when the pod goes")
    assert await cluster.rpc(node, AgentMethod.CNI_LIST) == []
