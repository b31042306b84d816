"""Two cluster DNS replicas behind kube-dns; one SIGKILLed while a pod (a network namespace, root) looks a
name up in a loop with the real `dig` and the real glibc resolver (`getent`), each with the defaults the
pod's resolv.conf leaves them (it sets only ndots:5): dig tries 3 times, 5 s apart, each try from a new
socket; glibc tries twice, 5 s apart, from the same socket. Every lookup is answered within those retries.

How: the node agent learns that the replica is gone from the first datagram its relay fails to deliver
(the host refuses it), makes the replica's pod not ready at once, and drops that datagram rather than
answering port unreachable; the try times out, and by then the endpoint has left kube-dns and the agent
has cleared the conntrack entries of UDP flows to it, so the retry, from a new socket or the same one,
reaches the live replica (nodeagent/relaypods.py says why a timeout, not a refusal)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest
from support.local_cluster import eventually, report
from support.netns_pods import ensure_tools, require_root

pytestmark = [pytest.mark.slow, pytest.mark.host_network]

NAME = "kubernetes.default.svc.cluster.local."
KUBERNETES_IP = "10.96.0.1"
# Lookups one after another for `$1` seconds; one line each: "lookup <ms> <exit status> <output|...>".
LOOP = """end=$(( $(date +%s) + $1 )); shift
while [ "$(date +%s)" -lt "$end" ]; do
  start=$(date +%s%N); out=$("$@" 2>&1); code=$?; stop=$(date +%s%N)
  echo "lookup $start $(( (stop - start) / 1000000 )) $code $(echo "$out" | tr '\\n' '|')"
done
echo finished"""
LOOP_SECONDS = 25
KILL_AFTER_LOOKUPS = 5
RETRY_MS = 4000  # a lookup this long waited out a try's 5 s timeout (less the clocks' slack) and retried


@dataclass(frozen=True)
class Lookup:
    started_ns: int
    ms: int
    answered: bool
    failed_tries: int  # dig's "communications error" lines: tries that got no answer


def _lookup(line: str, answered: bool) -> Lookup:
    _, started, ms, _, output = line.split(" ", 4)
    return Lookup(int(started), int(ms), answered, output.count("communications error"))


def _dig_line(line: str) -> Lookup:
    _, _, _, code, output = line.split(" ", 4)
    return _lookup(line, code == "0" and "status: NOERROR" in output and f"\t{KUBERNETES_IP}|" in output)


def _getent_line(line: str) -> Lookup:
    _, _, _, code, output = line.split(" ", 4)
    return _lookup(line, code == "0" and output.startswith(f"{KUBERNETES_IP} "))


async def _loop(kubeconfig: str, argv: list[str], parse, lines: list[Lookup]) -> str:
    """Runs the lookup loop in pod `client` with the real kubectl exec; appends each lookup as it ends.
    How it ended, as text."""
    process = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", kubeconfig, "exec", "client", "--", "sh", "-c", LOOP, "loop",
        str(LOOP_SECONDS), *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    began, finished = time.monotonic(), False
    while line := await process.stdout.readline():
        if line.startswith(b"lookup "):
            lines.append(parse(line.decode().rstrip("\n")))
        finished = line == b"finished\n"
    code = await process.wait()
    stderr = (await process.stderr.read()).decode()
    return f"{'finished' if finished else 'cut short'}, exit {code} after {time.monotonic() - began:.1f}s {stderr}"


async def test_a_replica_killed_during_lookup_loops_loses_no_lookup(local_cluster):
    require_root()
    ensure_tools()
    cluster = await local_cluster("127.0.236", nodes=1, dns_replicas=2)
    await cluster.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": "default", "labels": {"role": "client"},
                     "annotations": {"podnet.io/pod-mode": "netns"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "client", "image": "debian",
                                                        "command": ["sleep", "3600"]}]}})
    await cluster.wait_running("default", "role=client", 1)
    await eventually(lambda: _at_least(cluster.ready_endpoints("kube-system", "kube-dns"), 2), 30,
                     "two ready DNS endpoints")

    kubeconfig = str(cluster.home / "kubeconfig")
    dig: list[Lookup] = []
    glibc: list[Lookup] = []
    loops = [asyncio.create_task(_loop(kubeconfig, ["dig", NAME], _dig_line, dig)),
             asyncio.create_task(_loop(kubeconfig, ["getent", "ahostsv4", NAME], _getent_line, glibc))]
    await eventually(lambda: _at_least_now(min(len(dig), len(glibc)), KILL_AFTER_LOOKUPS), 20,
                     f"{KILL_AFTER_LOOKUPS} lookups of each loop before the kill")
    assert all(lookup.answered for lookup in dig + glibc), (dig, glibc)
    cluster.kill("dns-2")
    killed_ns, killed = time.time_ns(), time.monotonic()
    await eventually(lambda: _at_most(cluster.ready_endpoints("kube-system", "kube-dns"), 1), 15,
                     "the killed replica's endpoint not ready", interval=0.02)
    unready_after = time.monotonic() - killed
    endings = await asyncio.gather(*loops)
    assert all(ending.startswith("finished, exit 0") for ending in endings), endings

    for resolver, lookups in (("dig", dig), ("glibc", glibc)):
        after = [lookup for lookup in lookups if lookup.started_ns >= killed_ns]
        report(f"dns-replica-kill-{resolver}", lookups=len(lookups), after_kill=len(after),
               answered=sum(lookup.answered for lookup in lookups),
               longest_ms=max(lookup.ms for lookup in lookups),
               retried_after_a_timeout=sum(lookup.ms > RETRY_MS for lookup in lookups),
               dig_tries_unanswered=sum(lookup.failed_tries for lookup in lookups),
               endpoint_unready_after_s=unready_after)
        assert len(after) >= 10, (resolver, lookups, endings)
        assert all(lookup.answered for lookup in lookups), (resolver, [x for x in lookups if not x.answered], endings)
    # The loops did meet the dead replica: some try went unanswered and was retried after its timeout.
    assert any(lookup.ms > RETRY_MS for lookup in dig + glibc), (dig, glibc)


async def _at_least(count, n: int) -> bool:
    return len(await count) >= n


async def _at_least_now(count: int, n: int) -> bool:
    return count >= n


async def _at_most(count, n: int) -> bool:
    return len(await count) <= n
