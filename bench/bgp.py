"""BGP benchmarks; prints one JSON object.

1. UPDATE processing rate: a feeder (this process, speaking BGP with podnet's codec) sends the same table
   (PREFIXES /24s, PER_UPDATE prefixes per UPDATE, each UPDATE with its own AS_PATH) over eBGP to a
   podnet speaker and then to BIRD 2; the rate is prefixes / (time from the first UPDATE sent until the
   receiver reports every prefix in its table). Receivers are polled every POLL seconds (podnet over its
   RPC socket, BIRD with birdc), so BIRD's much shorter time is measured less precisely.
2. Convergence: SPEAKERS podnet speakers in a full mesh from an API server's Node list, each installing
   into an RPC endpoint here that records when a route arrives. A new node's speaker is started, then its
   Node is created with its podCIDR; the time from that create to the podCIDR installed at every other
   speaker is one sample. TRIALS samples, p50 and p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from podnet.overlay.bgp import messages as m

from podnet.client import ApiClient
from podnet.rpc.session import RpcServer, call_once

REPO = Path(__file__).resolve().parents[1]
PREFIXES = int(os.environ.get("PODNET_BENCH_BGP_PREFIXES", "200000"))
PER_UPDATE = 8
POLL = 0.01
SPEAKERS = 10
TRIALS = int(os.environ.get("PODNET_BENCH_BGP_TRIALS", "20"))
FEEDER, PODNET_RX, BIRD_RX = "127.0.0.201", "127.0.0.202", "127.0.0.203"
MESH = [f"127.0.0.{211 + i}" for i in range(SPEAKERS)]
NEWCOMER = "127.0.0.230"
TOKEN = "bench-token"
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def free_port(*addresses: str) -> int:
    for _ in range(50):
        sockets = []
        try:
            for address in addresses:
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((address, sockets[0].getsockname()[1] if len(sockets) > 1 else 0))
            return sockets[0].getsockname()[1]
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port")


def spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)


def end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL)


# ---- 1. UPDATE processing rate ---------------------------------------------------------------------


def table() -> bytes:
    out = []
    for start in range(0, PREFIXES, PER_UPDATE):
        nlri = tuple(m.Prefix(((11 << 24) + (i << 8)) & 0xFFFFFFFF, 24)
                     for i in range(start, min(start + PER_UPDATE, PREFIXES)))
        attributes = (m.OriginAttribute(m.Origin.IGP), m.AsPath.sequence(65000, 65100 + start // PER_UPDATE % 5000),
                      m.NextHop(FEEDER))
        out.append(m.encode(m.Update(attributes=attributes, nlri=nlri)))
    return b"".join(out) + m.encode(m.END_OF_RIB)


async def read_message(reader: asyncio.StreamReader) -> m.Message:
    header = await reader.readexactly(m.HEADER_LENGTH)
    length = m.frame_length(header)
    return m.decode(header + await reader.readexactly(length - m.HEADER_LENGTH))


async def feed(port: int, updates: bytes, received) -> float:
    """Serves one eBGP session on FEEDER:port, sends `updates`, returns seconds until `received()` is all."""
    connected: asyncio.Queue = asyncio.Queue()
    server = await asyncio.start_server(lambda r, w: connected.put_nowait((r, w)), FEEDER, port)
    try:
        reader, writer = await asyncio.wait_for(connected.get(), 30)
        assert isinstance(await read_message(reader), m.Open)
        writer.write(m.encode(m.Open.build(65000, 90, FEEDER, (m.Multiprotocol(),))) + m.encode(m.KEEPALIVE))
        while not isinstance(await read_message(reader), m.Keepalive):
            pass
        drain = asyncio.create_task(reader.read(-1))  # the receiver's keepalives
        started = time.monotonic()
        writer.write(updates)
        await writer.drain()
        await wait_until(lambda: received(), 300, "the receiver to hold the whole table")
        elapsed = time.monotonic() - started
        drain.cancel()
        writer.close()
        return elapsed
    finally:
        server.close()


async def podnet_rate(directory: Path, updates: bytes) -> float:
    port = free_port(FEEDER, PODNET_RX)
    state = directory / "rx"
    speaker = spawn([sys.executable, "-m", "podnet", "bgp", "--node", "rx", "--address", PODNET_RX, "--port",
                     str(port), "--peer", f"{FEEDER}/65000", "--pod-cidr", "10.255.0.0/24", "--state-dir",
                     str(state), "--graceful-restart-time", "0", "--connect-retry", "1", "--log-level", "WARNING"],
                    directory / "rx.log")

    async def received() -> bool:
        with contextlib.suppress(OSError, ConnectionError):
            peers = await call_once(str(state / "bgp.sock"), "peers", timeout=5)
            return peers[0]["prefixes_received"] >= PREFIXES
        return False

    try:
        return await feed(port, updates, received)
    finally:
        end(speaker)


async def bird_rate(directory: Path, updates: bytes) -> float:
    port = free_port(FEEDER, BIRD_RX)
    config = directory / "bird.conf"
    config.write_text(f"""
router id {BIRD_RX};
protocol device {{ }}
protocol bgp feeder {{
  local {BIRD_RX} port {port} as 64512;
  neighbor {FEEDER} port {port} as 65000;
  multihop;
  strict bind yes;
  hold time 90;
  connect delay time 1;
  connect retry time 1;
  ipv4 {{ import all; export none; }};
}}
""")
    control = str(directory / "bird.ctl")
    bird = spawn(["bird", "-c", str(config), "-s", control, "-f"], directory / "bird.log")

    async def received() -> bool:
        shown = await asyncio.to_thread(subprocess.run, ["birdc", "-s", control, "show", "protocols", "all",
                                                         "feeder"], capture_output=True, text=True)
        found = re.search(r"Routes:\s+(\d+) imported", shown.stdout)
        return bool(found) and int(found.group(1)) >= PREFIXES

    try:
        return await feed(port, updates, received)
    finally:
        end(bird)


# ---- 2. convergence in a full mesh -----------------------------------------------------------------


def node(name: str, address: str, cidr: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]}}


async def convergence(directory: Path) -> list[float]:
    api_port = free_port("127.0.0.1")
    (directory / "tokens.csv").write_text(f'{TOKEN},bench,bench-uid,"system:masters"\n')
    (directory / "token").write_text(TOKEN)
    api = spawn([sys.executable, "-m", "podnet.apiserver", "--host", "127.0.0.1", "--port", str(api_port),
                 "--store", f"sqlite:///{directory / 'store.db'}", "--token-file", str(directory / "tokens.csv"),
                 "--no-controllers"], directory / "apiserver.log")
    url = f"http://127.0.0.1:{api_port}"
    port = free_port(*MESH, NEWCOMER)
    processes: list[subprocess.Popen] = []
    seen: dict[str, dict[str, float]] = {address: {} for address in MESH}
    recorders = []

    def recorder_for(address: str):
        async def apply(params: dict) -> dict:
            now = time.monotonic()
            for route in params["routes"]:
                seen[address].setdefault(route["prefix"], now)
            current = {route["prefix"] for route in params["routes"]}
            for prefix in [p for p in seen[address] if p not in current]:
                del seen[address][prefix]
            return {"routes": len(params["routes"])}
        return apply

    def speaker(name: str, address: str) -> subprocess.Popen:
        state = directory / name
        state.mkdir(exist_ok=True)
        return spawn([sys.executable, "-m", "podnet", "bgp", "--node", name, "--address", address, "--port",
                      str(port), "--server", url, "--token-file", str(directory / "token"), "--agent-socket", str(state / "agent.sock"),
                      "--state-dir", str(state), "--connect-retry", "1", "--log-level", "WARNING"],
                     directory / f"{name}.log")

    try:
        async with ApiClient(url, TOKEN) as client:
            await wait_until(lambda: _ready(client), 30, "the API server")
            for index, address in enumerate(MESH):
                name = f"mesh-{index}"
                (directory / name).mkdir()
                server = RpcServer(str(directory / name / "agent.sock"), {"routes.apply": recorder_for(address)})
                await server.start()
                recorders.append(server)
                await client.create(node(name, address, f"10.240.{index}.0/24"))
                processes.append(speaker(name, address))
            mesh_prefixes = {f"10.240.{i}.0/24" for i in range(SPEAKERS)}

            async def meshed() -> bool:
                return all(len(seen[a].keys() & mesh_prefixes) == SPEAKERS - 1 for a in MESH)

            await wait_until(meshed, 120, "the mesh to converge")
            samples = []
            for trial in range(TRIALS):
                with contextlib.suppress(OSError):
                    os.unlink(directory / "newcomer" / "bgp.sock")
                newcomer = speaker("newcomer", NEWCOMER)
                await wait_until(lambda: _answers(directory / "newcomer" / "bgp.sock"), 30, "the new speaker")
                cidr = f"10.250.{trial}.0/24"
                created = time.monotonic()
                await client.create(node("newcomer", NEWCOMER, cidr))

                async def everywhere(cidr: str = cidr) -> bool:
                    return all(cidr in seen[a] for a in MESH)

                await wait_until(everywhere, 60, f"{cidr} at every speaker")
                samples.append(max(seen[a][cidr] for a in MESH) - created)
                end(newcomer)
                await client.delete("nodes", "newcomer")

                async def gone(cidr: str = cidr) -> bool:
                    return not any(cidr in seen[a] for a in MESH)

                await wait_until(gone, 60, f"{cidr} withdrawn")
            return samples
    finally:
        for process in processes:
            end(process)
        for server in recorders:
            await server.close()
        end(api)


async def _ready(client: ApiClient) -> bool:
    with contextlib.suppress(Exception):
        await client.list("nodes")
        return True
    return False


async def _answers(path: Path) -> bool:
    with contextlib.suppress(OSError, ConnectionError):
        return await call_once(str(path), "ping", timeout=2) == "pong"
    return False


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="podnet-bench-bgp-") as tmp:
        directory = Path(tmp)
        updates = table()
        results: dict = {"prefixes": PREFIXES, "prefixes_per_update": PER_UPDATE,
                         "table_bytes": len(updates)}
        podnet_seconds = await podnet_rate(directory, updates)
        results["podnet_prefixes_per_s"] = round(PREFIXES / podnet_seconds)
        if shutil.which("bird"):
            bird_seconds = await bird_rate(directory, updates)
            results["bird_prefixes_per_s"] = round(PREFIXES / bird_seconds)
            results["podnet_vs_bird"] = round(bird_seconds / podnet_seconds, 3)
        samples = await convergence(directory)
        results.update({
            "mesh_speakers": SPEAKERS, "convergence_samples": len(samples),
            "new_pod_cidr_installed_everywhere_p50_ms": round(statistics.median(samples) * 1000, 1),
            "new_pod_cidr_installed_everywhere_p99_ms": round(percentile(samples, 0.99) * 1000, 1),
            "new_pod_cidr_installed_everywhere_max_ms": round(max(samples) * 1000, 1),
        })
        print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
