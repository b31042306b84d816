"""The `podnet` command's table of lazily imported commands matches what each module registers, and the
process entry of kube-proxy parses the same options as `podnet kubeproxy`."""

import importlib
import os
import subprocess
import sys

import pytest

from podnet.cli import main, plainargs
from podnet.cli.kubeproxy_cmd import kubeproxy


def test_every_registering_module_is_in_the_table_with_the_commands_it_adds():
    """A module missing from the table still works (see the next test); the table keeps that rare."""
    unlisted = main.unlisted_modules()
    assert [m for m in unlisted if hasattr(importlib.import_module(f"podnet.cli.{m}"), "register")] == []
    for module, commands in main.COMMANDS:
        assert sorted(main.module_commands(module)) == sorted(commands), module


def test_a_module_missing_from_the_table_is_found_by_its_commands(monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.setattr(main, "COMMANDS", tuple(e for e in main.COMMANDS if e[0] != "kubeproxy_cmd"))
    monkeypatch.setattr(main, "_MODULE_OF", {c: m for m, cs in main.COMMANDS for c in cs})
    assert "kubeproxy_cmd" in main.unlisted_modules()
    result = CliRunner().invoke(main.app, ["kubeproxy", "--help"])
    assert result.exit_code == 0 and "--agent-socket" in result.output, result.output


def test_a_command_imports_only_its_own_module():
    code = (
        "import sys; from podnet.cli.main import app; app(['version'], standalone_mode=False); "
        "print(sorted(m for m in sys.modules if m.startswith('podnet.cli.')))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "['podnet.cli.main']"


def test_help_lists_every_command():
    run = subprocess.run(
        [sys.executable, "-m", "podnet", "--help"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    listed = {line.split()[1] for line in run.stdout.splitlines() if line.startswith("│ ") and line[2] != " "}
    assert {c for _, commands in main.COMMANDS for c in commands} | {"version"} <= listed


def test_plain_parser_has_the_typer_options_with_their_defaults_and_environment(monkeypatch):
    monkeypatch.setenv("PODNET_SERVER", "http://127.0.0.1:6443")
    args = plainargs.parser_for(kubeproxy).parse_args(["--node", "node-1", "--agent-socket", "/a.sock"])
    assert vars(args) == {
        "node": "node-1",
        "agent_socket": "/a.sock",
        "server": "http://127.0.0.1:6443",
        "token_file": None,
        "ca_file": None,
        "kubeconfig": None,
        "mode": "iptables",
        "address": None,
        "metrics_port": 0,
        "service_cidr": "10.96.0.0/12",
        "min_sync_interval": 0.05,
        "max_sync_interval": 30.0,
        "log_level": "info",
    }
    args = plainargs.parser_for(kubeproxy).parse_args(
        ["--node", "n", "--agent-socket", "s", "--metrics-port", "-1", "--min-sync-interval", "0.5"]
    )
    assert args.metrics_port == -1 and args.min_sync_interval == 0.5


def test_plain_parser_requires_options_without_default():
    with pytest.raises(SystemExit):
        plainargs.parser_for(kubeproxy).parse_args(["--agent-socket", "/a.sock"])


def test_a_process_without_an_api_server_says_how_to_name_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PODNET_SERVER"}
    run = subprocess.run([sys.executable, "-m", "podnet.nodeagent.kubeproxy", "--node", "n", "--agent-socket", "s"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 2 and run.stderr.strip() == "error: give --kubeconfig FILE or --server URL"
    missing = tmp_path / "nothing.kubeconfig"
    run = subprocess.run([sys.executable, "-m", "podnet.nodeagent.kubeproxy", "--node", "n", "--agent-socket", "s",
                          "--kubeconfig", str(missing)], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 2 and run.stderr.startswith(f"error: no kubeconfig at {missing}")


def test_kubeproxy_process_entry_refuses_an_unknown_mode():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "podnet.nodeagent.kubeproxy",
            "--node",
            "n",
            "--agent-socket",
            "s",
            "--server",
            "http://127.0.0.1:1",
            "--mode",
            "nftables",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--mode must be one of iptables, ipvs" in run.stderr


# Commands that find a running cluster; the daemons (apiserver, nodeagent, ...) and `compose` (its own
# PODNET_COMPOSE_HOME) are not among them.
CLUSTER_COMMANDS = ("apply", "capture", "clean", "dataplane", "delete", "describe", "dig", "down", "exec", "explain",
                    "flows", "get", "kill", "logs", "matrix", "partition", "probe", "routes", "start", "status",
                    "trace", "up")
API_COMMANDS = ("apply", "delete", "describe", "dig", "exec", "explain", "get", "matrix", "partition", "probe", "trace")


@pytest.mark.parametrize("command", CLUSTER_COMMANDS)
def test_every_command_finds_the_cluster_the_same_way_and_its_help_names_no_types(command):
    run = subprocess.run([sys.executable, "-m", "podnet", command, "--help"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, COLUMNS="200"))
    assert run.returncode == 0, run.stderr
    assert "--home" in run.stdout and "PODNET_HOME" in run.stdout
    if command in API_COMMANDS:
        assert "--kubeconfig" in run.stdout and "KUBECONFIG" in run.stdout
    for noise in ("<bool>", "<int>", "<str>", "<float>", "<path>"):
        assert noise not in run.stdout, f"{command} --help shows {noise}"
