"""The capability arguments a runtime gives the plugins of a conflist for one pod, without I/O:
`portMappings` from its containers' hostPorts and `bandwidth` from its `kubernetes.io/ingress-bandwidth`
and `kubernetes.io/egress-bandwidth` annotations, as the kubelet's container runtimes pass them to the
reference `portmap` and `bandwidth` plugins.
"""

from __future__ import annotations

import re

from podnet.cni.spec import CniError, Code

INGRESS_BANDWIDTH = "kubernetes.io/ingress-bandwidth"
EGRESS_BANDWIDTH = "kubernetes.io/egress-bandwidth"
# The kubelet's bounds on a bandwidth annotation: 1 kbit/s to 1 Pbit/s.
_MIN_RATE, _MAX_RATE = 1_000, 10**15
# The token bucket's depth, in bits: a tenth of a second at the rate, and never under a few full frames
# (tbf cannot pass a frame bigger than its bucket).
_BURST_SECONDS = 0.1
_MIN_BURST = 4 * 1514 * 8
_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)$")


def bits_per_second(text: str, annotation: str) -> int:
    """A bandwidth annotation's value (a Kubernetes quantity: "1M", "10Mi", "500k") in bit/s."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise CniError(Code.INVALID_CONFIG, f"invalid {annotation}", f"{text!r} is not a quantity")
    rate = int(float(match.group(1)) * _SUFFIXES[match.group(2)])
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise CniError(Code.INVALID_CONFIG, f"invalid {annotation}", f"{text!r} is outside 1k to 1P")
    return rate


def bandwidth(pod: dict) -> dict:
    """runtimeConfig.bandwidth for the pod: ingressRate/ingressBurst and egressRate/egressBurst in bits."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    limits = {}
    for direction, annotation in (("ingress", INGRESS_BANDWIDTH), ("egress", EGRESS_BANDWIDTH)):
        if annotation in annotations:
            rate = bits_per_second(annotations[annotation], annotation)
            limits[f"{direction}Rate"] = rate
            limits[f"{direction}Burst"] = max(int(rate * _BURST_SECONDS), _MIN_BURST)
    return limits


def port_mappings(pod: dict) -> list[dict]:
    """runtimeConfig.portMappings: one entry per container port that declares a hostPort."""
    return [{"hostPort": int(port["hostPort"]), "containerPort": int(port.get("containerPort") or port["hostPort"]),
             "protocol": str(port.get("protocol") or "TCP").lower(), "hostIP": str(port.get("hostIP") or "")}
            for container in (pod.get("spec") or {}).get("containers") or []
            for port in container.get("ports") or [] if port.get("hostPort")]


def capability_args(pod: dict) -> dict:
    """Every capability argument the pod calls for; a plugin is given those it declares."""
    args: dict = {}
    if mappings := port_mappings(pod):
        args["portMappings"] = mappings
    if limits := bandwidth(pod):
        args["bandwidth"] = limits
    return args
