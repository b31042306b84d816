"""The cluster DNS as Kubernetes objects: the kube-dns Service, the labels of its pods, and the relay
annotation through which a process on the host network serves a pod's ports.

In Kubernetes the cluster DNS runs as pods in kube-system labelled `k8s-app: kube-dns`, and the kube-dns
Service selects them on port 53; the allow-DNS NetworkPolicies everyone copies rely on exactly that. podnet's
DNS server is a process on the host network, so each replica registers a pod of its own (labels, ports,
readiness probe as CoreDNS's) annotated `podnet.io/relay: "53=127.0.0.10:1053,9153=127.0.0.10:6445"`: the
node agent that runs the pod carries TCP and UDP to those container ports to those host addresses. Pure.
"""

from __future__ import annotations

import ipaddress

NAMESPACE = "kube-system"
SERVICE_NAME = "kube-dns"
POD_LABELS = {"k8s-app": "kube-dns"}
RELAY_ANNOTATION = "podnet.io/relay"
# Only pods of this namespace are relayed: elsewhere the annotation would let anyone who may create a pod
# make a pod address stand for a host port.
RELAY_NAMESPACE = "kube-system"

CLUSTER_DNS = "10.96.0.10"  # the kube-dns Service's address in the default service CIDR
CLUSTER_DOMAIN = "cluster.local"
Relay = dict[int, tuple[str, int]]  # container port -> (host address, port) that serves it


def kube_dns_service(cluster_ip: str) -> dict:
    """The kube-dns Service as kubeadm creates it: selecting the DNS pods on 53/UDP and 53/TCP."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE_NAME, "namespace": NAMESPACE,
                     "labels": {**POD_LABELS, "kubernetes.io/name": "CoreDNS",
                                "kubernetes.io/cluster-service": "true"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "selector": dict(POD_LABELS),
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
    }


def format_relay(relay: Relay) -> str:
    return ",".join(f"{port}={host}:{target}" for port, (host, target) in sorted(relay.items()))


def _port(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError(f"{what} {text!r} is not a port number")
    return int(text)


def parse_relay(text: str) -> Relay:
    """`"53=127.0.0.10:1053,9153=127.0.0.10:6445"` -> {53: ("127.0.0.10", 1053), 9153: (...)}; ValueError
    saying what is wrong otherwise."""
    relay: Relay = {}
    for item in text.split(","):
        port, equals, target = item.strip().partition("=")
        host, colon, target_port = target.rpartition(":")
        if not equals or not colon:
            raise ValueError(f"{item.strip()!r} is not PORT=ADDRESS:PORT")
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {item.strip()!r} is not an IPv4 address") from None
        if address.is_unspecified:
            raise ValueError(f"{host} in {item.strip()!r} is no address to connect to")
        relay[_port(port, "container port")] = (host, _port(target_port, "target port"))
    return relay


def relay_of(pod: dict) -> Relay | None:
    """The relay a pod asks for, None when it asks for none or may not have one; ValueError when the
    annotation is malformed."""
    meta = pod.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(RELAY_ANNOTATION)
    if text is None or meta.get("namespace") != RELAY_NAMESPACE:
        return None
    return parse_relay(text)


def resolv_conf(namespace: str, dns: str = CLUSTER_DNS, domain: str = CLUSTER_DOMAIN) -> str:
    """The resolv.conf the kubelet writes for a ClusterFirst pod."""
    return (
        f"nameserver {dns}\n"
        f"search {namespace}.svc.{domain} svc.{domain} {domain}\n"
        "options ndots:5\n"
    )
