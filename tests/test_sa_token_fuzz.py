"""10,000 bearer tokens that look like service-account JWTs but are not good ones — malformed, unsigned
(`alg: none`), signed by another key, a real token tampered with, MACed with the public key, expired claims
re-signed elsewhere — against a real API server over HTTPS: each is a 401 Status, and the server answers
as before afterwards (ready, a real token still accepted)."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import ssl
import string
from collections import Counter
from collections.abc import Iterator

import aiohttp
import pytest
from podnet.apiserver.tokens import jwt
from support.kubectl import KubectlServer

from podnet import pki

HOST = "127.0.150.12"
ISSUER = "https://kubernetes.default.svc.cluster.local"
TOKENS = 10_000
CONCURRENCY = 64


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubectlServer]:
    server = KubectlServer(tmp_path_factory.mktemp("satoken-fuzz"), host=HOST)
    try:
        assert server.kubectl("create", "namespace", "team-a").returncode == 0
        assert server.kubectl("create", "serviceaccount", "default", "-n", "team-a").returncode == 0
        yield server
    finally:
        server.stop()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: object) -> str:
    return _b64(json.dumps(obj).encode())


def _forgeries(real: str, rng: random.Random) -> Iterator[str]:
    """Endless bad tokens, cycling through the ways a token can be bad."""
    header, payload, signature = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    stranger = jwt.SigningKey(jwt.load_signing_key(pki.make_signing_key()).private_key)
    alphabet = string.ascii_letters + string.digits + "-_.=+/ "

    def random_text(low: int, high: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))

    def flip(text: str) -> str:
        index = rng.randrange(len(text))
        return text[:index] + rng.choice(string.ascii_letters.replace(text[index], "")) + text[index + 1:]

    kinds = [
        lambda: random_text(0, 300),                                                  # noise
        lambda: ".".join(random_text(0, 60) for _ in range(3)),                        # three dotted pieces
        lambda: f"{_segment({'alg': 'none'})}.{payload}.",                             # unsigned
        lambda: f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}",
        lambda: f"{_segment({'alg': 'HS256', 'kid': json.loads(base64.urlsafe_b64decode(header + '=='))['kid']})}"
                f".{payload}.{_b64(rng.randbytes(32))}",                                # HMAC with a public key
        lambda: jwt.sign(claims, stranger),                                            # another key
        lambda: jwt.sign(claims | {"exp": 1, "iat": 0, "nbf": 0}, stranger),
        lambda: f"{header}.{_segment(claims | {'sub': 'system:serviceaccount:kube-system:admin'})}.{signature}",
        lambda: f"{header}.{flip(payload)}.{signature}",                               # tampered payload
        lambda: f"{header}.{payload}.{flip(signature)}",                               # tampered signature
        lambda: f"{header}.{payload}.{signature[: rng.randrange(len(signature))]}",     # truncated
        lambda: f"{header}.{payload}.{signature}=",                                    # padded
        lambda: f"{flip(header)}.{payload}.{signature}",
        lambda: f"{header}.{_b64(rng.randbytes(rng.randint(0, 200)))}.{signature}",    # payload not JSON
        lambda: f"{_segment([1, 2])}.{_segment('x')}.{_b64(rng.randbytes(64))}",       # not objects
        lambda: f"{header}.{payload}.{signature}.{payload}",                            # four parts
    ]
    while True:
        for kind in kinds:
            yield kind()


async def _statuses(server: KubectlServer, tokens: list[str]) -> Counter[tuple[int, str]]:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    seen: Counter[tuple[int, str]] = Counter()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for token in tokens:
        queue.put_nowait(token)
    url = f"{server.url}/api/v1/namespaces/team-a/pods"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=CONCURRENCY)) as session:

        async def worker() -> None:
            while not queue.empty():
                token = queue.get_nowait()
                async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                    body = await response.json(content_type=None)
                    seen[response.status, body.get("reason", "")] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return seen


@pytest.mark.slow
def test_every_forged_token_is_a_401_and_the_server_stays_well(server: KubectlServer) -> None:
    real = server.kubectl("create", "token", "default", "-n", "team-a").stdout.strip()
    assert real.count(".") == 2
    forged = _forgeries(real, random.Random(20))
    tokens = [next(forged) for _ in range(TOKENS)]
    assert len(set(tokens)) > TOKENS * 0.6  # mostly different tokens, not one repeated

    seen = asyncio.run(_statuses(server, tokens))

    assert seen == Counter({(401, "Unauthorized"): TOKENS})
    assert server.process.poll() is None
    assert server.kubectl("get", "--raw", "/readyz").stdout == "ok"
    # The real token still proves who it is (a 403 for lack of rights, not a 401).
    refused = asyncio.run(_statuses(server, [real]))
    assert refused == Counter({(403, "Forbidden"): 1})
