"""`podnet apiserver`: runs the API server (also `python -m podnet.apiserver`)."""

from __future__ import annotations

from typing import Annotated

import typer

from podnet.cli.daemon import LogLevel, run


def apiserver(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 6443,
    store: Annotated[str, typer.Option(help="sqlite:///path/to.db or etcd://host:port[,host:port] (default: sqlite in $PODNET_HOME).")] = "",
    token_file: Annotated[str | None, typer.Option(help="Static token CSV: token,user,uid,\"group1,group2\".")] = None,
    kubelet_client_certificate: Annotated[str | None, typer.Option(help="Client certificate (PEM) presented to the nodes' kubelet API (exec, logs).")] = None,
    kubelet_client_key: Annotated[str | None, typer.Option(help="Its private key (PEM).")] = None,
    kubelet_certificate_authority: Annotated[str | None, typer.Option(help="CA (PEM) the kubelets' serving certificates must chain to.")] = None,
    tls_cert: Annotated[str | None, typer.Option(help="TLS certificate (PEM); serves HTTPS with --tls-key.")] = None,
    tls_key: Annotated[str | None, typer.Option(help="TLS private key (PEM).")] = None,
    client_ca_file: Annotated[str | None, typer.Option(help="CA bundle (PEM) that signs client certificates: CN is the user, each O a group.")] = None,
    etcd_certfile: Annotated[str | None, typer.Option(help="Client certificate (PEM) presented to etcd; with --etcd-keyfile and --etcd-cafile the store is reached over TLS.")] = None,
    etcd_keyfile: Annotated[str | None, typer.Option(help="Its private key (PEM).")] = None,
    etcd_cafile: Annotated[str | None, typer.Option(help="CA (PEM) etcd's serving certificate must chain to.")] = None,
    service_account_signing_key_file: Annotated[str | None, typer.Option(help="Private key (PEM, RSA or ECDSA P-256) that signs service-account tokens.")] = None,
    service_account_key_file: Annotated[list[str] | None, typer.Option(help="Public keys (PEM) that verify service-account tokens, besides the signing key's (repeatable).")] = None,
    service_account_issuer: Annotated[str, typer.Option(help="The iss claim of service-account tokens.")] = "https://kubernetes.default.svc.cluster.local",
    api_audiences: Annotated[str, typer.Option(help="Comma-separated audiences the API accepts in service-account tokens (default: the issuer).")] = "",
    audit_policy_file: Annotated[str | None, typer.Option(help="Audit policy (audit.k8s.io/v1 Policy, YAML): which requests are recorded, at which level.")] = None,
    audit_log_path: Annotated[str | None, typer.Option(help="File the audit events are appended to, one JSON object a line ('-': standard output).")] = None,
    no_controllers: Annotated[bool, typer.Option("--no-controllers", help="Do not run the in-process controllers.")] = False,
    node_grace_period: Annotated[float, typer.Option(help="Seconds without a node heartbeat before NotReady.")] = 40.0,
    eviction_timeout: Annotated[float, typer.Option(help="Seconds a node is NotReady before its pods are deleted.")] = 300.0,
    orphaned_pod_quarantine: Annotated[float, typer.Option(help="Seconds a pod bound to a node that does not exist is kept before it is deleted.")] = 40.0,
    service_cidr: Annotated[str, typer.Option(help="Service ClusterIP range.")] = "10.96.0.0/12",
    cluster_cidr: Annotated[str, typer.Option(help="Pod network, split into one block per node.")] = "10.244.0.0/16",
    node_cidr_mask_size: Annotated[int, typer.Option(help="Prefix length of each node's block of the pod network.")] = 24,
    advertise_address: Annotated[str | None, typer.Option(help="Address the kubernetes Service's endpoints name (default: the address the controllers reach this server at).")] = None,
    advertise_port: Annotated[int | None, typer.Option(help="Port the kubernetes Service's endpoints name (default: the port this server listens on).")] = None,
    root_ca_file: Annotated[str | None, typer.Option(help="CA (PEM) the controllers publish in every namespace's kube-root-ca.crt (default: the --client-ca-file CA; none without --tls-cert).")] = None,
    node_port_range: Annotated[str, typer.Option(help="NodePort range LOW-HIGH.")] = "30000-32767",
    allowed_external_ip_cidrs: Annotated[str, typer.Option(help="Comma-separated CIDRs new Service externalIPs may be in (default: none, every new one is refused, as with DenyServiceExternalIPs).")] = "",
    compaction_interval: Annotated[float, typer.Option(help="Seconds between storage compactions (0: never).")] = 300.0,
    bookmark_interval: Annotated[float, typer.Option(help="Seconds between BOOKMARK events on idle watches.")] = 60.0,
    event_ttl: Annotated[float, typer.Option(help="Seconds an Event is kept after it was last recorded.")] = 3600.0,
    max_requests_inflight: Annotated[int, typer.Option(help="Requests served at once, shared by the priority levels (exempt: system:masters).")] = 600,
    max_watches_per_user: Annotated[int, typer.Option(help="Open watches a user outside system:masters may hold; the next is a 429.")] = 100,
    leader_elect: Annotated[bool, typer.Option(help="Run the controllers only while holding the kube-controller-manager Lease, so that several API servers can share a store.")] = True,
    leader_elect_lease_duration: Annotated[float, typer.Option(help="Seconds other candidates wait after the leader's last renewal.")] = 15.0,
    leader_elect_renew_deadline: Annotated[float, typer.Option(help="Seconds the leader keeps acting without a successful renewal.")] = 10.0,
    leader_elect_retry_period: Annotated[float, typer.Option(help="Seconds between attempts to acquire or renew.")] = 2.0,
    log_level: LogLevel = "info",
) -> None:
    """Run the Kubernetes-shaped API server."""
    from podnet import logs
    from podnet.apiserver.app import check_files, serve
    from podnet.apiserver.config import ApiServerConfig
    from podnet.apiserver.election import Timings
    from podnet.apiserver.serviceaddresses import parse_port_range

    logs.setup("apiserver", log_level)
    try:
        config = ApiServerConfig(
            host=host,
            port=port,
            store_url=store,
            token_file=token_file,
            kubelet_client_certificate=kubelet_client_certificate,
            kubelet_client_key=kubelet_client_key,
            kubelet_certificate_authority=kubelet_certificate_authority,
            tls_cert=tls_cert,
            tls_key=tls_key,
            client_ca_file=client_ca_file,
            etcd_certfile=etcd_certfile,
            etcd_keyfile=etcd_keyfile,
            etcd_cafile=etcd_cafile,
            service_account_signing_key_file=service_account_signing_key_file,
            service_account_key_files=tuple(service_account_key_file or ()),
            service_account_issuer=service_account_issuer,
            audit_policy_file=audit_policy_file,
            audit_log_path=audit_log_path,
            api_audiences=tuple(a.strip() for a in api_audiences.split(",") if a.strip()),
            controllers=not no_controllers,
            node_grace_period=node_grace_period,
            eviction_timeout=eviction_timeout,
            orphaned_pod_quarantine=orphaned_pod_quarantine,
            service_cidr=service_cidr,
            cluster_cidr=cluster_cidr,
            node_cidr_mask_size=node_cidr_mask_size,
            advertise_address=advertise_address,
            advertise_port=advertise_port,
            root_ca_file=root_ca_file,
            node_port_range=parse_port_range(node_port_range),
            allowed_external_ip_cidrs=tuple(c for c in allowed_external_ip_cidrs.split(",") if c.strip()),
            compaction_interval=compaction_interval,
            bookmark_interval=bookmark_interval,
            event_ttl=event_ttl,
            max_requests_inflight=max_requests_inflight,
            max_watches_per_user=max_watches_per_user,
            leader_elect=leader_elect,
            leader_election=Timings(leader_elect_lease_duration, leader_elect_renew_deadline, leader_elect_retry_period),
            log_level=log_level,
        )
        config.validate()
        check_files(config)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    run(serve, config)


def register(app: typer.Typer) -> None:
    app.command("apiserver")(apiserver)
