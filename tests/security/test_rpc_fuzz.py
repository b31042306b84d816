"""10,000 random msgpack-RPC frames against a real node agent's socket (issue 20, "Done when": fuzz; root).

The frames are seeded-random: raw garbage, valid length prefixes (bin, str, ext, array, map) over garbage,
truncated requests, lengths past the framing's MAX_MESSAGE, valid msgpack of the wrong shape (not an array,
a wrong type or arity, a map keyed by an array), and well-formed requests with nonsense parameters to the
agent's own methods and to unknown ones.

From another user (nobody), each frame on a connection of its own: through the socket's real path every
connect is refused by the file system; with the socket made reachable, every connection is closed by the
agent's SO_PEERCRED check unanswered, each counted as a refused peer, none reaching the decoder. From the
agent's own user, the same frames: each request is answered (a result or an error), each malformed frame
ends its connection (counted), each incomplete one ends when the sender stops. Afterwards the agent is alive,
answers ping and node.info, and its log holds no unhandled exception.

Connections use the existing checks' numbers (tests/security/test_agent_socket.py tests the mode, the
connection bound and the size bound one by one); this is the volume and variety test over them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from collections import Counter

import msgpack
import pytest
from support.apiserver import ApiServerProcess
from support.netns_pods import require_root
from support.nodeagent import AgentProcess, free_udp_port

from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.framing import MAX_MESSAGE, Decoder, FramingError, Notification, Request, Response, encode

pytestmark = pytest.mark.root

ADDRESS = "127.0.190.1"
NOBODY = 65534
FRAMES = 10_000
SEED = 20
BATCH = 250  # well-formed frames sent on one connection
# `capture` streams tunnel traffic until its count or seconds, so nonsense parameters leave it waiting, not broken.
METHODS = [m.value for m in AgentMethod if m is not AgentMethod.CAPTURE] + ["ping", "rpc.stats"]

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

def _value(rng: random.Random, depth: int = 0) -> object:
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
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_word(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 6)))


def _envelope(rng: random.Random, params: bytes) -> bytes:
    """A request's head (`[0, id, method, ...`) before raw bytes standing for its parameters."""
    return b"\x94\x00" + msgpack.packb(rng.randint(0, 2**32)) + msgpack.packb(rng.choice(METHODS)) + params


def _garbage(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 64))


def _prefixed_garbage(rng: random.Random) -> bytes:
    """A length prefix that is right for what follows, and garbage after it."""
    n = rng.randint(0, 40)
    head = rng.choice([b"\xc4" + bytes([n]), b"\xd9" + bytes([n]), b"\xc7" + bytes([n, rng.randrange(256)]),
                       b"\xdc" + n.to_bytes(2, "big"), b"\xde" + n.to_bytes(2, "big")])
    body = head + rng.randbytes(n * (2 if head[0] == 0xDE else 1))
    return _envelope(rng, body) if rng.random() < 0.5 else body


def _truncated(rng: random.Random) -> bytes:
    whole = encode(Request(rng.randint(0, 2**32), rng.choice(METHODS), _value(rng)))
    return whole[: rng.randint(1, len(whole) - 1)]


def _oversize(rng: random.Random) -> bytes:
    length = rng.randint(MAX_MESSAGE + 1, 2**32 - 1).to_bytes(4, "big")
    body = rng.choice([b"\xc6", b"\xdb", b"\xdd", b"\xdf", b"\xc9"]) + length + rng.randbytes(rng.randint(0, 32))
    return _envelope(rng, body) if rng.random() < 0.5 else body


def _bad_shape(rng: random.Random) -> bytes:
    msgid, method = rng.randint(0, 2**32), rng.choice(METHODS)
    shapes = [
        lambda: msgpack.packb(rng.choice([None, 7, "ping", b"ping", {"method": method}, 1.5])),
        lambda: msgpack.packb([rng.randint(3, 200), msgid, method, _value(rng)]),  # no such message type
        lambda: msgpack.packb([0, str(msgid), method, _value(rng)]),  # the id not an integer
        lambda: msgpack.packb([0, msgid, rng.randint(0, 9), _value(rng)]),  # the method not a string
        lambda: msgpack.packb([0, msgid, method][: rng.randint(0, 3)]),  # too few fields
        lambda: msgpack.packb([0, msgid, method, None, _value(rng)]),  # too many
        lambda: msgpack.packb([2, rng.randint(0, 9), _value(rng)]),  # a notification named by a number
        lambda: _envelope(rng, b"\x81\x91\x01\x02"),  # parameters keyed by an array: valid msgpack, no Python dict
    ]
    return rng.choice(shapes)()


def _nonsense_call(rng: random.Random) -> bytes:
    """A well-formed request (or a response or notification a server never asked for) with parameters of
    any type, to the agent's methods and to made-up ones."""
    method = rng.choice(METHODS) if rng.random() < 0.8 else _word(rng)
    message = rng.choice([Request(rng.randint(0, 2**32), method, _value(rng))] * 8
                         + [Response(rng.randint(0, 2**32), _value(rng), _value(rng)), Notification(method, _value(rng))])
    return encode(message)


def random_frames(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    makers = [_garbage, _prefixed_garbage, _truncated, _oversize, _bad_shape, _nonsense_call, _nonsense_call]
    return [rng.choice(makers)(rng) for _ in range(count)]


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


def assert_unharmed(agent: AgentProcess) -> None:
    assert agent.process is not None and agent.process.poll() is None, agent.log()[-3000:]
    assert agent.rpc("ping") == "pong"
    assert agent.rpc("node.info")["name"] == agent.name
    log = agent.log()
    for crash in ("Traceback", "Unhandled exception", "Task exception was never retrieved", "Fatal error"):
        assert crash not in log, log[-3000:]


def test_random_frames_from_another_user_and_from_the_owner(tmp_path):
    require_root()
    frames = random_frames(FRAMES, SEED)
    home = tmp_path / "home"
    (home / "api").mkdir(parents=True)
    api = ApiServerProcess(home / "api", f"sqlite:///{home / 'api' / 'store.db'}", controllers=True)
    agent = AgentProcess("pnfuzz-1", ADDRESS, home, api.kubeconfig, free_udp_port(ADDRESS))
    world = tempfile.mkdtemp(prefix="podnet-fuzz-", dir="/tmp")  # anyone may enter; tmp_path's filesystem
    os.chmod(world, 0o755)
    try:
        api.start()
        agent.start()
        singles = [[frame] for frame in frames]

        # Another user, through the socket's own path: the file system refuses every connect.
        outcomes = send(agent.socket, singles, [0] * FRAMES, as_nobody=True)
        assert Counter(o["end"] for o in outcomes) == {"eacces": FRAMES}

        # ... and with the socket reachable and its mode lax: the agent asks the kernel who connected and
        # closes every connection unanswered, before reading a byte.
        before = agent.rpc("rpc.stats")
        link = os.path.join(world, "agent.sock")
        os.link(agent.socket, link)
        os.chmod(link, 0o666)
        try:
            outcomes = send(link, singles, [0] * FRAMES, as_nobody=True)
        finally:
            os.chmod(agent.socket, 0o600)
        assert Counter(o["end"] for o in outcomes) == {"closed": FRAMES}
        assert all(o["received"] == "" for o in outcomes)
        after = agent.rpc("rpc.stats")
        assert after["refused_peers"] - before["refused_peers"] == FRAMES
        assert after["malformed_frames"] == before["malformed_frames"]
        assert agent.rpc("faults.partitions") == {"partitioned": []}
        assert_unharmed(agent)
        assert stat.S_IMODE(os.stat(agent.socket).st_mode) == 0o600

        # The owner: well-formed frames in batches on shared connections, every request answered by its id;
        # every other frame alone on a connection that the agent ends, a malformed one counted.
        clean = [(frame, messages) for frame in frames if (messages := well_formed(frame)) is not None]
        broken = [frame for frame in frames if well_formed(frame) is None]
        batches = [clean[i : i + BATCH] for i in range(0, len(clean), BATCH)]
        requests = [[m for _, messages in batch for m in messages if isinstance(m, Request)] for batch in batches]
        groups = [[frame for frame, _ in batch] for batch in batches] + [[frame] for frame in broken]
        expect = [len(r) for r in requests] + [0] * len(broken)
        assert sum(len(r) for r in requests) > 2000 and sum(map(malformed, broken)) > 2000  # the mix is varied

        before = agent.rpc("rpc.stats")
        outcomes = send(agent.socket, groups, expect, as_nobody=False)
        errors: Counter[str] = Counter()
        for sent, outcome in zip(requests, outcomes[: len(batches)], strict=True):
            assert outcome["end"] == "answered", outcome
            answers = [m for m in decoded(outcome) if isinstance(m, Response)]
            assert Counter(a.msgid for a in answers) == Counter(r.msgid for r in sent)
            errors.update(a.error["code"] if a.error else "none" for a in answers)
        # Nonsense is told so (BadRequest, NotFound, MethodNotFound), never met with a handler's own failure.
        assert errors["BadRequest"] and errors["MethodNotFound"] and "Internal" not in errors, errors
        for frame, outcome in zip(broken, outcomes[len(batches) :], strict=True):
            assert outcome["end"] == "closed", (frame, outcome)
            assert all(isinstance(m, Response) for m in decoded(outcome)), (frame, outcome)
        after = agent.rpc("rpc.stats")
        assert after["malformed_frames"] - before["malformed_frames"] == sum(map(malformed, broken))
        assert after["refused_peers"] == before["refused_peers"]
        assert_unharmed(agent)
    finally:
        agent.kill()
        api.kill()
        shutil.rmtree(world)
