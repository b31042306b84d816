"""`podnet dns` runs the cluster DNS server; `podnet dig` asks a DNS server one question and prints the
answer the way dig does."""

from __future__ import annotations

import random
import re
import socket
import time
from pathlib import Path

import typer
from dnslib import EDNS0, QTYPE, DNSError, DNSRecord

from podnet.cli.common import HomeOption, KubeconfigOption, fail
from podnet.cli.daemon import CaFile, Kubeconfig, Server, TokenFile, api_credentials
from podnet.rpc.agentmethods import AgentMethod

DIG_TIMEOUT = 2.0
LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
DIG_TRIES = 3


def _parse_server(text: str) -> tuple[str, int]:
    from podnet.dns.config import parse_upstream

    try:
        return parse_upstream(text)
    except ValueError as exc:
        raise fail(f"error: --server {text!r}: {exc}") from None


def build_query(name: str, qtype: str) -> DNSRecord:
    query = DNSRecord.question(name, qtype.upper())
    query.header.id = random.randrange(1 << 16)
    query.add_ar(EDNS0(udp_len=1232))
    return query


def exchange_udp(query: bytes, server: tuple[str, int], timeout: float = DIG_TIMEOUT, tries: int = DIG_TRIES) -> bytes:
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect(server)
        for _ in range(tries):
            sock.send(query)
            deadline = time.monotonic() + timeout
            try:
                while True:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    reply = sock.recv(65535)
                    if reply[:2] == query[:2] and len(reply) >= 12:
                        return reply
            except TimeoutError:
                continue
    raise TimeoutError("connection timed out; no servers could be reached")


def exchange_tcp(query: bytes, server: tuple[str, int], timeout: float = DIG_TIMEOUT) -> bytes:
    with socket.create_connection(server, timeout=timeout) as sock:
        sock.sendall(len(query).to_bytes(2, "big") + query)
        data = b""
        while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
            chunk = sock.recv(65535)
            if not chunk:
                raise ConnectionError("the server closed the connection before answering")
            data += chunk
        return data[2:2 + int.from_bytes(data[:2], "big")]


def dig_text(name: str, qtype: str, server: tuple[str, int], reply: bytes, transport: str, elapsed: float) -> str:
    parsed = DNSRecord.parse(reply)
    return "\n".join([
        f"; <<>> podnet dig <<>> @{server[0]} -p {server[1]} {name} {qtype.upper()}",
        ";; Got answer:",
        str(parsed),
        "",
        f";; Query time: {int(elapsed * 1000)} msec",
        f";; SERVER: {server[0]}#{server[1]}({server[0]}) ({transport})",
        f";; WHEN: {time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}",
        f";; MSG SIZE  rcvd: {len(reply)}",
    ])


def dig_from_pod(
    pod: str, namespace: str, name: str, qtype: str, server: str | None, tcp: bool, search: bool, timeout: float,
    api_server: str | None, token: str | None, kubeconfig: Path | None,
) -> None:
    """The question asked by the pod's own stack (`pod.dig` on its node's agent), printed like dig."""
    from podnet.cli.common import client_for, run_async
    from podnet.cli.pods_cmd import agent_socket, running_pod
    from podnet.rpc.session import call_once

    pod_namespace, _, pod_name = pod.rpartition("/")
    pod_namespace = pod_namespace or namespace
    params = {"namespace": pod_namespace, "pod": pod_name, "name": name, "type": qtype, "tcp": tcp,
              "search": search, "timeout": timeout, "tries": DIG_TRIES}
    if server:
        host, port = _parse_server(server)
        params["server"] = f"{host}:{port}"

    async def run() -> dict:
        async with client_for(api_server, token, kubeconfig) as client:
            obj = await running_pod(client, pod_namespace, pod_name)
        socket_path = agent_socket(obj["spec"]["nodeName"], None)
        return await call_once(socket_path, AgentMethod.POD_DIG, params, timeout=(timeout + 1) * DIG_TRIES * 4 + 10)

    result = run_async(run())
    if not result["ok"]:
        typer.echo(f";; from pod {pod_namespace}/{pod_name}: {result['reason']}", err=True)
        raise typer.Exit(9)
    host, _, port = result["server"].rpartition(":")
    typer.echo(dig_text(result["name"], qtype, (host, int(port)), result["reply"], result["transport"],
                        result["seconds"]))
    typer.echo(f";; FROM: pod {pod_namespace}/{pod_name}")


def register(app: typer.Typer) -> None:
    @app.command("dns")
    def dns(
        address: str = typer.Option("127.0.0.1", "--address", help="Address to answer on (UDP and TCP)."),
        port: int = typer.Option(None, "--port", help="Port (default 53 as root, else 5353; 0 picks one)."),
        server: Server = None,
            token_file: TokenFile = None,
        ca_file: CaFile = None,
        kubeconfig: Kubeconfig = None,
        upstream: list[str] = typer.Option([], "--upstream", help="IP[:PORT] for names outside the zone."),
        zone: str = typer.Option("cluster.local", "--zone", help="The cluster domain."),
        ttl: int = typer.Option(5, "--ttl", help="TTL of every answer, seconds."),
        metrics_port: int = typer.Option(9153, "--metrics-port", help="/healthz and /metrics (0 picks one)."),
        no_metrics: bool = typer.Option(False, "--no-metrics", help="Serve no /healthz or /metrics."),
        objects: Path = typer.Option(None, "--objects", help="Take records from this manifest file, not an API server."),
        no_register: bool = typer.Option(False, "--no-register", help="Register no kube-dns pod for this server."),
        replica: str = typer.Option(None, "--replica", help="This replica's name, a label value on its pod in "
                                    "kube-system (default <address>-<port>)."),
        cluster_ip: str = typer.Option("10.96.0.10", "--cluster-ip", help="kube-dns ClusterIP, if it must be created."),
        log_level: str = typer.Option("INFO", "--log-level"),
    ) -> None:
        """Run the cluster DNS server."""
        from podnet import logs, process
        from podnet.api.manifests import ManifestError
        from podnet.dns.config import DnsConfig, default_port, parse_upstream
        from podnet.dns.process import serve

        api = api_credentials(server, token_file, ca_file, kubeconfig)
        if api is None and objects is None:
            raise fail("error: give --kubeconfig FILE or --server URL (or --objects FILE)")
        if replica is not None and not LABEL_VALUE.fullmatch(replica):
            raise fail(f"error: --replica {replica!r} is not a label value (at most 63 letters, digits, '-', '_' "
                       "or '.', beginning and ending with a letter or digit)")
        try:
            upstreams = tuple(parse_upstream(u) for u in upstream)
        except ValueError as exc:
            raise fail(f"error: --upstream: {exc}") from None
        config = DnsConfig(
            address=address, port=default_port() if port is None else port, server=api.server if api else None,
            fallbacks=api.fallbacks if api else (),
            token=api.token if api else None, tls=api.tls if api else None,
            objects_file=objects, upstreams=upstreams, zone=zone, ttl=ttl,
            metrics_port=None if no_metrics else metrics_port, register=not no_register, cluster_ip=cluster_ip,
            replica=replica,
        )
        logs.setup("dns", log_level)
        try:
            process.run(lambda shutdown: serve(config, shutdown_trigger=shutdown))
        except (ManifestError, OSError) as exc:
            raise fail(f"error: {exc}") from None

    @app.command("dig")
    def dig(
        name: str = typer.Argument(..., help="The name to look up."),
        qtype: str = typer.Argument("A", help="Record type: A, AAAA, SRV, PTR, TXT, CNAME, SOA, NS, ANY..."),
        server: str = typer.Option(None, "--server", help="DNS server ADDR[:PORT] (default 127.0.0.1:53; from a "
                                   "pod, its nameserver 10.96.0.10:53)."),
        tcp: bool = typer.Option(False, "--tcp", help="Ask over TCP (UDP retries over TCP when truncated)."),
        from_pod: str = typer.Option(None, "--from", help="Ask from inside this pod (NAME or NAMESPACE/NAME): the "
                                     "query leaves the pod's IP, through kube-proxy and its NetworkPolicies."),
        namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace of the --from pod."),
        search: bool = typer.Option(False, "--search", help="With --from: use the pod's search list, as dig +search."),
        timeout: float = typer.Option(DIG_TIMEOUT, "--timeout", help="Seconds to wait for each answer."),
        api_server: str = typer.Option(None, "--api-server", envvar="PODNET_SERVER", help="API server URL (--from)."),
        token: str = typer.Option(None, "--token", envvar="PODNET_TOKEN", help="Bearer token (--from)."),
        kubeconfig: Path | None = KubeconfigOption,
        home: Path | None = HomeOption,
    ) -> None:
        """Ask a DNS server one question, from this host or from inside a pod, and print the answer like dig."""
        if QTYPE.get(qtype.upper(), None) is None:
            raise fail(f"error: unknown record type {qtype!r}")
        if from_pod is not None:
            dig_from_pod(from_pod, namespace, name, qtype, server, tcp, search, timeout, api_server, token, kubeconfig)
            return
        address = _parse_server(server or "127.0.0.1:53")
        query = build_query(name, qtype).pack()
        started = time.monotonic()
        transport = "TCP" if tcp else "UDP"
        try:
            reply = exchange_tcp(query, address, timeout) if tcp else exchange_udp(query, address, timeout)
            if not tcp and reply[2] & 0x02:
                typer.echo(";; Truncated, retrying in TCP mode.")
                transport = "TCP"
                reply = exchange_tcp(query, address, timeout)
            text = dig_text(name, qtype, address, reply, transport, time.monotonic() - started)
        except (OSError, TimeoutError) as exc:
            typer.echo(f";; {exc}", err=True)
            raise typer.Exit(9) from None
        except DNSError as exc:
            raise fail(f";; malformed reply: {exc}") from None
        typer.echo(text)
