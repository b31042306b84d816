"""`podnet nodeagent`: runs one host's node agent (also `python -m podnet.nodeagent`)."""

from __future__ import annotations

from typing import Annotated

import typer

from podnet.backends import BACKENDS, BACKENDS_HELP, ENCRYPTIONS, ENCRYPTIONS_HELP, POD_MODES
from podnet.cli.daemon import (
    CaFile,
    Kubeconfig,
    LogLevel,
    Server,
    TokenFile,
    api_credentials,
    check_choice,
    metrics_port_or_none,
    require_server,
    run,
)
from podnet.process import keep_freed_heap, quiet_garbage_collector


def nodeagent(
    name: Annotated[str, typer.Option(help="Node name, as registered in the API.")],
    address: Annotated[str, typer.Option(help="The node's address: InternalIP and the VXLAN endpoint.")],
    server: Server = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    kubeconfig: Kubeconfig = None,
    state_dir: Annotated[str | None, typer.Option(help="Where the agent keeps IPAM state and agent.sock (default $PODNET_HOME/nodes/NAME).")] = None,
    vxlan_port: Annotated[int, typer.Option(help="UDP port of VXLAN, here and on every peer.")] = 4789,
    fou_port: Annotated[int, typer.Option(help="UDP port of foo-over-UDP (the bgp backend), here and on every peer.")] = 5555,
    metrics_port: Annotated[int, typer.Option(help="Port of /healthz and /metrics on the node address (0: any free port, -1: none).")] = 0,
    backend: Annotated[str, typer.Option(help=BACKENDS_HELP)] = "vxlan",
    encryption: Annotated[str, typer.Option(help=ENCRYPTIONS_HELP)] = "none",
    wireguard_port: Annotated[int, typer.Option(help="UDP port of WireGuard, here and on every peer.")] = 51871,
    cluster_cidr: Annotated[str, typer.Option(help="The pod network.")] = "10.244.0.0/16",
    pod_mode: Annotated[str, typer.Option(help="Pods without a podnet.io/pod-mode annotation: virtual (a stack in the agent) or netns (a real network namespace; root, Linux).")] = "virtual",
    tap_offloads: Annotated[bool, typer.Option(help="netns pods' TAPs take checksum and TCP segmentation offload: the pipeline carries 64 KB super-packets, segmented at the tunnel, and joins what arrives back into them.")] = True,
    renew_interval: Annotated[float, typer.Option(help="Seconds between renewals of the node's Lease (keep it well under the node grace period).")] = 5.0,
    kubelet_port: Annotated[int, typer.Option(help="Port of the kubelet API (exec, logs) on the node address (0: any free port).")] = 0,
    kubelet_tls_cert_file: Annotated[str | None, typer.Option(help="Serving certificate (PEM) of the kubelet API; without it the API is not served.")] = None,
    kubelet_tls_private_key_file: Annotated[str | None, typer.Option(help="Its private key (PEM).")] = None,
    kubelet_client_ca_file: Annotated[str | None, typer.Option(help="CA (PEM) the kubelet API's clients' certificates must chain to.")] = None,
    proxy_protocol_from: Annotated[list[str] | None, typer.Option(help="Address or CIDR of the cloud load balancer (repeatable): only connections from it may name their client by a PROXY protocol header.")] = None,
    protect_port: Annotated[list[str] | None, typer.Option(help="A host port pods may not reach through the host bridge, tcp/PORT, udp/PORT or PROTO/ADDRESS:PORT (repeatable; the tunnel ports, BGP and etcd always are).")] = None,
    log_level: LogLevel = "info",
) -> None:
    """Run a node agent: registers the Node, gives pods addresses and network stacks, forwards their traffic."""
    from podnet import logs
    from podnet.nodeagent.agent import AgentConfig, serve
    from podnet.nodeagent.encryption import encrypted, private_key
    from podnet.nodeagent.hostguard import ProtectedPort
    from podnet.nodeagent.nodeports import trusted_proxies

    check_choice("backend", backend, BACKENDS)
    check_choice("pod-mode", pod_mode, POD_MODES)
    check_choice("encryption", encryption, ENCRYPTIONS)
    try:
        trusted_proxies(proxy_protocol_from or ())
    except ValueError as exc:
        typer.echo(f"error: --proxy-protocol-from: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        for text in protect_port or ():
            ProtectedPort.parse(text)
    except ValueError as exc:
        typer.echo(f"error: --protect-port: {exc}", err=True)
        raise typer.Exit(2) from None
    api = require_server(api_credentials(server, token_file, ca_file, kubeconfig))
    logs.setup(f"nodeagent/{name}", log_level)
    config = AgentConfig(
        name=name,
        address=address,
        server=api.server,
        fallbacks=api.fallbacks,
        token=api.token,
        tls=api.tls,
        state_dir=state_dir,
        vxlan_port=vxlan_port,
        fou_port=fou_port,
        metrics_port=metrics_port_or_none(metrics_port),
        backend=backend,
        encryption=encryption,
        wireguard_port=wireguard_port,
        cluster_cidr=cluster_cidr,
        pod_mode=pod_mode,
        tap_offloads=tap_offloads,
        renew_interval=renew_interval,
        kubelet_port=kubelet_port,
        kubelet_cert_file=kubelet_tls_cert_file,
        kubelet_key_file=kubelet_tls_private_key_file,
        kubelet_client_ca_file=kubelet_client_ca_file,
        proxy_protocol_from=tuple(proxy_protocol_from or ()),
        protected_ports=tuple(protect_port or ()),
    )
    if encrypted(config):
        try:  # made now if this is the node's first start: a key that cannot be used stops the agent here
            config.state_path.mkdir(parents=True, exist_ok=True)
            private_key(config.state_path)
        except (OSError, ValueError) as exc:
            typer.echo(f"error: --encryption wireguard: {exc}", err=True)
            raise typer.Exit(2) from None
    quiet_garbage_collector()
    keep_freed_heap()
    run(serve, config)


def register(app: typer.Typer) -> None:
    app.command("nodeagent")(nodeagent)
