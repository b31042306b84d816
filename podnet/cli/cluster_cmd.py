"""`podnet up` and the commands that manage a running local cluster: status, logs, kill, start, down, clean."""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

import typer

from podnet.api import clusterdns
from podnet.apiserver.election import CONTROLLER_MANAGER_LEASE, LEASE_NAMESPACE
from podnet.backends import BACKENDS_HELP, ENCRYPTIONS_HELP, PROXY_MODES_HELP
from podnet.cli import etcd_status
from podnet.cli.common import HomeOption, fail
from podnet.client import ApiClient, ApiError, podnet_home
from podnet.cluster import (
    auditpolicy,
    credentials,
    etcd_credentials,
    kubelet_credentials,
    netns_hosts,
    readiness,
    supervisor,
    topology,
)
from podnet.cluster.supervisor import ClusterState, SupervisorError


def _home(home: Path | None) -> Path:
    return (home or podnet_home()).expanduser().resolve()


def issue_credentials(topo: topology.Topology, home: Path, *, admin_server: str | None = None,
                      extra_addresses: tuple[str, ...] = ()) -> str:
    """Every credential of `topo`'s cluster under `home` (see podnet/cluster/credentials.py): one kubeconfig
    for each process that talks to the API server, over TLS the kubelet API's certificates
    (podnet/cluster/kubelet_credentials.py), and on etcd etcd's (podnet/cluster/etcd_credentials.py).
    Returns the admin token."""
    clients = [spec.name for spec in topology.components(topo) if "--kubeconfig" in spec.argv]
    now = datetime.datetime.now(datetime.UTC)
    admin_token = credentials.issue(home, server=topo.api_url, api_addresses=(*topo.api_addresses, *extra_addresses),
                                    service_cidr=topo.service_cidr, components=clients, now=now,
                                    admin_server=admin_server, tls=not topo.insecure_http, fallbacks=topo.api_urls[1:])
    if not topo.insecure_http:
        kubelet_credentials.issue(home, [node.address for node in topo.nodes], now)
    if topo.store == "etcd":
        etcd_credentials.issue(home, [topo.host("etcd")], now)
    return admin_token


def _is_apiserver(component: str) -> bool:
    return component == "apiserver" or component.startswith("apiserver-")


def _load(home: Path | None) -> ClusterState:
    try:
        return ClusterState.load(_home(home))
    except SupervisorError as exc:
        raise fail(f"error: {exc}") from None


async def controller_leader(home: Path) -> str:
    """Who holds the kube-controller-manager Lease, as the API says (its holder runs the controllers)."""
    try:
        async with ApiClient.from_kubeconfig(home / "kubeconfig", timeout=3.0) as client:
            lease = await client.get("leases", CONTROLLER_MANAGER_LEASE, LEASE_NAMESPACE)
    except ApiError as e:
        return "unknown (the API did not answer)" if e.code in (0, 503) else f"unknown ({e})"
    except OSError as e:
        return f"unknown ({e})"
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or "none"
    return f"{holder} (since {spec.get('acquireTime', '?')}, {spec.get('leaseTransitions', 0)} transitions)"


async def bring_up(topo: topology.Topology, *, timeout: float = 120.0) -> ClusterState:
    home = topo.home
    if (home / supervisor.STATE_FILE).exists():
        old = ClusterState.load(home)
        running = [p.name for p in old.processes if p.alive]
        if running:
            raise SupervisorError(f"a cluster is already running in {home} ({', '.join(running)}); "
                                  "`podnet down` first")
    # The store, the logs, cluster.json and the agents' sockets and state are the cluster's: no one else's to read.
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    specs = topology.components(topo)
    issue_credentials(topo, home)
    topo_data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(topo).items()}
    state = supervisor.new_state(home, topo_data, specs)
    state.save()
    started = time.monotonic()
    if topo.host_mode == "netns":
        typer.echo(f"  hosts: {len(topo.nodes)} network namespaces on bridge {netns_hosts.BRIDGE} ({topo.control_address})")
        netns_hosts.setup(topo.control_address, [(n.name, n.address) for n in topo.nodes])
    for proc in state.processes:
        typer.echo(f"  starting {proc.name:<22}", nl=False)
        supervisor.launch(state, proc)
        await supervisor.wait_healthy(state, proc)
        typer.echo(f"pid {proc.pid:<8} healthy ({time.monotonic() - started:.1f}s)")
    async with ApiClient.from_kubeconfig(home / "kubeconfig") as client:
        names = {n.name for n in topo.nodes}

        async def all_ready() -> bool:
            return names <= await readiness.ready_nodes(client)

        typer.echo(f"  waiting for {len(names)} nodes to be Ready", nl=False)
        if not await readiness.wait_until(all_ready, timeout):
            raise SupervisorError(f"nodes not Ready after {timeout:.0f}s: "
                                  f"{sorted(names - await readiness.ready_nodes(client))}")
        typer.echo(f" ... ok ({time.monotonic() - started:.1f}s)")
        typer.echo("  waiting for the cluster DNS to sync and its pod to be Ready", nl=False)
        if not await readiness.wait_until(lambda: readiness.dns_answers(topo.host("dns"), topo.dns_port), timeout):
            raise SupervisorError("the cluster DNS did not answer kubernetes.default within the timeout")
        if not await readiness.wait_until(lambda: readiness.service_ready(client, clusterdns.NAMESPACE,
                                                                          clusterdns.SERVICE_NAME), timeout):
            raise SupervisorError("the cluster DNS pod is not a ready endpoint of kube-system/kube-dns "
                                  f"after {timeout:.0f}s (`podnet get pods -n kube-system -o wide`)")
        if not await readiness.wait_until(lambda: readiness.service_ready(client, "default", "kubernetes"), timeout):
            raise SupervisorError(f"no API server is an endpoint of default/kubernetes after {timeout:.0f}s")
        typer.echo(f" ... ok ({time.monotonic() - started:.1f}s)")
    return state


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        nodes: int = typer.Option(3, "--nodes", help="How many nodes (hosts)."),
        store: str = typer.Option("sqlite", "--store", help="sqlite (embedded) or etcd."),
        backend: str = typer.Option("vxlan", "--backend", help=BACKENDS_HELP),
        proxy_mode: str = typer.Option("iptables", "--proxy-mode", help=PROXY_MODES_HELP),
        encryption: str = typer.Option("none", "--encryption", help=ENCRYPTIONS_HELP),
        prefix: str = typer.Option("127.0.0", "--prefix", help="First three octets of the cluster's addresses."),
        api_port: int = typer.Option(6443, "--api-port"),
        dns_port: int = typer.Option(1053, "--dns-port"),
        lb_pool: str = typer.Option("127.0.1.0/24", "--lb-pool", help="Addresses for LoadBalancer Services."),
        node_grace_period: float = typer.Option(40.0, "--node-grace-period"),
        pod_eviction_timeout: float = typer.Option(300.0, "--pod-eviction-timeout"),
        demo: bool = typer.Option(False, "--demo", help="Apply the demo app and show what it does."),
        hosts: str = typer.Option("local", "--hosts", help="local (hosts are 127.0.0.x addresses) or netns "
                                  "(each node's processes in a network namespace on a bridge, 203.0.113.0/24; root)."),
        pod_mode: str = typer.Option("virtual", "--pod-mode", help="virtual (a stack in the agent) or netns "
                                     "(real network namespaces that run real programs; root)."),
        insecure_http: bool = typer.Option(False, "--insecure-http", help="Serve the API on plain HTTP with "
                                           "tokens (debugging only: kubectl sends no token over HTTP)."),
        ui: bool = typer.Option(True, "--ui/--no-ui", help="Serve the web UI (`podnet ui`)."),
        dns_replicas: int = typer.Option(1, "--dns-replicas", help="Cluster DNS servers behind kube-dns (1-5)."),
        etcd_members: int = typer.Option(1, "--etcd-members", help="etcd members with --store etcd (1, 3 or 5)."),
        apiservers: int = typer.Option(1, "--apiservers", help="API servers on the one etcd (1-5, --store etcd), "
                                       "each on an address of its own: <prefix>.10, .9, .8..."),
        home: Path | None = HomeOption,
    ) -> None:
        """Start a local multi-host cluster as separate processes and return, leaving it running."""
        if hosts not in ("local", "netns"):
            raise fail(f"error: --hosts must be local or netns, not {hosts!r}")
        try:
            if hosts == "netns" or pod_mode == "netns":
                netns_hosts.require_root(f"--hosts {hosts} --pod-mode {pod_mode}")
            if hosts == "netns" and prefix == "127.0.0":
                prefix = netns_hosts.LAB_PREFIX
            topo = topology.build(
                _home(home), nodes, prefix=prefix, store=store, backend=backend, proxy_mode=proxy_mode,
                layout="netns" if hosts == "netns" else "loopback",
                api_port=api_port, dns_port=dns_port, lb_pool=lb_pool, node_grace_period=node_grace_period,
                pod_eviction_timeout=pod_eviction_timeout, pod_mode=pod_mode, insecure_http=insecure_http, ui=ui,
                dns_replicas=dns_replicas, etcd_members=etcd_members, apiservers=apiservers, encryption=encryption,
            )
        except (topology.TopologyError, netns_hosts.HostsError) as exc:
            raise fail(f"error: {exc}") from None
        if store == "etcd" and not shutil.which("etcd"):
            raise fail("error: --store etcd needs the etcd binary on PATH (Debian: apt-get install etcd-server)")
        encrypted = f", {encryption} encryption" if encryption != "none" else ""
        typer.echo(f"podnet: {nodes} nodes, {store} store, {backend} backend{encrypted}, kube-proxy {proxy_mode}; "
                   f"home {topo.home}")
        try:
            asyncio.run(bring_up(topo))
        except SupervisorError as exc:
            typer.echo("")
            raise fail(f"error: {exc}\n(the processes that did start are still running: `podnet down`)") from None
        typer.echo(f"cluster is up: API {', '.join(topo.api_urls)}, kubeconfig {topo.home / 'kubeconfig'}")
        if topo.ui:
            typer.echo(f"  web UI {topo.ui_url}/ (log in with the token `podnet ui-token` prints; --viewer: read-only)")
        typer.echo(f"  try: podnet get nodes -o wide   |   export KUBECONFIG={topo.home / 'kubeconfig'}")
        if demo:
            from podnet.cluster.demo import run_demo

            asyncio.run(run_demo(topo.home))

    @app.command()
    def status(home: Path | None = HomeOption, output: str = typer.Option("table", "--output", "-o")) -> None:
        """Every process of the local cluster with its PID, health and restarts."""
        state = _load(home)

        etcd = etcd_status.members(state.processes)

        async def check() -> tuple[list[tuple[supervisor.Process, bool]], str, list]:
            return ([(p, p.alive and await supervisor.healthy(p.health)) for p in state.processes],
                    await controller_leader(state.home),
                    await etcd_status.statuses(state.home, [endpoint for _, endpoint in etcd]) if etcd else [])

        results, leader, members = asyncio.run(check())
        if output == "json":
            typer.echo(json.dumps([{"name": p.name, "pid": p.pid if p.alive else None, "running": p.alive,
                                    "healthy": ok, "restarts": p.restarts} for p, ok in results], indent=2))
            return
        rows = [["COMPONENT", "PID", "STATE", "HEALTH", "RESTARTS"]]
        for p, ok in results:
            rows.append([p.name, str(p.pid) if p.alive else "-", "running" if p.alive else "stopped",
                         "ok" if ok else ("-" if not p.alive else "unhealthy"), str(p.restarts)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            typer.echo("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        typer.echo(f"controllers' leader: {leader}")
        if members:
            for line in etcd_status.render([name for name, _ in etcd], members):
                typer.echo(line)

    @app.command()
    def logs(
        component: str,
        lines: int = typer.Option(50, "--tail"),
        follow: bool = typer.Option(False, "--follow", "-f"),
        audit: bool = typer.Option(False, "--audit", help="The API server's audit log (one JSON event a line) "
                                   "instead of its process log."),
        home: Path | None = HomeOption,
    ) -> None:
        """Print a component's log (node-1/agent, apiserver, dns, ...)."""
        state = _load(home)
        try:
            state.process(component)
        except SupervisorError as exc:
            raise fail(f"error: {exc}") from None
        if audit and not _is_apiserver(component):
            raise fail(f"error: --audit is an API server's log; {component} keeps none")
        path = auditpolicy.log_file(state.home, component) if audit else state.log_path(component)
        if not path.exists():
            raise fail(f"error: {component} has no {'audit ' if audit else ''}log yet")
        with open(path, errors="replace") as f:
            for line in f.readlines()[-lines:]:
                typer.echo(line, nl=False)
            while follow:
                line = f.readline()
                if line:
                    typer.echo(line, nl=False)
                else:
                    time.sleep(0.2)

    @app.command()
    def kill(
        component: str,
        signal_name: str = typer.Option("KILL", "--signal", help="KILL, TERM, STOP or CONT."),
        home: Path | None = HomeOption,
    ) -> None:
        """Send a signal to one component (SIGKILL by default), for chaos exercises."""
        state = _load(home)
        try:
            proc = state.process(component)
            sig = signal.Signals[f"SIG{signal_name.upper().removeprefix('SIG')}"]
        except (SupervisorError, KeyError) as exc:
            raise fail(f"error: {exc}") from None
        if not supervisor.signal_process(proc, sig):
            raise fail(f"error: {component} is not running")
        typer.echo(f"{component}: sent {sig.name} to pid {proc.pid}")

    @app.command()
    def start(component: str, home: Path | None = HomeOption) -> None:
        """Start one stopped component again."""
        state = _load(home)
        try:
            proc = state.process(component)
            supervisor.launch(state, proc)
            asyncio.run(supervisor.wait_healthy(state, proc))
        except SupervisorError as exc:
            raise fail(f"error: {exc}") from None
        typer.echo(f"{component}: started, pid {proc.pid}")

    @app.command()
    def down(home: Path | None = HomeOption) -> None:
        """Stop every process of the local cluster, in reverse start order."""
        state = _load(home)
        asyncio.run(supervisor.stop_all(state))
        for name in netns_hosts.clean_home(state.home, state.topology):
            typer.echo(f"removed {name}")
        typer.echo(f"cluster in {state.home} stopped")

    @app.command()
    def clean(
        home: Path | None = HomeOption,
        everything: bool = typer.Option(False, "--all", help="Also every network namespace, veth, TAP and "
                                        "bridge podnet made on this machine, whichever cluster made it."),
    ) -> None:
        """Remove whatever a crashed run left: its processes, network namespaces, links, sockets and state."""
        h = _home(home)
        state_file = h / supervisor.STATE_FILE
        if state_file.exists():
            try:
                state = ClusterState.load(h)
            except SupervisorError:
                state = None
            if state:
                for proc in state.processes:
                    supervisor.signal_process(proc, signal.SIGKILL)
        removed = netns_hosts.clean_home(h, netns_hosts.topology_of(h))
        if everything:
            removed += netns_hosts.clean_all()
        for name in removed:
            typer.echo(f"removed {name}")
        for leftover in (*(f"etcd-{i}" for i in range(2, 6)), "cluster.json", "nodes", "logs", "etcd", "store.db", "store.db-wal", "store.db-shm", "kubeconfig",
                         credentials.PKI_DIR):
            path = h / leftover
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
        typer.echo(f"cleaned {h}")
