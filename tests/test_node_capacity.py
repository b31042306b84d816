"""A node's capacity and allocatable, from the host's CPU count and /proc/meminfo, as the kubelet writes them."""

from podnet.nodeagent.capacity import capacity, host_capacity

MEMINFO = "MemTotal:       16314132 kB\nMemFree:         1034560 kB\nMemAvailable:    9876543 kB\n"


def test_cpus_memory_in_kibibytes_and_the_kubelets_pod_limit():
    assert capacity(4, MEMINFO) == {"cpu": "4", "memory": "16314132Ki", "pods": "110"}


def test_memory_left_out_when_meminfo_does_not_say():
    assert capacity(1, "") == {"cpu": "1", "pods": "110"}


def test_this_host():
    resources = host_capacity()
    assert int(resources["cpu"]) >= 1 and resources["memory"].endswith("Ki") and resources["pods"] == "110"
