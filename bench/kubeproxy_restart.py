"""kube-proxy restart: from the new process's PID to a Service created while it was down answering.

A real API server, one real node agent with a client pod and a backend pod, and kube-proxy started
again and again through each entry (`python -m podnet.nodeagent.kubeproxy`, `python -m podnet
kubeproxy`), alternating so that the machine's load falls on both alike. Before each start a new Service
is created; the time runs from the PID existing to the pod's HTTP call to the Service's ClusterIP
answering, and the process's own CPU time (user + system, /proc) is read at that moment.

Prints one JSON object: per entry, wall median and minimum, CPU median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.apiserver import ApiServerProcess  # noqa: E402
from support.kubeproxy import WEB_PORTS  # noqa: E402
from support.nodeagent import REPO, AgentProcess, Cluster, free_udp_port, pod_manifest, wait_running  # noqa: E402

ENTRIES = {
    "python -m podnet.nodeagent.kubeproxy": ["-m", "podnet.nodeagent.kubeproxy"],
    "python -m podnet kubeproxy": ["-m", "podnet", "kubeproxy"],
}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
    }


def restart_once(cluster: Cluster, agent: AgentProcess, argv: list[str], name: str) -> tuple[float, float]:
    async def create(client):
        return await client.create(service(name))

    ip = cluster.api_call(create)["spec"]["clusterIP"]
    time.sleep(0.2)  # the Service is in the API server, and nobody programs it
    api = cluster.api
    args = [sys.executable, *argv, "--node", agent.name, "--kubeconfig", str(api.kubeconfig),
            "--agent-socket", agent.socket, "--metrics-port", "-1"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), PODNET_HOME=str(cluster.home))
    with open(cluster.home / "kube-proxy.log", "ab") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    spawned = time.monotonic()
    try:
        while True:
            call = {"namespace": "default", "pod": "a", "url": f"http://{ip}/hostname", "timeout": 0.5}
            if agent.rpc("pod.http", call).get("ok"):
                return time.monotonic() - spawned, cpu_seconds(process.pid)
            if time.monotonic() - spawned > 30 or process.poll() is not None:
                raise RuntimeError(f"{name} not answering through {' '.join(argv)}")
            time.sleep(0.005)
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podnet-bench-restart-") as tmp:
        home = Path(tmp)
        (home / "apiserver").mkdir()
        api = ApiServerProcess(
            home / "apiserver", f"sqlite:///{home / 'apiserver' / 'store.db'}", controllers=True
        )
        agent = None
        try:
            api.start()
            agent = AgentProcess(
                "node-1", "127.0.0.11", home, api.kubeconfig, free_udp_port("127.0.0.11")
            )
            agent.start()
            cluster = Cluster(api, home, {agent.name: agent})

            async def pods(client):
                await client.create(pod_manifest("a", agent.name))
                backend = pod_manifest("web-1", agent.name, ports=WEB_PORTS)
                backend["metadata"]["labels"] = {"app": "web"}
                await client.create(backend)
                for name in ("a", "web-1"):
                    await wait_running(client, "default", name)

            cluster.api_call(pods)
            samples: dict[str, list[tuple[float, float]]] = {entry: [] for entry in ENTRIES}
            for round_ in range(args.rounds):
                for index, (entry, argv) in enumerate(ENTRIES.items()):
                    samples[entry].append(restart_once(cluster, agent, argv, f"during-{round_}-{index}"))
        finally:
            if agent is not None:
                agent.kill()
            api.kill()
    report = {
        entry: {
            "wall_median_s": round(statistics.median(w for w, _ in runs), 3),
            "wall_min_s": round(min(w for w, _ in runs), 3),
            "cpu_median_s": round(statistics.median(c for _, c in runs), 2),
        }
        for entry, runs in samples.items()
    }
    report["load_average"] = os.getloadavg()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
