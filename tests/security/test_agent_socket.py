"""The node agent's RPC socket admits only its own user and root (issue 23, item 8; root).

Whoever reaches the socket rules the node's dataplane (`services.apply`, `faults.partition`). Against a
real agent process: the socket is 0600; another user is refused by the file mode and, were the mode ever
laxer, by the kernel's word on who connected (SO_PEERCRED), the call never reaching a handler; more
connections than the bound, and a message over the framing's limit, end their connection. Every refusal
is counted in the server's `rpc.stats`.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time

import msgpack
import pytest
from support.apiserver import ApiServerProcess
from support.netns_pods import require_root
from support.nodeagent import AgentProcess, free_udp_port

from podnet.rpc.framing import MAX_MESSAGE
from podnet.rpc.session import MAX_CONNECTIONS

pytestmark = pytest.mark.root

ADDRESS = "127.0.110.21"
NOBODY = 65534
# Run by /usr/bin/python3 as nobody: connects, asks the agent to cut its node off from 127.0.0.12.
CALLER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
try:
    s.sendall(bytes.fromhex(sys.argv[2]))
    s.settimeout(10)
    print("CLOSED" if s.recv(65536) == b"" else "ANSWERED")
except (BrokenPipeError, ConnectionResetError):
    print("CLOSED")
"""
PARTITION = msgpack.packb([0, 1, "faults.partition", {"peer": "127.0.0.12"}])


def _as_nobody(path: str) -> str:
    done = subprocess.run(["/usr/bin/python3", "-c", CALLER, path, PARTITION.hex()], user=NOBODY, group=NOBODY,
                          capture_output=True, text=True, timeout=30, cwd="/")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_only_the_agents_user_and_root_reach_its_socket(tmp_path):
    require_root()
    home = tmp_path / "home"
    (home / "api").mkdir(parents=True)
    api = ApiServerProcess(home / "api", f"sqlite:///{home / 'api' / 'store.db'}", controllers=True)
    agent = AgentProcess("pnsock-1", ADDRESS, home, api.kubeconfig, free_udp_port(ADDRESS))
    world = tempfile.mkdtemp(prefix="podnet-sock-", dir="/tmp")  # anyone may enter; tmp_path's filesystem
    os.chmod(world, 0o755)
    try:
        api.start()
        agent.start()
        mode = os.stat(agent.socket)
        assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == os.geteuid()

        # Another user who can see the socket (a link in a directory anyone may enter) is refused by its mode...
        link = os.path.join(world, "agent.sock")
        os.link(agent.socket, link)
        assert _as_nobody(link) == "EACCES"
        # ... and with the mode made lax, by its uid: the connection closes unanswered.
        os.chmod(link, 0o666)
        assert _as_nobody(link) == "CLOSED"
        assert agent.rpc("faults.partitions") == {"partitioned": []}
        assert agent.rpc("rpc.stats")["refused_peers"] == 1

        # Connections past the bound are closed at once, and counted.
        held = [socket.socket(socket.AF_UNIX) for _ in range(MAX_CONNECTIONS + 1)]
        for sock in held:
            sock.connect(agent.socket)
        held[-1].settimeout(10)
        assert held[-1].recv(1) == b""
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert agent.rpc("rpc.stats")["refused_connections"] == 1

        # A message larger than the framing takes ends its connection instead of growing the agent.
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(agent.socket)
            head = b"\xc6" + (MAX_MESSAGE + 1024).to_bytes(4, "big")  # msgpack bin 32
            sent = 0
            with pytest.raises(OSError):  # the agent closed it: EPIPE or ECONNRESET
                sock.sendall(head)
                chunk = bytes(1 << 20)
                while sent <= MAX_MESSAGE + (1 << 20):
                    sock.sendall(chunk)
                    sent += len(chunk)
        assert agent.rpc("rpc.stats")["malformed_frames"] == 1
        assert agent.rpc("ping") == "pong"
    finally:
        agent.kill()
        api.kill()
        shutil.rmtree(world)
