"""The agent's WireGuard identity: made once in the state directory (0600), read back unchanged, refused
with a clear error when unusable; the annotation it publishes and what is read from a peer's Node."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from podnet.nodeagent.config import AgentConfig
from podnet.nodeagent.encryption import (
    KEY_FILE,
    WG_PUBKEY_ANNOTATION,
    node_annotations,
    pod_mtu,
    private_key,
    published_key,
)
from podnet.overlay.wireguard import crypto


def test_the_key_is_made_once_private_and_read_back(tmp_path):
    first = private_key(tmp_path)
    assert len(first) == 32
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert private_key(tmp_path) == first
    config = AgentConfig("node-1", "127.0.199.11", "https://127.0.199.10:6443", state_dir=str(tmp_path),
                         encryption="wireguard")
    public = crypto.public_bytes(crypto.private_key(first))
    assert node_annotations(config) == {WG_PUBKEY_ANNOTATION: base64.b64encode(public).decode()}
    assert published_key({"metadata": {"annotations": node_annotations(config)}}) == public
    assert pod_mtu(config) == 1370
    plain = AgentConfig("node-1", "127.0.199.11", "https://127.0.199.10:6443", state_dir=str(tmp_path))
    assert node_annotations(plain) == {} and pod_mtu(plain) == 1450


@pytest.mark.parametrize("annotation", [None, "", "not base64!", base64.b64encode(b"short").decode()])
def test_a_node_without_a_usable_key_is_no_peer(annotation):
    node = {"metadata": {"annotations": {} if annotation is None else {WG_PUBKEY_ANNOTATION: annotation}}}
    assert published_key(node) is None


@pytest.mark.parametrize("content, mode, message", [
    ("bogus\n", 0o600, "does not hold a base64 WireGuard private key"),
    (base64.b64encode(bytes(32)).decode() + "\n", 0o644, "is readable by others: chmod 600 it"),
])
def test_an_unusable_key_stops_the_agent_with_one_line(tmp_path, content, mode, message):
    key = tmp_path / KEY_FILE
    key.write_text(content)
    key.chmod(mode)
    done = subprocess.run([sys.executable, "-m", "podnet", "nodeagent", "--name", "node-1", "--address",
                           "127.0.199.11", "--server", "http://127.0.0.1:1", "--state-dir", str(tmp_path),
                           "--encryption", "wireguard"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"error: --encryption wireguard: {key} {message}\n"
