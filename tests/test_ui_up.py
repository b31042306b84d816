"""`podnet up` starts the web UI as one more supervised process and prints its address with the others;
`--no-ui` leaves it out. The real CLI, the real processes."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from support.kubectl import PODNET
from support.plainhttp import http_get

pytestmark = pytest.mark.slow

PREFIX = "127.0.231"


def _podnet(home, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PODNET_SERVER", "PODNET_TOKEN", "KUBECONFIG", "PODNET_HOME")}
    return subprocess.run([*PODNET, *args, "--home", str(home)], capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.parametrize("with_ui", [True, False])
def test_up_starts_the_web_ui_and_prints_its_address_unless_told_not_to(tmp_path, with_ui):
    home = tmp_path / "home"
    up = _podnet(home, "up", "--nodes", "1", "--prefix", PREFIX, "--lb-pool", f"{PREFIX}.128/26",
                 *(() if with_ui else ("--no-ui",)))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        url = f"http://{PREFIX}.10:6447/"
        printed = re.findall(r"^  web UI (\S+) ", up.stdout, re.MULTILINE)
        status = _podnet(home, "status")
        assert status.returncode == 0, status.stderr
        supervised = re.findall(r"^\s*ui\s", status.stdout, re.MULTILINE)
        if with_ui:
            assert printed == [url], up.stdout
            assert len(supervised) == 1, status.stdout
            code, page = http_get(url)
            assert code == 200 and 'id="login"' in page and "<script" in page
            assert http_get(f"{url}api/whoami")[0] == 401  # nothing without a session
        else:
            assert printed == [] and supervised == [], (up.stdout, status.stdout)
            assert http_get(url)[0] == 0  # nothing listens there
    finally:
        _podnet(home, "down")
