"""Which API server a client asks next (podnet/serverlist.py), and where the list comes from: the
servers.podnet.io extension of a kubeconfig, which kubectl itself reads past."""

import subprocess

import pytest

from podnet import kubeconfig
from podnet.serverlist import ServerList

A, B, C = "https://127.0.0.10:6443", "https://127.0.0.9:6443", "https://127.0.0.8:6443"


def test_a_client_keeps_to_the_server_that_answered():
    servers = ServerList([A, B, C])
    assert servers.attempts() == [A, B, C]
    servers.answered(A)
    assert servers.current == A


def test_a_server_that_did_not_answer_is_tried_last():
    servers = ServerList([A + "/", B, C])
    servers.failed(A)
    assert servers.current == B
    assert servers.attempts() == [B, C, A]
    servers.failed(B)
    assert servers.attempts() == [C, A, B]


def test_a_failure_of_a_server_already_left_moves_nothing():
    # Two requests in flight on A both fail: the second must not skip B as well.
    servers = ServerList([A, B, C])
    servers.failed(A)
    servers.failed(A)
    assert servers.current == B


def test_a_server_that_answers_again_is_kept_to():
    servers = ServerList([A, B])
    servers.failed(A)
    servers.answered(A)
    assert servers.attempts() == [A, B]


def test_one_server_and_no_server():
    servers = ServerList([A])
    servers.failed(A)
    assert servers.attempts() == [A]
    with pytest.raises(ValueError):
        ServerList([])


def test_the_kubeconfig_carries_the_other_servers(tmp_path):
    path = tmp_path / "config"
    path.write_text(kubeconfig.render(A, None, "admin", token="t", fallbacks=(B, C)))
    loaded = kubeconfig.load(path)
    assert (loaded.server, loaded.fallbacks) == (A, (B, C))
    path.write_text(kubeconfig.render(A, None, "admin", token="t"))
    assert kubeconfig.load(path).fallbacks == ()


def test_kubectl_reads_past_the_extension(tmp_path):
    path = tmp_path / "config"
    path.write_text(kubeconfig.render(A, None, "admin", token="t", fallbacks=(B,)))
    shown = subprocess.run(["kubectl", "config", "view", "--kubeconfig", str(path), "-o",
                            "jsonpath={.clusters[0].cluster.server} {.clusters[0].cluster.extensions[0].name}"],
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"{A} servers.podnet.io"
