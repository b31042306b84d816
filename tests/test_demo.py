"""`podnet up --nodes 3 --demo` as a user runs it: a whole cluster of processes, the demo manifests, and the
matrix it prints from real probes holds what the policies promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from podnet.nodeagent.policy.render import TruthTable, parse_table

PREFIX = "127.0.40"


def tables(output: str, section: str) -> dict[int, TruthTable]:
    """The truth tables printed under the section whose title starts with `section`, by port."""
    body = output.split(f"\n{section}", 1)[1].split("\n\n", 1)[1]
    body = re.split(r"\n(?=\S)", body, maxsplit=1)[0]  # up to the next unindented title
    found = {}
    for match in re.finditer(r"^  (\d+)/TCP .*\n((?:    .*\n?)+)", body, re.MULTILINE):
        found[int(match[1])] = parse_table(match[2])
    return found


def podnet(home, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PODNET_HOME=str(home), KUBECONFIG=str(home / "kubeconfig"))
    return subprocess.run([sys.executable, "-m", "podnet", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.slow
def test_up_with_the_demo_prints_the_promised_matrix(tmp_path):
    home = tmp_path / "home"
    try:
        up = podnet(home, "up", "--nodes", "3", "--demo", "--home", str(home), "--prefix", PREFIX,
                    "--lb-pool", f"{PREFIX}.128/26", timeout=240)
        print(up.stdout, up.stderr)
        assert up.returncode == 0, up.stderr
        shop = tables(up.stdout, "Zero-trust three-tier app")
        assert set(shop) == {80, 8080, 5432}
        pods = shop[8080].pods
        frontends = [p for p in pods if p.startswith("shop/frontend-")]
        backends = [p for p in pods if p.startswith("shop/backend-")]
        (database,) = [p for p in pods if p.startswith("shop/database-")]
        assert len(frontends) == 2 and len(backends) == 2
        for frontend in frontends:
            assert all(shop[8080][frontend, backend] for backend in backends)
            assert not shop[5432][frontend, database]
        for backend in backends:
            assert shop[5432][backend, database]
            assert not any(shop[port][database, backend] for port in (80, 8080, 5432))
        tenants = tables(up.stdout, "Two tenants")[80]
        team_a = [p for p in tenants.pods if p.startswith("team-a/")]
        team_b = [p for p in tenants.pods if p.startswith("team-b/")]
        assert len(team_a) == 2 and len(team_b) == 2
        assert all(tenants[a, other] for a in team_a for other in team_a)
        assert not any(tenants[a, b] or tenants[b, a] for a in team_a for b in team_b)
        trace = up.stdout.split("One request's journey", 1)[1]
        assert "service-dnat" in trace and "result          answered" in trace
        # A frontend resolves the backend by name, through the cluster DNS pod that the standard allow-dns allows.
        lookup = up.stdout.split("A name from a frontend: $ podnet exec ", 1)[1].splitlines()
        assert lookup[0].startswith("shop/frontend-") and lookup[0].endswith(" -- http http://backend:8080/hostname")
        assert re.match(r"  backend-[a-z0-9]+-[a-z0-9]{5} ", lookup[1]), lookup[1]
        # The recipe's L7 step: the frontends may GET /api/items from the backends, and never DELETE it.
        assert "L7 security the Cilium way: applying deploy/crds/cilium.yaml, deploy/demo/l7/backend-l7.yaml" in up.stdout
        allowed = tables(up.stdout, "GET /api/items to the backends")[8080]
        denied = tables(up.stdout, "DELETE /api/items to the backends")[8080]
        for frontend in frontends:
            assert all(allowed[frontend, backend] for backend in backends)
            assert not any(denied[frontend, backend] for backend in backends)
        assert not allowed[database, backends[0]]
        assert up.stdout.count("every probe agrees with the policies") == 4
        assert "What to try next" in up.stdout
    finally:
        down = podnet(home, "down", "--home", str(home), timeout=120)
        podnet(home, "clean", "--home", str(home), timeout=60)
        assert down.returncode == 0, down.stderr
