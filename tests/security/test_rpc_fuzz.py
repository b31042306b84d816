"""10,000 random msgpack-RPC frames against a real node agent's and a real BGP speaker's socket (issue 20,
"Done when": fuzz; root).

The frames are seeded-random: raw garbage, valid length prefixes (bin, str, ext, array, map) over garbage,
truncated requests, lengths past the framing's MAX_MESSAGE, valid msgpack of the wrong shape (not an array,
a wrong type or arity, a map keyed by an array), and well-formed requests with nonsense parameters to the
server's own methods and to unknown ones.

From another user (nobody), each frame on a connection of its own: through the socket's real path every
connect is refused by the file system; with the socket made reachable (a link in an open directory, its mode
lax), every connection is closed by the server's SO_PEERCRED check unanswered, each counted as a refused
peer, none reaching the decoder. From the server's own user, the same frames: each request is answered by
its id (a result or a clear error, never Internal), each malformed frame ends its connection (counted), each
incomplete one ends when the sender stops. Afterwards the process is alive, answers ping and a real method,
and its log holds no traceback.

tests/security/test_agent_socket.py checks the socket's mode, the connection bound and the size bound one
at a time; this is the volume and variety test over the same server.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator

import msgpack
import pytest
from support.apiserver import ApiServerProcess
from support.bgp import SpeakerProcess
from support.netns_pods import require_root
from support.nodeagent import AgentProcess, free_udp_port
from support.processes import free_tcp_port

from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.framing import MAX_MESSAGE, Decoder, FramingError, Notification, Request, Response, encode

pytestmark = pytest.mark.root

AGENT_ADDRESS, SPEAKER_ADDRESS, ABSENT_PEER = "127.0.190.1", "127.0.190.2", "127.0.190.3"
NOBODY = 65534
FRAMES = 10_000
SEED = 20
BATCH = 250  # well-formed frames sent on one connection
# `capture` streams tunnel traffic until its count or seconds, so nonsense parameters leave it waiting, not broken.
AGENT_METHODS = [m.value for m in AgentMethod if m is not AgentMethod.CAPTURE] + ["ping", "rpc.stats"]
SPEAKER_METHODS = ["info", "peers", "rib", "ping", "rpc.stats"]

# Run as `python3 - PATH` with the groups (lists of hex frames) and how many responses each expects on stdin:
# one connection per group; all its frames sent, then either the expected responses read or (none expected)
# the sending side shut and everything read until the agent closes. Prints what each connection got.
SENDER = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor

def responses(data):
    import msgpack
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    return sum(1 for message in unpacker if message[0] == 1)

def run(job):
    frames, expect = job
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(20)
    try:
        sock.connect(sys.argv[1])
    except PermissionError:
        return {"end": "eacces", "received": ""}
    received = b""
    try:
        with sock:
            for frame in frames:
                sock.sendall(bytes.fromhex(frame))
            if not expect:
                sock.shutdown(socket.SHUT_WR)
            while not expect or responses(received) < expect:
                chunk = sock.recv(65536)
                if not chunk:
                    return {"end": "closed", "received": received.hex()}
                received += chunk
            return {"end": "answered", "received": received.hex()}
    except (BrokenPipeError, ConnectionResetError):
        return {"end": "closed", "received": received.hex()}
    except TimeoutError:
        return {"end": "timeout", "received": received.hex()}

jobs = json.load(sys.stdin)
with ThreadPoolExecutor(16) as pool:
    json.dump(list(pool.map(run, jobs)), sys.stdout)
"""


# ---- the frames ---------------------------------------------------------------------------------------------

class FrameMaker:
    """Seeded-random frames; requests name `methods` (a server's own) or made-up names."""

    def __init__(self, seed: int, methods: list[str]):
        self.rng = random.Random(seed)
        self.methods = methods

    def frames(self, count: int) -> list[bytes]:
        makers = [self.garbage, self.prefixed_garbage, self.truncated, self.oversize, self.bad_shape,
                  self.nonsense_call, self.nonsense_call]
        return [self.rng.choice(makers)() for _ in range(count)]

    def value(self, depth: int = 0) -> object:
        rng = self.rng
        kind = rng.randrange(8 if depth < 3 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return rng.choice([True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1e308, float("nan")])
        if kind == 2:
            return rng.randint(-(2**31), 2**31)
        if kind == 3:
            return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz/.:-0123456789") for _ in range(rng.randint(0, 12)))
        if kind == 4:
            return rng.randbytes(rng.randint(0, 16))
        if kind == 5:
            return rng.random() * 10 ** rng.randint(-3, 12)
        if kind == 6:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {self.word(): self.value(depth + 1) for _ in range(rng.randint(0, 4))}

    def word(self) -> str:
        return "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(self.rng.randint(1, 6)))

    def msgid(self) -> int:
        return self.rng.randint(0, 2**32)

    def envelope(self, params: bytes) -> bytes:
        """A request's head (`[0, id, method, ...`) before raw bytes standing for its parameters."""
        return b"\x94\x00" + msgpack.packb(self.msgid()) + msgpack.packb(self.rng.choice(self.methods)) + params

    def garbage(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(1, 64))

    def prefixed_garbage(self) -> bytes:
        """A length prefix that is right for what follows, and garbage after it."""
        rng, n = self.rng, self.rng.randint(0, 40)
        head = rng.choice([b"\xc4" + bytes([n]), b"\xd9" + bytes([n]), b"\xc7" + bytes([n, rng.randrange(256)]),
                           b"\xdc" + n.to_bytes(2, "big"), b"\xde" + n.to_bytes(2, "big")])
        body = head + rng.randbytes(n * (2 if head[0] == 0xDE else 1))
        return self.envelope(body) if rng.random() < 0.5 else body

    def truncated(self) -> bytes:
        whole = encode(Request(self.msgid(), self.rng.choice(self.methods), self.value()))
        return whole[: self.rng.randint(1, len(whole) - 1)]

    def oversize(self) -> bytes:
        rng = self.rng
        length = rng.randint(MAX_MESSAGE + 1, 2**32 - 1).to_bytes(4, "big")
        body = rng.choice([b"\xc6", b"\xdb", b"\xdd", b"\xdf", b"\xc9"]) + length + rng.randbytes(rng.randint(0, 32))
        return self.envelope(body) if rng.random() < 0.5 else body

    def bad_shape(self) -> bytes:
        rng, msgid, method = self.rng, self.msgid(), self.rng.choice(self.methods)
        shapes = [
            lambda: msgpack.packb(rng.choice([None, 7, "ping", b"ping", {"method": method}, 1.5])),
            lambda: msgpack.packb([rng.randint(3, 200), msgid, method, self.value()]),  # no such message type
            lambda: msgpack.packb([0, str(msgid), method, self.value()]),  # the id not an integer
            lambda: msgpack.packb([0, msgid, rng.randint(0, 9), self.value()]),  # the method not a string
            lambda: msgpack.packb([0, msgid, method][: rng.randint(0, 3)]),  # too few fields
            lambda: msgpack.packb([0, msgid, method, None, self.value()]),  # too many
            lambda: msgpack.packb([2, rng.randint(0, 9), self.value()]),  # a notification named by a number
            lambda: self.envelope(b"\x81\x91\x01\x02"),  # parameters keyed by an array: no Python dict
        ]
        return rng.choice(shapes)()

    def nonsense_call(self) -> bytes:
        """A well-formed request (or a response or notification a server never asked for) with parameters
        of any type, to the server's methods and to made-up ones."""
        method = self.rng.choice(self.methods) if self.rng.random() < 0.8 else self.word()
        message = self.rng.choice([Request(self.msgid(), method, self.value())] * 8
                                  + [Response(self.msgid(), self.value(), self.value()),
                                     Notification(method, self.value())])
        return encode(message)


# ---- what the agent should make of them ---------------------------------------------------------------------

SENTINEL = encode(Request(0, "ping", None))


def well_formed(frame: bytes) -> list | None:
    """The messages a frame holds exactly (nothing before an error, nothing left waiting for more bytes), or
    None: a frame that ends with the sentinel request after it is fed is complete and clean."""
    try:
        messages = Decoder().feed(frame + SENTINEL)
    except FramingError:
        return None
    return messages[:-1] if messages and messages[-1] == Decoder().feed(SENTINEL)[0] else None


def malformed(frame: bytes) -> bool:
    try:
        Decoder().feed(frame)
    except FramingError:
        return True
    return False


def send(path: str, groups: list[list[bytes]], expect: list[int], *, as_nobody: bool) -> list[dict]:
    jobs = json.dumps([[[f.hex() for f in group], n] for group, n in zip(groups, expect, strict=True)])
    python, identity = ("/usr/bin/python3", {"user": NOBODY, "group": NOBODY, "extra_groups": []}) if as_nobody \
        else (sys.executable, {})
    done = subprocess.run([python, "-c", SENDER, path], input=jobs, capture_output=True, text=True, timeout=120,
                          cwd="/", **identity)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def decoded(outcome: dict) -> list:
    return Decoder().feed(bytes.fromhex(outcome["received"]))


def assert_unharmed(server: AgentProcess | SpeakerProcess) -> None:
    assert server.process is not None and server.process.poll() is None, server.log()[-3000:]
    assert server.rpc("ping") == "pong"
    log = server.log()
    for crash in ("Traceback", "Unhandled exception", "Task exception was never retrieved", "Fatal error"):
        assert crash not in log, log[-3000:]


def fuzz(server: AgentProcess | SpeakerProcess, frames: list[bytes], world: str) -> Counter[str]:
    """Sends the frames as nobody and as the owner, checking what comes back; returns the owner's answers by
    error code ("none" for a result)."""
    singles = [[frame] for frame in frames]

    # Another user, through the socket's own path: the file system refuses every connect.
    outcomes = send(server.socket, singles, [0] * len(frames), as_nobody=True)
    assert Counter(o["end"] for o in outcomes) == {"eacces": len(frames)}

    # ... and with the socket reachable and its mode lax: the server asks the kernel who connected and closes
    # every connection unanswered, before reading a byte.
    before = server.rpc("rpc.stats")
    link = os.path.join(world, os.path.basename(server.socket))
    os.link(server.socket, link)
    os.chmod(link, 0o666)
    try:
        outcomes = send(link, singles, [0] * len(frames), as_nobody=True)
    finally:
        os.chmod(server.socket, 0o600)
        os.unlink(link)
    assert Counter(o["end"] for o in outcomes) == {"closed": len(frames)}
    assert all(o["received"] == "" for o in outcomes)
    after = server.rpc("rpc.stats")
    assert after["refused_peers"] - before["refused_peers"] == len(frames)
    assert after["malformed_frames"] == before["malformed_frames"]
    assert_unharmed(server)

    # The owner: well-formed frames in batches on shared connections, every request answered by its id;
    # every other frame alone on a connection that the server ends, a malformed one counted.
    clean = [(frame, messages) for frame in frames if (messages := well_formed(frame)) is not None]
    broken = [frame for frame in frames if well_formed(frame) is None]
    batches = [clean[i : i + BATCH] for i in range(0, len(clean), BATCH)]
    requests = [[m for _, messages in batch for m in messages if isinstance(m, Request)] for batch in batches]
    groups = [[frame for frame, _ in batch] for batch in batches] + [[frame] for frame in broken]
    expect = [len(r) for r in requests] + [0] * len(broken)
    assert sum(len(r) for r in requests) > 2000 and sum(map(malformed, broken)) > 2000  # the mix is varied

    before = server.rpc("rpc.stats")
    outcomes = send(server.socket, groups, expect, as_nobody=False)
    errors: Counter[str] = Counter()
    for sent, outcome in zip(requests, outcomes[: len(batches)], strict=True):
        assert outcome["end"] == "answered", outcome
        answers = [m for m in decoded(outcome) if isinstance(m, Response)]
        assert Counter(a.msgid for a in answers) == Counter(r.msgid for r in sent)
        errors.update(a.error["code"] if a.error else "none" for a in answers)
    for frame, outcome in zip(broken, outcomes[len(batches) :], strict=True):
        assert outcome["end"] == "closed", (frame, outcome)
        assert all(isinstance(m, Response) for m in decoded(outcome)), (frame, outcome)
    after = server.rpc("rpc.stats")
    assert after["malformed_frames"] - before["malformed_frames"] == sum(map(malformed, broken))
    assert after["refused_peers"] == before["refused_peers"]
    assert_unharmed(server)
    # Nonsense is told so (BadRequest, NotFound, MethodNotFound), never met with a handler's own failure.
    assert errors["MethodNotFound"] and "Internal" not in errors, errors
    return errors


@pytest.fixture
def world() -> Iterator[str]:
    """A directory anyone may enter, on tmp_path's file system, where a link makes a socket reachable."""
    path = tempfile.mkdtemp(prefix="podnet-fuzz-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_the_node_agents_socket(tmp_path, world):
    require_root()
    home = tmp_path / "home"
    (home / "api").mkdir(parents=True)
    api = ApiServerProcess(home / "api", f"sqlite:///{home / 'api' / 'store.db'}", controllers=True)
    agent = AgentProcess("pnfuzz-1", AGENT_ADDRESS, home, api.kubeconfig, free_udp_port(AGENT_ADDRESS))
    try:
        api.start()
        agent.start()
        errors = fuzz(agent, FrameMaker(SEED, AGENT_METHODS).frames(FRAMES), world)
        assert errors["BadRequest"] and errors["NotFound"], errors  # parameters checked, pods looked up
        assert agent.rpc("node.info")["name"] == agent.name
        assert agent.rpc("faults.partitions") == {"partitioned": []}
    finally:
        agent.kill()
        api.kill()


def test_the_bgp_speakers_socket(bgp_speakers, world):
    require_root()
    # Its one peer is never there: the speaker keeps trying it while the frames arrive.
    speaker = bgp_speakers("pnfuzz-2", SPEAKER_ADDRESS, free_tcp_port(SPEAKER_ADDRESS), "--peer", ABSENT_PEER)
    errors = fuzz(speaker, FrameMaker(SEED, SPEAKER_METHODS).frames(FRAMES), world)
    assert errors["none"], errors  # its methods take no parameters: they answer whatever is sent
    assert speaker.rpc("info")["node"] == "pnfuzz-2"
