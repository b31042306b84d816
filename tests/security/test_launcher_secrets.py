"""The container launcher never writes a secret from a command line into its log (issue 23, item 8).

A real `podnet compose launch` starts a process whose argv carries a token and a password; its log names
the process and every argument but those two values.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

from podnet.cluster.launcher import REDACTED, loggable_argv

ADDRESS = "127.0.110.31"
SERVE = ("import http.server, sys; http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), "
         "http.server.SimpleHTTPRequestHandler).serve_forever()")


@pytest.mark.parametrize("argv, shown", [
    (["agent", "--token", "abc", "--name", "n"], f"agent --token {REDACTED} --name n"),
    (["x", "--db-password=hunter2", "--client-secret", "s"], f"x --db-password={REDACTED} --client-secret {REDACTED}"),
    (["x", "--token-file", "/run/t", "--kubeconfig", "/k"], "x --token-file /run/t --kubeconfig /k"),
    (["x", "--TOKEN", "abc def"], f"x --TOKEN {REDACTED}"),
])
def test_secret_flags_lose_their_values(argv, shown):
    assert loggable_argv(argv) == shown


def test_the_launchers_log_holds_no_secret_from_a_command_line(tmp_path):
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        port = probe.getsockname()[1]
    process = {"name": "h/web", "external": True, "health": {"http": f"http://{ADDRESS}:{port}/"},
               "argv": [sys.executable, "-c", SERVE, ADDRESS, str(port), "--token", "s3cret-token",
                        "--etcd-password=hunter2", "--token-file", "/run/podnet/token"]}
    launcher = subprocess.Popen([sys.executable, "-m", "podnet", "compose", "launch", "--timeout", "20",
                                 json.dumps(process)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=tmp_path)
    try:
        lines = []
        for line in launcher.stdout:
            lines.append(line)
            if "h/web is healthy" in line:
                break
        launcher.send_signal(signal.SIGTERM)
        rest, _ = launcher.communicate(timeout=20)
    finally:
        launcher.kill()
        launcher.wait()
    log = "".join(lines) + rest
    assert "h/web is healthy" in log, log
    assert f"--token {REDACTED} --etcd-password={REDACTED} --token-file /run/podnet/token" in log, log
    assert "s3cret-token" not in log and "hunter2" not in log
