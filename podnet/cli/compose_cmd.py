"""`podnet compose`: the docker-compose multi-host cluster. `render` writes the compose file from the topology;
`launch` runs one container's processes; `kubeconfig` and `wait` connect the host's CLI to a cluster that
compose started."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import typer

from podnet.backends import BACKENDS_HELP, ENCRYPTIONS_HELP, PROXY_MODES_HELP
from podnet.cli.cluster_cmd import issue_credentials
from podnet.cli.common import fail
from podnet.client import ApiClient
from podnet.cluster import compose, launcher, readiness, topology

HomeOption = typer.Option(..., "--home", envvar="PODNET_COMPOSE_HOME",
                          help="The compose cluster's home on this host (node state and kubeconfig).")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The docker-compose multi-host cluster (deploy/docker-compose.yml).",
                        no_args_is_help=True)
    app.add_typer(group, name="compose")

    @group.command()
    def render(
        output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
        nodes: int = typer.Option(3, "--nodes"),
        store: str = typer.Option("etcd", "--store", help="etcd (its own container) or sqlite (in the API server's)."),
        backend: str = typer.Option("vxlan", "--backend", help=BACKENDS_HELP),
        proxy_mode: str = typer.Option("iptables", "--proxy-mode", help=PROXY_MODES_HELP),
        encryption: str = typer.Option("none", "--encryption", help=ENCRYPTIONS_HELP),
        prefix: str = typer.Option(compose.DEFAULT_PREFIX, "--prefix", help="First three octets of the compose network."),
    ) -> None:
        """Write the docker-compose file of a cluster: one container per host, fixed addresses."""
        try:
            topo = compose.build_topology(nodes, prefix=prefix, store=store, backend=backend, proxy_mode=proxy_mode,
                                          encryption=encryption)
        except topology.TopologyError as exc:
            raise fail(f"error: {exc}") from None
        text = compose.to_yaml(compose.render(topo))
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text)

    @group.command(hidden=True)
    def launch(
        processes: list[str] = typer.Argument(..., help="Processes in start order, as JSON objects."),
        wait_for: list[str] = typer.Option([], "--wait-for", help="Health URLs to wait for before starting."),
        ca_file: str | None = typer.Option(None, "--ca-file", help="The CA of the HTTPS health URLs."),
        timeout: float = typer.Option(180.0, "--timeout"),
    ) -> None:
        """Run one container's processes in order, each healthy before the next; restart none."""
        from podnet import logs

        logs.setup("launcher")
        try:
            specs = [launcher.parse_process(p) for p in processes]
            code = asyncio.run(launcher.launch(specs, wait_urls=wait_for, ca_file=ca_file, timeout=timeout))
        except launcher.LaunchError as exc:
            raise fail(f"error: {exc}") from None
        raise typer.Exit(code)

    @group.command()
    def credentials(
        home: Path = HomeOption,
        nodes: int = typer.Option(3, "--nodes"),
        backend: str = typer.Option("vxlan", "--backend", help=BACKENDS_HELP + " (bgp speakers get credentials too)"),
        prefix: str = typer.Option(compose.DEFAULT_PREFIX, "--prefix", help="First three octets of the compose network."),
    ) -> None:
        """Make the cluster's CA, certificates and tokens under HOME/pki (mounted into every container) and
        HOME/kubeconfig for the host's CLI, which reaches the API server's port published on 127.0.0.1."""
        try:
            topo = compose.build_topology(nodes, prefix=prefix, backend=backend)
        except topology.TopologyError as exc:
            raise fail(f"error: {exc}") from None
        home.mkdir(parents=True, exist_ok=True)
        issue_credentials(topo, home, admin_server=f"https://{compose.PUBLISH_ADDRESS}:{topo.api_port}",
                          extra_addresses=(compose.PUBLISH_ADDRESS,))
        typer.echo(str(home / "kubeconfig"))

    @group.command()
    def wait(
        home: Path = HomeOption,
        nodes: int = typer.Option(3, "--nodes"),
        dns_port: int = typer.Option(1053, "--dns-port", help="The DNS server's port published on 127.0.0.1."),
        timeout: float = typer.Option(300.0, "--timeout"),
    ) -> None:
        """Wait until every node is Ready and the cluster DNS answers, as `podnet up` does."""
        names = {f"node-{i}" for i in range(1, nodes + 1)}
        started = time.monotonic()

        async def run() -> set[str]:
            async with ApiClient.from_kubeconfig(home / "kubeconfig") as client:
                async def all_ready() -> bool:
                    return names <= await readiness.ready_nodes(client)

                if not await readiness.wait_until(all_ready, timeout, interval=1.0):
                    return names - await readiness.ready_nodes(client)
            return set()

        not_ready = asyncio.run(run())
        if not_ready:
            raise fail(f"error: nodes not Ready after {timeout:.0f}s: {sorted(not_ready)}")
        typer.echo(f"{len(names)} nodes Ready ({time.monotonic() - started:.1f}s)")
        remaining = max(1.0, timeout - (time.monotonic() - started))
        if not asyncio.run(readiness.wait_until(
                lambda: readiness.dns_answers(compose.PUBLISH_ADDRESS, dns_port), remaining, interval=1.0)):
            raise fail("error: the cluster DNS did not answer kubernetes.default in time")
        typer.echo(f"cluster DNS answers ({time.monotonic() - started:.1f}s)")

    @group.command()
    def demo(home: Path = HomeOption) -> None:
        """Run the demo (deploy/demo/) against the compose cluster from this host."""
        from podnet.cluster.demo import run_demo

        asyncio.run(run_demo(home))
