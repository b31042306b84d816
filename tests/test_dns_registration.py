"""What the DNS process registers, decided without a server: its pod, and the changes that keep one pod of the
replica that relays to it; and the names the CLI refuses before it connects."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from podnet.dns.config import DnsConfig
from podnet.dns.process import dns_pod, pod_changes

CONFIG = DnsConfig(address="127.0.0.10", port=1053, server="https://127.0.0.10:6443")


def existing(name: str, relay: str, created: str, terminating: bool = False) -> dict:
    meta = {"name": name, "creationTimestamp": created, "annotations": {"podnet.io/relay": relay}}
    if terminating:
        meta["deletionTimestamp"] = "2026-12-04T10:00:00Z"
    return {"metadata": meta}


WANTED = dns_pod(CONFIG, 1053, 6445)
HERE = "53=127.0.0.10:1053,9153=127.0.0.10:6445"


def test_the_pod_is_coredns_shaped_and_relays_to_the_process():
    meta = WANTED["metadata"]
    assert meta["generateName"] == "coredns-127-0-0-10-1053-" and meta["namespace"] == "kube-system"
    assert meta["labels"] == {"k8s-app": "kube-dns", "podnet.io/dns-replica": "127.0.0.10-1053"}
    assert meta["annotations"] == {"podnet.io/relay": HERE}
    without_metrics = dns_pod(DnsConfig(address="10.0.0.4", port=53, replica="dns-b"), 53, None)
    assert without_metrics["metadata"]["labels"]["podnet.io/dns-replica"] == "dns-b"
    assert without_metrics["metadata"]["generateName"] == "coredns-dns-b-"
    (container,) = without_metrics["spec"]["containers"]
    assert "readinessProbe" not in container and [p["containerPort"] for p in container["ports"]] == [53, 53]


def test_no_pod_yet_means_create_one():
    assert pod_changes([], WANTED) == (True, [])


def test_a_pod_that_relays_here_is_kept():
    assert pod_changes([existing("a", HERE, "2026-12-04T09:00:00Z")], WANTED) == (False, [])


def test_a_terminating_pod_is_replaced_at_once_and_left_to_finish():
    pods = [existing("a", HERE, "2026-12-04T09:00:00Z", terminating=True)]
    assert pod_changes(pods, WANTED) == (True, [])


def test_a_pod_that_relays_elsewhere_is_deleted_and_replaced():
    pods = [existing("old", "53=127.0.0.10:5353", "2026-12-04T09:00:00Z")]
    assert pod_changes(pods, WANTED) == (True, ["old"])


def test_of_two_that_relay_here_the_oldest_stays():
    pods = [existing("b", HERE, "2026-12-04T09:00:05Z"), existing("a", HERE, "2026-12-04T09:00:00Z")]
    assert pod_changes(pods, WANTED) == (False, ["b"])


@pytest.mark.parametrize(("args", "error"), [
    (["trace", "a", "10.96.0.10:53/icmp"], "error: the protocol is TCP or UDP, not 'icmp'\n"),
    (["trace", "a", "10.96.0.10:53/"], "error: the destination is DST:PORT[/PROTOCOL], not '10.96.0.10:53/'\n"),
    (["dns", "--server", "https://127.0.0.1:1", "--replica", "-bad-"],
     "error: --replica '-bad-' is not a label value (at most 63 letters, digits, '-', '_' or '.', beginning and "
     "ending with a letter or digit)\n"),
])
def test_the_cli_refuses_bad_names_before_it_connects(args, error, tmp_path):
    run = subprocess.run([sys.executable, "-m", "podnet", *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PODNET_HOME": str(tmp_path)})
    assert (run.returncode, run.stderr) == (1, error)
