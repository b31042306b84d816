"""What a node reports it can hold, `status.capacity` and `status.allocatable`, as the kubelet reports them:
the host's CPUs and memory, and the kubelet's default of 110 pods. Every node of a local cluster shares the
one machine, so each reports all of it, as kubelets on one host's VMs would each report their VM.

kubectl describe node divides the pods' requests and limits by the allocatable amounts; without them it
prints an overflowed percentage for every pod.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_PODS = "110"  # the kubelet's --max-pods default


def capacity(cpus: int, meminfo: str) -> dict[str, str]:
    """Quantities as the kubelet writes them ("2", "16314132Ki", "110") from a CPU count and /proc/meminfo."""
    resources = {"cpu": str(cpus)}
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if name == "MemTotal" and rest.split()[1:] == ["kB"]:
            resources["memory"] = f"{int(rest.split()[0])}Ki"
    resources["pods"] = MAX_PODS
    return resources


def host_capacity() -> dict[str, str]:
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        meminfo = ""
    return capacity(os.cpu_count() or 1, meminfo)
