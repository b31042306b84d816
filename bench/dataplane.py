"""Dataplane throughput: two real node agents on 127.0.0.11 and .12, beside two baselines from the same run.

- podnet cross-node UDP: pod a (node-1) sends a UDP stream to pod b (node-2) for a few seconds; figures
  are datagrams per second that left node-1 and that node-2 delivered into pod b's stack, for 64- and
  1400-byte payloads. Every datagram crosses node-1's egress pipeline, a real VXLAN datagram on loopback,
  and node-2's ingress pipeline (as in Linux, b answers each with ICMP port unreachable, which flows back).
- The same with `--encryption wireguard` (two more agents on 127.0.0.13 and .14, measured in the same
  rounds, 1342-byte payloads in place of 1400: the most the encrypted pod MTU of 1370 carries): every
  datagram sealed on node-1 and opened on node-2; `wireguard_ratio_64`/`_1400` are the medians of
  encrypted over unencrypted delivered frames/s (`wireguard_ratio_rounds`: each round's),
  `wireguard_tcp_ratio` the TCP goodputs'. Beside them, `wireguard_payload_ratio_1400`, the same in payload
  bytes (a 1342-byte frame carries 4% less than a 1400-byte one), and `wireguard_cpu_ratio_64`/`_1400`,
  the receiving agent's CPU time per datagram unencrypted over encrypted (steadier than the rates when
  the machine's other load varies).
- podnet TCP goodput: pod a writes 64 MiB to an agnhost port of pod b, which echoes it; bytes per second of
  the round trip (each byte crosses the tunnel twice), through the pods' userspace TCP. (A few MiB would
  measure mostly slow start: 4 MiB reads about half the rate of 64 MiB.) Three transfers, each on its
  own connection, their goodputs listed and their median the figure: an agent's first connection pays
  one-off costs (its heap growing, caches filling) that read 10-20% lower. The same to pod c,
  on node-1 beside a (`podnet_tcp_echo_same_node`): both ends virtual pods in one agent, whose
  super-segments nothing cuts.
- Python ceiling: a bare UDP forwarder written the fastest way (uvloop, add_reader, recvfrom until
  BlockingIOError, sendto), fed by a sender process: datagrams per second it forwards, beside what the
  sender offered (more offered than forwarded shows the forwarder, not the sender, set the pace).
- Kernel reference (root, iperf3): Linux's own vxlan between two network namespaces over a veth pair.
- podnet pipeline in process: node-1's egress and node-2's ingress pipelines back to back in one thread,
  without sockets or pod stacks, to show what the forwarding core itself costs per frame; and the same
  through a Service (a request DNATed, its answer un-DNATed), what the NAT adds.

The machine may be shared, and its load can change from one second to the next; so the ceiling and
podnet are measured in alternating rounds, each podnet round right after a ceiling round with the same
payload size, and every figure is the median over the rounds. Prints one JSON object as the last line;
`ratio_64` is the median over the rounds of podnet's delivered frames/s over the Python ceiling's, for
64-byte payloads (the goal is at least 0.5); `ratio_rounds` lists each round's ratio. Beside the rates,
the CPU time per datagram of the forwarder and of the receiving agent (node-2), and `cpu_ratio_64`, the
first over the second: what each datagram costs, which the machine's other load does not move as much.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from podnet.client import ApiClient  # noqa: E402
from podnet.rpc.agentmethods import AgentMethod  # noqa: E402
from podnet.rpc.session import call_once  # noqa: E402

SECONDS = 2.0
SIZES = (64, 1400)
ROUNDS = 5
TCP_BYTES = 64 << 20
TCP_TRANSFERS = 3
# The largest UDP payload an encrypted node carries: its pod MTU (1450 less WireGuard's 80) less the IPv4
# and UDP headers. A 1400-byte payload would be over it and dropped (a pod's kernel would fragment it), so
# the encrypted run measures its largest size in place of 1400.
WIREGUARD_MAX_PAYLOAD = 1370 - 28

FORWARDER = r"""
import socket, sys, time, uvloop, asyncio
listen, sink, seconds = (sys.argv[1], int(sys.argv[2])), (sys.argv[3], int(sys.argv[4])), float(sys.argv[5])
async def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(listen)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    recvfrom, sendto = sock.recvfrom, sock.sendto
    count = 0
    def readable():
        nonlocal count
        try:
            for _ in range(512):
                data, _ = recvfrom(65535)
                try:
                    sendto(data, sink)
                except BlockingIOError:
                    pass
                count += 1
        except BlockingIOError:
            pass
    loop.add_reader(sock.fileno(), readable)
    print("ready", flush=True)
    while count == 0:
        await asyncio.sleep(0.001)
    start, first, cpu = time.monotonic(), count, time.process_time()
    await asyncio.sleep(seconds)
    forwarded = count - first
    print(forwarded / (time.monotonic() - start), (time.process_time() - cpu) / max(forwarded, 1), flush=True)
uvloop.run(main())
"""

SENDER = r"""
import socket, sys, time
target, size, seconds = (sys.argv[1], int(sys.argv[2])), int(sys.argv[3]), float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload, sendto, start = bytes(size), sock.sendto, time.monotonic()
end, sent = start + seconds, 0
while time.monotonic() < end:
    for _ in range(256):
        sendto(payload, target)
    sent += 256
print(sent / (time.monotonic() - start), flush=True)
"""


def python_ceiling(size: int) -> dict:
    """Datagrams per second a bare Python forwarder moves (the sink is a socket nobody reads), and
    what its sender offered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.22", 0))
        sink_port = sink.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.21", 0))
            port = probe.getsockname()[1]
        forwarder = subprocess.Popen(
            [sys.executable, "-c", FORWARDER, "127.0.0.21", str(port), "127.0.0.22", str(sink_port), str(SECONDS)],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert forwarder.stdout.readline().strip() == "ready"
            sender = subprocess.Popen([sys.executable, "-c", SENDER, "127.0.0.21", str(port), str(size),
                                       str(SECONDS + 1.0)], stdout=subprocess.PIPE, text=True)
            rate, cpu = map(float, forwarder.stdout.readline().split())
            offered = float(sender.stdout.readline())
            sender.wait(timeout=SECONDS + 10)
            return {"forwarded_per_second": round(rate), "offered_per_second": round(offered),
                    "cpu_us_per_datagram": round(cpu * 1e6, 2)}
        finally:
            forwarder.kill()
            forwarder.wait()


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_udp_port(first: str, second: str) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
            a.bind((first, 0))
            try:
                b.bind((second, a.getsockname()[1]))
            except OSError:
                continue
            return a.getsockname()[1]
    raise RuntimeError("no common free UDP port")


class Cluster:
    """An API server and two agents (on `addresses`, encrypting the underlay as `encryption` says),
    started in a temporary PODNET_HOME, killed on exit."""

    def __init__(self, home: Path, addresses: tuple[str, str] = ("127.0.0.11", "127.0.0.12"), encryption: str = "none"):
        self.home = home
        self.addresses = addresses
        self.encryption = encryption
        self.processes: list[subprocess.Popen] = []
        self.api = f"http://127.0.0.1:{_free_tcp_port()}"
        self.vxlan_port = _free_udp_port(*addresses)

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO), PODNET_HOME=str(self.home))
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it until it exits
        process = subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=log, env=env,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def socket(self, node: str) -> str:
        return str(self.home / "nodes" / node / "agent.sock")

    def start(self) -> None:
        port = self.api.rsplit(":", 1)[1]
        self.spawn("apiserver", "podnet.apiserver", "--host", "127.0.0.1", "--port", port,
                   "--store", f"sqlite:///{self.home / 'store.db'}", "--log-level", "warning")
        _wait(lambda: urllib.request.urlopen(f"{self.api}/readyz", timeout=1).status == 200)
        for index in (1, 2):
            node = f"node-{index}"
            self.spawn(node, "podnet.nodeagent", "--name", node, "--address", self.addresses[index - 1],
                       "--server", self.api, "--state-dir", str(self.home / "nodes" / node),
                       "--vxlan-port", str(self.vxlan_port), "--metrics-port", "-1", "--log-level", "warning",
                       "--encryption", self.encryption)
        for index in (1, 2):
            _wait(lambda index=index: asyncio.run(call_once(self.socket(f"node-{index}"), "ping", timeout=1)) == "pong")
        asyncio.run(self._pods())

    async def _pods(self) -> None:
        async with ApiClient(self.api) as client:
            for name, node in (("a", "node-1"), ("b", "node-2"), ("c", "node-1")):
                await client.create({
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                    "spec": {"nodeName": node, "containers": [{"name": "agnhost", "image": "agnhost",
                                                                "ports": [{"containerPort": 80}]}]},
                })
            self.ips = {}
            for name in ("a", "b", "c"):
                for _ in range(200):
                    pod = await client.get("pods", name, "default")
                    if ip := (pod.get("status") or {}).get("podIP"):
                        self.ips[name] = ip
                        break
                    await asyncio.sleep(0.05)

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError("a component did not come up in time")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used: unlike a rate, it does not count the time the machine
    gave to others."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def podnet_udp(cluster: Cluster, size: int) -> dict:
    receiver = cluster.processes[2].pid  # node-2's agent

    async def run() -> dict:
        before = await call_once(cluster.socket("node-2"), AgentMethod.COUNTERS)
        cpu = _cpu_seconds(receiver)
        sent = await call_once(cluster.socket("node-1"), AgentMethod.POD_SEND_UDP, {
            "namespace": "default", "pod": "a", "dst": cluster.ips["b"], "port": 9, "size": size,
            "seconds": SECONDS}, timeout=SECONDS + 30)
        await asyncio.sleep(0.3)  # what is still in flight arrives
        cpu = _cpu_seconds(receiver) - cpu
        after = await call_once(cluster.socket("node-2"), AgentMethod.COUNTERS)
        delivered = after.get("delivered", 0) - before.get("delivered", 0)
        return {
            "sent_per_second": round(sent["sent"] / sent["seconds"]),
            "delivered_per_second": round(delivered / sent["seconds"]),
            "delivered_share": round(delivered / max(sent["sent"], 1), 3),
            "receiver_cpu_us_per_datagram": round(cpu / max(delivered, 1) * 1e6, 2),
        }

    return asyncio.run(run())


def podnet_tcp(cluster: Cluster, peer: str = "b") -> dict:
    transfers = []
    for _ in range(TCP_TRANSFERS):
        result = asyncio.run(call_once(cluster.socket("node-1"), AgentMethod.POD_TCP_TRANSFER, {
            "namespace": "default", "pod": "a", "dst": cluster.ips[peer], "port": 80, "bytes": TCP_BYTES,
            "timeout": 60}, timeout=90))
        transfers.append(round(result["bytes"] * 8 / result["seconds"] / 1e6, 1))
    return {"bytes": TCP_BYTES, "goodput_mbit_s": statistics.median(transfers), "transfers_mbit_s": transfers}


def pipeline_in_process(size: int, frames: int = 50_000, *, via_service: bool = False) -> float:
    """Frames per second through node-1's egress and node-2's ingress pipelines in one thread, no
    sockets and no pod stacks: the forwarding core's own cost per frame. Via a Service, pod a sends to a
    ClusterIP whose endpoint is pod b and b answers: the request is DNATed on node-1's egress and the
    answer un-DNATed on node-1's ingress, and both count."""
    from podnet.overlay.pipeline.forward import Pipeline
    from podnet.overlay.pipeline.model import NodeIdentity, Peer, PodPort, pod_mac, vtep_mac
    from podnet.overlay.pipeline.nat import ServiceTable
    from podnet.overlay.wire import ipv4, udp

    n1 = Pipeline(NodeIdentity("node-1", "127.0.0.11", "10.244.1.0/24"))
    n2 = Pipeline(NodeIdentity("node-2", "127.0.0.12", "10.244.2.0/24"))
    n1.set_peer(Peer("node-2", "127.0.0.12", vtep_mac("127.0.0.12")), "10.244.2.0/24")
    n2.set_peer(Peer("node-1", "127.0.0.11", vtep_mac("127.0.0.11")), "10.244.1.0/24")
    a = PodPort("default", "a", "10.244.1.2", pod_mac("10.244.1.2"))
    b = PodPort("default", "b", "10.244.2.2", pod_mac("10.244.2.2"))
    n1.add_pod(a)
    n2.add_pod(b)

    def packet(src: str, dst: str, src_port: int, dst_port: int) -> bytes:
        body = udp.encode(udp.UdpDatagram(src_port, dst_port, bytes(size)), src, dst)
        return ipv4.encode(ipv4.IPv4Packet(src, dst, ipv4.IPProtocol.UDP, body))

    flows = [(n1, a, n2, packet(a.ip, b.ip, 40000, 9))]
    if via_service:
        n1.services = ServiceTable.from_data({"mode": "ipvs", "services": [
            {"service": "default/b", "port_name": "", "protocol": "UDP", "cluster_ip": "10.96.0.20",
             "port": 53, "endpoints": [[b.ip, 5353, "node-2"]]}]})
        flows = [(n1, a, n2, packet(a.ip, "10.96.0.20", 40000, 53)), (n2, b, n1, packet(b.ip, a.ip, 5353, 40000))]
    start = time.perf_counter()
    for _ in range(frames // len(flows)):
        for source, pod, destination, sent in flows:
            for out in source.from_pod(pod, sent, 1.0):
                destination.from_tunnel(source.node.address, out.datagram, 1.0)
    elapsed = time.perf_counter() - start
    assert n1.counters["delivered"] + n2.counters["delivered"] == frames // len(flows) * len(flows)
    return frames / elapsed


def kernel_vxlan(tcp_streams: tuple[int, ...] = (1,)) -> dict | None:
    """iperf3 over Linux vxlan devices in two namespaces joined by a veth pair (root only): 64-byte UDP,
    and TCP with each number of parallel streams in `tcp_streams` (`tcp_gbit_s` for one stream,
    `tcp_N_streams_gbit_s` for N)."""
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        return None
    tag = str(os.getpid())
    ns1, ns2 = f"pnb1-{tag}", f"pnb2-{tag}"

    def sh(*args: str) -> str:
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout

    try:
        sh("ip", "netns", "add", ns1)
        sh("ip", "netns", "add", ns2)
        sh("ip", "link", "add", "veth0", "netns", ns1, "type", "veth", "peer", "name", "veth0", "netns", ns2)
        for ns, under, over, peer in ((ns1, "192.168.77.1", "10.99.0.1", "192.168.77.2"),
                                      (ns2, "192.168.77.2", "10.99.0.2", "192.168.77.1")):
            sh("ip", "-n", ns, "addr", "add", f"{under}/24", "dev", "veth0")
            sh("ip", "-n", ns, "link", "set", "veth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "1", "local", under, "remote", peer,
               "dstport", "4789", "dev", "veth0")
            sh("ip", "-n", ns, "addr", "add", f"{over}/24", "dev", "vx0")
            sh("ip", "-n", ns, "link", "set", "vx0", "up")
        server = subprocess.Popen(["ip", "netns", "exec", ns2, "iperf3", "-s", "-1", "-B", "10.99.0.2"],
                                  stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            udp = json.loads(sh("ip", "netns", "exec", ns1, "iperf3", "-c", "10.99.0.2", "-u", "-b", "0", "-l", "64",
                                "-t", str(int(SECONDS)), "-J"))
        finally:
            server.wait(timeout=30)
        summary = udp["end"]["sum"]
        received = summary["packets"] - summary["lost_packets"]
        figures = {"udp_64_delivered_per_second": round(received / summary["seconds"])}
        for streams in tcp_streams:
            server = subprocess.Popen(["ip", "netns", "exec", ns2, "iperf3", "-s", "-1", "-B", "10.99.0.2"],
                                      stdout=subprocess.DEVNULL)
            try:
                time.sleep(0.5)
                tcp = json.loads(sh("ip", "netns", "exec", ns1, "iperf3", "-c", "10.99.0.2", "-t", str(int(SECONDS)),
                                    "-P", str(streams), "-J"))
            finally:
                server.wait(timeout=30)
            key = "tcp_gbit_s" if streams == 1 else f"tcp_{streams}_streams_gbit_s"
            figures[key] = round(tcp["end"]["sum_received"]["bits_per_second"] / 1e9, 2)
        return figures
    finally:
        subprocess.run(["ip", "netns", "del", ns1], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns2], capture_output=True)


def _medians(rounds: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def main() -> None:
    figures: dict = {"seconds_per_run": SECONDS, "rounds": ROUNDS}
    figures["podnet_pipeline_in_process_per_second"] = {size: round(pipeline_in_process(size)) for size in SIZES}
    figures["podnet_pipeline_in_process_via_service_per_second"] = {
        size: round(pipeline_in_process(size, via_service=True)) for size in SIZES
    }
    ceiling: dict[int, list[dict]] = {size: [] for size in SIZES}
    podnet: dict[int, list[dict]] = {size: [] for size in SIZES}
    encrypted: dict[int, list[dict]] = {size: [] for size in SIZES}
    with tempfile.TemporaryDirectory(prefix="podnet-bench-") as home, \
            tempfile.TemporaryDirectory(prefix="podnet-bench-wireguard-") as encrypted_home:
        # The same two agents again with --encryption wireguard, measured in the same rounds.
        cluster = Cluster(Path(home))
        wireguard = Cluster(Path(encrypted_home), ("127.0.0.13", "127.0.0.14"), encryption="wireguard")
        try:
            cluster.start()
            wireguard.start()
            for size in SIZES:
                for _ in range(ROUNDS):
                    ceiling[size].append(python_ceiling(size))
                    podnet[size].append(podnet_udp(cluster, size))
                    encrypted[size].append(podnet_udp(wireguard, min(size, WIREGUARD_MAX_PAYLOAD)))
            figures["podnet_tcp_echo"] = podnet_tcp(cluster)
            figures["podnet_tcp_echo_same_node"] = podnet_tcp(cluster, "c")
            figures["podnet_tcp_echo_wireguard"] = podnet_tcp(wireguard)
        finally:
            cluster.stop()
            wireguard.stop()
    figures["python_ceiling"] = {size: _medians(ceiling[size]) for size in SIZES}
    figures["podnet_cross_node_udp"] = {size: _medians(podnet[size]) for size in SIZES}
    figures["podnet_cross_node_udp_wireguard"] = {size: _medians(encrypted[size]) for size in SIZES}
    # Encrypted over unencrypted, round by round (the goal is at least 0.5 at 1400 B).
    figures["wireguard_ratio_rounds"] = {
        size: [round(e["delivered_per_second"] / max(p["delivered_per_second"], 1), 3)
               for e, p in zip(encrypted[size], podnet[size], strict=True)]
        for size in SIZES
    }
    for size in SIZES:
        figures[f"wireguard_ratio_{size}"] = round(statistics.median(figures["wireguard_ratio_rounds"][size]), 3)
    figures["wireguard_tcp_ratio"] = round(
        figures["podnet_tcp_echo_wireguard"]["goodput_mbit_s"] / figures["podnet_tcp_echo"]["goodput_mbit_s"], 3)
    figures["wireguard_payload_ratio_1400"] = round(statistics.median(
        e["delivered_per_second"] * WIREGUARD_MAX_PAYLOAD / max(p["delivered_per_second"] * 1400, 1)
        for e, p in zip(encrypted[1400], podnet[1400], strict=True)), 3)
    for size in SIZES:
        figures[f"wireguard_cpu_ratio_{size}"] = round(
            figures["podnet_cross_node_udp"][size]["receiver_cpu_us_per_datagram"]
            / figures["podnet_cross_node_udp_wireguard"][size]["receiver_cpu_us_per_datagram"], 3)
    figures["ratio_rounds"] = {
        size: [round(p["delivered_per_second"] / c["forwarded_per_second"], 3)
               for p, c in zip(podnet[size], ceiling[size], strict=True)]
        for size in SIZES
    }
    for size in SIZES:
        figures[f"ratio_{size}"] = round(statistics.median(figures["ratio_rounds"][size]), 3)
        # The same comparison in CPU time per datagram (forwarder's over the receiving agent's): steadier
        # when the machine's other load takes a share of the cores in one round and not the next.
        figures[f"cpu_ratio_{size}"] = round(
            figures["python_ceiling"][size]["cpu_us_per_datagram"]
            / figures["podnet_cross_node_udp"][size]["receiver_cpu_us_per_datagram"], 3)
    figures["kernel_vxlan"] = kernel_vxlan()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
