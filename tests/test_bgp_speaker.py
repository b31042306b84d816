"""podnet BGP speakers as real processes on 127.0.0.x, installing routes into a real RPC endpoint that
plays the node agent's side of `routes.apply`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support.processes import REPO, free_tcp_port

NODES = {"n1": ("127.0.0.71", "10.244.1.0/24"), "n2": ("127.0.0.72", "10.244.2.0/24"),
         "n3": ("127.0.0.73", "10.244.3.0/24")}
HOLD = 3


async def mesh(bgp_speakers, route_recorder, names, *extra: str):
    """Speakers peering with each other (configured peers, hold 3 s), each installing into its recorder."""
    port = free_tcp_port(*(NODES[n][0] for n in names))
    speakers, recorders = {}, {}
    for name in names:
        address, cidr = NODES[name]
        recorders[name] = await route_recorder(name)
        peers = [arg for other in names if other != name for arg in ("--peer", NODES[other][0])]
        speakers[name] = bgp_speakers(name, address, port, "--pod-cidr", cidr, "--hold-time", str(HOLD),
                                      "--connect-retry", "1", "--agent-socket", recorders[name].path, *peers, *extra)
    return speakers, recorders


def others(names, name):
    return {NODES[o][1]: NODES[o][0] for o in names if o != name}


async def converged(recorders, names):
    """Waits until each speaker of `names` has installed exactly the others' pod CIDRs."""
    for name in names:
        expected = others(names, name)
        assert await recorders[name].wait_for(lambda routes, e=expected: routes == e) == expected


async def test_two_speakers_install_each_others_pod_cidr_and_the_cli_shows_them(bgp_speakers, route_recorder):
    speakers, recorders = await mesh(bgp_speakers, route_recorder, ["n1", "n2"])
    await converged(recorders, ["n1", "n2"])
    (peer,) = await speakers["n1"].arpc("peers")
    assert peer["state"] == "ESTABLISHED" and peer["hold_time"] == HOLD and peer["prefixes_received"] == 1
    env = dict(os.environ, PYTHONPATH=str(REPO))
    state_dir = str(speakers["n1"].state_dir)
    shown = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "podnet", "bgp", "peers", "--node", "n1",
                                                     "--state-dir", state_dir], capture_output=True, text=True,
                                    env=env, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "127.0.0.72" in shown.stdout and "ESTABLISHED" in shown.stdout
    # `podnet routes` reads agent.sock from the same state directory.
    os.symlink(recorders["n1"].path, speakers["n1"].state_dir / "agent.sock")
    shown = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "podnet", "routes", "--node", "n1",
                                                     "--state-dir", state_dir, "-o", "json"], capture_output=True,
                                    text=True, env=env, timeout=30)
    assert shown.returncode == 0, shown.stderr
    tables = json.loads(shown.stdout)
    assert tables["forwarding"] == [{"prefix": "10.244.2.0/24", "kind": "tunnel", "next_hop": "127.0.0.72",
                                     "source": "bgp"}]
    rib = {(r["prefix"], r["peer"]): r for r in tables["bgp"]}
    assert rib[("10.244.2.0/24", "127.0.0.72")]["state"] == "best"
    assert rib[("10.244.1.0/24", "local")]["next_hop"] == "127.0.0.71"


@pytest.mark.slow
async def test_a_stopped_speaker_has_its_routes_withdrawn_within_hold_time(bgp_speakers, route_recorder):
    names = ["n1", "n2", "n3"]
    speakers, recorders = await mesh(bgp_speakers, route_recorder, names, "--graceful-restart-time", "0")
    await converged(recorders, names)
    speakers["n3"].signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        for name in ("n1", "n2"):
            await recorders[name].wait_for(lambda routes: NODES["n3"][1] not in routes, timeout=HOLD + 1.5)
        elapsed = time.monotonic() - stopped
        assert elapsed <= HOLD + 1, f"withdrawn after {elapsed:.2f}s"
        assert recorders["n1"].routes == {NODES["n2"][1]: NODES["n2"][0]}
    finally:
        speakers["n3"].signal(signal.SIGCONT)
    # Once it runs again, the sessions come back and so do its routes.
    for name in ("n1", "n2"):
        await recorders[name].wait_for(lambda routes: NODES["n3"][1] in routes, timeout=10)


@pytest.mark.slow
async def test_graceful_restart_keeps_routes_installed_while_a_speaker_restarts(bgp_speakers, route_recorder):
    names = ["n1", "n2", "n3"]
    speakers, recorders = await mesh(bgp_speakers, route_recorder, names, "--graceful-restart-time", "30")
    await converged(recorders, names)
    watched = {name: len(recorders[name].calls) for name in ("n1", "n2")}
    speakers["n3"].kill()
    await asyncio.sleep(0.5)
    for name in ("n1", "n2"):
        (status,) = [p for p in await speakers[name].arpc("peers") if p["peer"] == NODES["n3"][0]]
        assert status["stale"] and status["state"] != "ESTABLISHED"
    await asyncio.to_thread(speakers["n3"].start)
    await recorders["n3"].wait_for(lambda routes: routes == others(names, "n3"), timeout=15)
    for name in ("n1", "n2"):
        for _ in range(100):
            (status,) = [p for p in await speakers[name].arpc("peers") if p["peer"] == NODES["n3"][0]]
            if status["state"] == "ESTABLISHED" and not status["stale"]:
                break
            await asyncio.sleep(0.1)
        assert status["state"] == "ESTABLISHED" and not status["stale"]
        # Every routes.apply since the kill still held n3's prefix: it was never withdrawn.
        for _, params in recorders[name].calls[watched[name]:]:
            assert {r["prefix"] for r in params["routes"]} >= {NODES["n3"][1]}
        assert recorders[name].routes == others(names, name)
    # The restarted speaker waited for End-of-RIB before installing: its first apply was already complete.
    assert {r["prefix"] for r in recorders["n3"].calls[0][1]["routes"]} == set(others(names, "n3"))


async def test_routes_are_resent_to_a_restarted_agent(bgp_speakers, route_recorder):
    speakers, recorders = await mesh(bgp_speakers, route_recorder, ["n1", "n2"])
    await recorders["n1"].wait_for(lambda routes: routes == others(["n1", "n2"], "n1"))
    await recorders["n1"].close()
    restarted = await route_recorder("n1")  # same socket path, a fresh agent without the routes
    assert restarted.path == recorders["n1"].path
    assert await restarted.wait_for(lambda routes: routes == others(["n1", "n2"], "n1"), timeout=5)


async def test_a_connection_from_an_unknown_address_is_refused(bgp_speakers, route_recorder):
    speakers, _ = await mesh(bgp_speakers, route_recorder, ["n1", "n2"])
    reader, writer = await asyncio.open_connection(NODES["n1"][0], speakers["n1"].port,
                                                   local_addr=("127.0.0.79", 0))
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert all(p["peer"] != "127.0.0.79" for p in await speakers["n1"].arpc("peers"))


def test_bad_options_end_with_one_line():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for args, message in ((["--node", "n1", "--address", "127.0.0.71", "--peer", "127.0.0.72", "--hold-time", "2"],
                           "hold time"),
                          (["--node", "n1", "--address", "127.0.0.71"], "--server"),
                          (["--node", "n1", "--address", "127.0.0.71", "--peer", "x.y"], "not an IPv4 address")):
        result = subprocess.run([sys.executable, "-m", "podnet", "bgp", *args], capture_output=True, text=True,
                                env=env, timeout=30)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
