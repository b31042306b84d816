"""iperf3 between two network-namespace pods on two node agents, beside the kernel's own VXLAN and pasta
(root).

- podnet: an API server and two real node agents (127.0.9.21 and .22) in `--pod-mode netns`; pod `server`
  on the first node runs `iperf3 -s` as its container command, pod `client` on the second runs the iperf3
  client with `ip netns exec`. Every frame leaves the client's kernel through its TAP into node 2's
  pipeline, crosses loopback in VXLAN, and enters the server's kernel through node 1's TAP. Measured with
  the TAPs' offloads on (the default: TCP super-packets through the pipeline, UDP_SEGMENT and UDP_GRO on
  the underlay) and, in a second cluster, off (`--no-tap-offloads`: frame by frame).
- kernel: Linux vxlan devices in two namespaces joined by a veth pair, measured by bench/dataplane.py's
  `kernel_vxlan` in the same run (TCP, and UDP with 64-byte datagrams).
- pasta (Debian `passt`), when installed: iperf3 in a namespace that pasta connects to the host through a
  TAP, as podnet's netns pods are connected, to an iperf3 server on the host's loopback (pasta maps the
  namespace's gateway address to it). The same-machine anchor for a userspace TAP dataplane.

TCP is measured with one stream and with four (`-P 4`). Prints one JSON object as the last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from dataplane import kernel_vxlan  # noqa: E402

from podnet.client import ApiClient  # noqa: E402
from podnet.netns.names import namespace_name  # noqa: E402
from podnet.rpc.session import call_once  # noqa: E402

SECONDS = 3
STREAMS = 4
ADDRESSES = ("127.0.9.21", "127.0.9.22")
NODES = ("pnbench-1", "pnbench-2")


def _free_port(kind: int, *addresses: str) -> int:
    for _ in range(50):
        sockets = [socket.socket(socket.AF_INET, kind) for _ in addresses]
        try:
            sockets[0].bind((addresses[0], 0))
            port = sockets[0].getsockname()[1]
            for sock, address in zip(sockets[1:], addresses[1:], strict=True):
                sock.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port")


def _wait(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError("a component did not come up in time")


class Cluster:
    def __init__(self, home: Path, agent_args: tuple[str, ...] = ()):
        self.home = home
        self.agent_args = agent_args
        self.processes: list[subprocess.Popen] = []
        self.api = f"http://127.0.0.1:{_free_port(socket.SOCK_STREAM, '127.0.0.1')}"

    def spawn(self, name: str, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PODNET_HOME=str(self.home))
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it until it exits
        self.processes.append(subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=log, env=env,
                                               start_new_session=True))

    def start(self) -> dict[str, str]:
        self.spawn("apiserver", "podnet.apiserver", "--host", "127.0.0.1", "--port", self.api.rsplit(":", 1)[1],
                   "--store", f"sqlite:///{self.home / 'store.db'}", "--log-level", "warning")
        _wait(lambda: urllib.request.urlopen(f"{self.api}/readyz", timeout=1).status == 200)
        vxlan_port = _free_port(socket.SOCK_DGRAM, *ADDRESSES)
        for node, address in zip(NODES, ADDRESSES, strict=True):
            self.spawn(node, "podnet.nodeagent", "--name", node, "--address", address, "--server", self.api,
                       "--state-dir", str(self.home / "nodes" / node), "--vxlan-port", str(vxlan_port),
                       "--metrics-port", "-1", "--log-level", "warning", "--pod-mode", "netns", *self.agent_args)
        for node in NODES:
            sock = str(self.home / "nodes" / node / "agent.sock")
            _wait(lambda sock=sock: asyncio.run(call_once(sock, "ping", timeout=1)) == "pong")
        return asyncio.run(self._pods())

    async def _pods(self) -> dict[str, str]:
        async with ApiClient(self.api) as client:
            for name, node, command in (("server", NODES[0], ["iperf3", "-s"]), ("client", NODES[1], None)):
                container = {"name": "main", "image": "debian", **({"command": command} if command else {})}
                await client.create({"apiVersion": "v1", "kind": "Pod",
                                     "metadata": {"name": name, "namespace": "default"},
                                     "spec": {"nodeName": node, "containers": [container]}})
            ips = {}
            for name in ("server", "client"):
                for _ in range(300):
                    pod = await client.get("pods", name, "default")
                    if ip := (pod.get("status") or {}).get("podIP"):
                        ips[name] = ip
                        break
                    await asyncio.sleep(0.05)
            return ips

    def stop(self) -> None:
        for process in reversed(self.processes):  # SIGTERM: the agents remove their pods' namespaces
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def iperf(netns: str, server: str, *args: str) -> dict:
    run = subprocess.run(["ip", "netns", "exec", netns, "iperf3", "-c", server, "-t", str(SECONDS), "-J", *args],
                         capture_output=True, text=True, timeout=SECONDS + 30)
    return json.loads(run.stdout)


def _tcp_mbit_s(result: dict) -> float:
    return round(result["end"]["sum_received"]["bits_per_second"] / 1e6, 1)


def podnet_netns(*agent_args: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="podnet-bench-netns-") as home:
        cluster = Cluster(Path(home), agent_args)
        try:
            ips = cluster.start()
            client = namespace_name(NODES[1], "default", "client")
            probe = ["ip", "netns", "exec", client, "iperf3", "-c", ips["server"], "-t", "1"]
            _wait(lambda: subprocess.run(probe, capture_output=True, timeout=15).returncode == 0)
            tcp = iperf(client, ips["server"])
            tcp4 = iperf(client, ips["server"], "-P", str(STREAMS))
            udp = iperf(client, ips["server"], "-u", "-b", "0", "-l", "64")
        finally:
            cluster.stop()
    summary = udp["end"]["sum"]
    return {
        "tcp_mbit_s": _tcp_mbit_s(tcp),
        "tcp_retransmits": tcp["end"]["sum_sent"].get("retransmits"),
        f"tcp_{STREAMS}_streams_mbit_s": _tcp_mbit_s(tcp4),
        "udp_64_delivered_per_second": round((summary["packets"] - summary["lost_packets"]) / summary["seconds"]),
        "udp_64_lost_percent": round(summary["lost_percent"], 1),
    }


def pasta() -> dict | None:
    """iperf3 from a namespace pasta connects, to a server on the host's loopback; None without pasta."""
    if not shutil.which("pasta"):
        return None
    figures = {}
    for streams in (1, STREAMS):
        port = _free_port(socket.SOCK_STREAM, "127.0.0.1")
        server = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            # As root pasta would drop to nobody, whose user namespace this sandbox does not allow.
            run = subprocess.run(["pasta", "--runas", "0", "--config-net", "--", "sh", "-c",
                                  f'iperf3 -c "$(ip route show default | cut -d" " -f3)" -p {port} '
                                  f"-t {SECONDS} -P {streams} -J"],
                                 capture_output=True, text=True, timeout=SECONDS + 30)
        finally:
            server.wait(timeout=30)
        key = "tcp_mbit_s" if streams == 1 else f"tcp_{streams}_streams_mbit_s"
        figures[key] = _tcp_mbit_s(json.loads(run.stdout))
    return figures


def main() -> None:
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        # A machine that cannot run it is a result to record, not a benchmark that broke.
        print(json.dumps({"skipped": "needs root and iperf3"}))
        return
    figures = {
        "seconds_per_run": SECONDS,
        "podnet_netns_pods": podnet_netns(),
        "podnet_netns_pods_without_offloads": podnet_netns("--no-tap-offloads"),
        "kernel_vxlan": kernel_vxlan((1, STREAMS)),
        "pasta": pasta(),
    }
    podnet, kernel = figures["podnet_netns_pods"], figures["kernel_vxlan"]
    figures["tcp_ratio_to_kernel"] = round(podnet["tcp_mbit_s"] / (kernel["tcp_gbit_s"] * 1000), 4)
    figures[f"tcp_{STREAMS}_streams_ratio_to_kernel"] = round(
        podnet[f"tcp_{STREAMS}_streams_mbit_s"] / (kernel[f"tcp_{STREAMS}_streams_gbit_s"] * 1000), 4)
    if figures["pasta"]:
        figures["tcp_ratio_to_pasta"] = round(podnet["tcp_mbit_s"] / figures["pasta"]["tcp_mbit_s"], 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
