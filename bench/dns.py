"""Queries per second of `podnet dns` against unbound serving the same records, both measured with
dnsperf in the same run, and the DNS programming latency (Service created → resolvable) through a real
API server. Prints one JSON object.

    .venv/bin/python bench/dns.py [--seconds 20] [--services 1000] [--latency-samples 100] [--no-apiserver]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from dnslib import QTYPE, DNSQuestion, DNSRecord
from podnet.dns.records import Records

REPO = Path(__file__).resolve().parents[1]


def cluster_objects(services: int, headless: int, endpoints: int) -> list[dict]:
    objects = []
    for i in range(services):
        objects.append({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc{i}", "namespace": f"ns{i % 10}"},
            "spec": {"clusterIP": f"10.96.{i // 250 + 1}.{i % 250 + 1}",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        })
    for i in range(headless):
        objects.append({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"hl{i}", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        })
        objects.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"hl{i}-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": f"hl{i}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.244.{i}.{e + 1}"], "conditions": {"ready": True}}
                          for e in range(endpoints)],
        })
    return objects


def query_lines(services: int, headless: int) -> list[str]:
    """What a cluster's resolvers ask: mostly service A records, some SRV and headless lookups, and the
    NXDOMAIN answers that the ndots:5 search path produces."""
    lines = []
    for i in range(services):
        fqdn = f"svc{i}.ns{i % 10}.svc.cluster.local"
        lines.append(f"{fqdn} A")
        if i % 8 == 0:
            lines.append(f"_http._tcp.{fqdn} SRV")
        if i % 8 == 1:
            lines.append(f"{fqdn}.ns{i % 10}.svc.cluster.local A")
    lines.extend(f"hl{i}.default.svc.cluster.local A" for i in range(headless))
    return lines


def unbound_conf(records: Records, port: int, directory: Path) -> str:
    data = "\n".join(f"    local-data: '{line}'" for line in records.zone_lines() if " SOA " not in line)
    reverse_zones = sorted({".".join(line.split()[0].split(".")[-4:]) for line in records.zone_lines()
                            if ".in-addr.arpa." in line.split()[0]})
    reverse = "\n".join(f'    local-zone: "{zone}" static' for zone in reverse_zones)
    return f"""server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-daemonize: no
    num-threads: 1
    username: ""
    chroot: ""
    directory: "{directory}"
    pidfile: "{directory}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "{records.zone}." static
{reverse}
{data}
remote-control:
    control-enable: no
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp.bind(("127.0.0.1", port))
        return port


def ask(port: int, name: str, timeout: float = 0.5, qtype: str = "A") -> DNSRecord | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(DNSRecord(q=DNSQuestion(name, getattr(QTYPE, qtype))).pack(), ("127.0.0.1", port))
        try:
            return DNSRecord.parse(sock.recv(65535))
        except TimeoutError:
            return None


def wait_answering(port: int, name: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        reply = ask(port, name)
        if reply is not None and reply.rr:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} was not answered on port {port} within {timeout}s")


def start_podnet_dns(args: list[str], log_path: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "podnet.dns", "--address", "127.0.0.1", "--port", "0", "--no-metrics", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    seen = b""
    deadline = time.monotonic() + 30
    with open(log_path, "wb") as log:
        while time.monotonic() < deadline and process.poll() is None:
            if not selector.select(timeout=1):
                continue
            chunk = os.read(process.stderr.fileno(), 65536)
            log.write(chunk)
            seen += chunk
            match = re.search(rb'"serving DNS".*?"port": (\d+)', seen)
            if match:
                # Nobody reads its stderr from here on: send it where it cannot fill a pipe.
                selector.close()
                threading_drain(process, log_path)
                return process, int(match.group(1))
    process.kill()
    raise RuntimeError(f"podnet dns did not start: {seen.decode(errors='replace')[-2000:]}")


def threading_drain(process: subprocess.Popen, log_path: Path) -> None:
    import threading

    def copy() -> None:
        with open(log_path, "ab") as log:
            for chunk in iter(lambda: process.stderr.read1(65536), b""):
                log.write(chunk)

    threading.Thread(target=copy, daemon=True).start()


def dnsperf(port: int, query_file: Path, seconds: float) -> dict:
    output = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(query_file), "-l", str(seconds),
         "-c", "1", "-T", "1", "-q", "200", "-t", "2"],
        capture_output=True, text=True, timeout=seconds + 30,
    ).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", output)
    completed = re.search(r"Queries completed:\s+(\d+)", output)
    lost = re.search(r"Queries lost:\s+(\d+)", output)
    if not qps:
        raise RuntimeError(f"dnsperf printed no rate:\n{output}")
    return {"qps": round(float(qps.group(1))), "completed": int(completed.group(1)), "lost": int(lost.group(1))}


def answers(port: int, lines: list[str]) -> list[tuple[int, list[str]]]:
    """(rcode, sorted rdata) for each `name type` line: to check both servers hold the same records."""
    found = []
    for line in lines:
        name, qtype = line.split()
        reply = ask(port, name, qtype=qtype)
        found.append((reply.header.rcode, sorted(str(rr.rdata) for rr in reply.rr)) if reply else (-1, []))
    return found


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def programming_latency(directory: Path, samples: int) -> dict:
    """Starts a real API server and a podnet dns fed by it, then times Service create → A answer."""
    token = "bench-token"
    (directory / "tokens.csv").write_text(f'{token},bench,bench-uid,"system:masters"\n')
    (directory / "token").write_text(token)
    api_port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "podnet.apiserver", "--host", "127.0.0.1", "--port", str(api_port),
         "--store", f"sqlite:///{directory / 'store.db'}", "--token-file", str(directory / "tokens.csv")],
        stdout=open(directory / "apiserver.log", "wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PODNET_HOME": str(directory)},
    )
    dns = None
    try:
        url = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/readyz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or api.poll() is not None:
                    raise RuntimeError("the API server did not start") from None
                time.sleep(0.1)
        dns, dns_port = start_podnet_dns(["--server", url, "--token-file", str(directory / "token"), "--no-register"],
                                         directory / "dns-api.log")
        wait_answering(dns_port, "kubernetes.default.svc.cluster.local", dns)
        latencies = []
        for i in range(samples):
            service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"lat{i}", "namespace": "default"},
                       "spec": {"clusterIP": f"10.100.{i // 250}.{i % 250 + 1}", "ports": [{"port": 80}]}}
            request = urllib.request.Request(
                f"{url}/api/v1/namespaces/default/services", data=json.dumps(service).encode(), method="POST",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            started = time.monotonic()
            urllib.request.urlopen(request, timeout=10).read()
            name = f"lat{i}.default.svc.cluster.local"
            while time.monotonic() - started < 10:
                reply = ask(dns_port, name, timeout=0.2)
                if reply is not None and reply.rr:
                    latencies.append(time.monotonic() - started)
                    break
                time.sleep(0.001)
        latencies.sort()
        return {
            "samples": len(latencies),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
        }
    finally:
        if dns is not None:
            stop(dns)
        stop(api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="dnsperf run per server")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--headless", type=int, default=20)
    parser.add_argument("--endpoints", type=int, default=5, help="endpoints per headless service")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--no-apiserver", action="store_true", help="skip the programming latency")
    args = parser.parse_args()
    for tool in ("dnsperf", "unbound"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is not installed (Debian: apt-get install dnsperf unbound)")

    with tempfile.TemporaryDirectory(prefix="podnet-bench-dns-") as tmp:
        directory = Path(tmp)
        objects = cluster_objects(args.services, args.headless, args.endpoints)
        objects_file = directory / "objects.json"
        objects_file.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        records = Records.from_objects(
            [o for o in objects if o["kind"] == "Service"], [o for o in objects if o["kind"] == "EndpointSlice"])
        query_file = directory / "queries.txt"
        query_file.write_text("\n".join(query_lines(args.services, args.headless)) + "\n")
        probe = "svc0.ns0.svc.cluster.local"

        result: dict = {"services": args.services, "queries_in_file": len(query_lines(args.services, args.headless)),
                        "seconds_per_server": args.seconds}
        podnet, podnet_port = start_podnet_dns(["--objects", str(objects_file)], directory / "dns.log")
        try:
            wait_answering(podnet_port, probe, podnet)
            sample = query_lines(args.services, args.headless)[::37]
            podnet_answers = answers(podnet_port, sample)
            result["podnet_dns"] = dnsperf(podnet_port, query_file, args.seconds)
        finally:
            stop(podnet)

        unbound_port = free_port()
        conf = directory / "unbound.conf"
        conf.write_text(unbound_conf(records, unbound_port, directory))
        unbound_binary = shutil.which("unbound") or "/usr/sbin/unbound"
        unbound = subprocess.Popen([unbound_binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                   stderr=open(directory / "unbound.log", "wb"))
        try:
            wait_answering(unbound_port, probe, unbound)
            result["same_answers"] = answers(unbound_port, sample) == podnet_answers
            result["unbound"] = dnsperf(unbound_port, query_file, args.seconds)
        finally:
            stop(unbound)
        result["ratio"] = round(result["podnet_dns"]["qps"] / result["unbound"]["qps"], 3)

        if not args.no_apiserver:
            result["programming_latency"] = programming_latency(directory, args.latency_samples)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
