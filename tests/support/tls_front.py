"""kubectl sends credentials only over TLS, so a local cluster served over
plain HTTP is put behind a TLS terminator (`TlsFront`: a self-signed certificate from openssl, bytes relayed
both ways to the API server) and kubeconfigs are written for it, one per user.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TlsFront:
    """Serves TLS on `host:port`, relaying each connection to `upstream` in plain TCP."""

    host: str
    upstream: tuple[str, int]
    workdir: Path
    port: int = 0
    server: asyncio.AbstractServer | None = None
    tasks: set[asyncio.Task] = field(default_factory=set)

    @property
    def certificate(self) -> Path:
        return self.workdir / "front.crt"

    async def start(self) -> TlsFront:
        key = self.workdir / "front.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
             str(self.certificate), "-days", "1", "-subj", "/CN=podnet-test", "-addext", f"subjectAltName=IP:{self.host}"],
            check=True, capture_output=True,
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate, key)
        self.server = await asyncio.start_server(self._serve, self.host, self.port, ssl=context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError:
            writer.close()
        finally:
            self.tasks.discard(task)

    def kubeconfig(self, path: Path, token: str) -> Path:
        ca = base64.b64encode(self.certificate.read_bytes()).decode()
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f'clusters: [{{name: podnet, cluster: {{server: "https://{self.host}:{self.port}", certificate-authority-data: "{ca}"}}}}]\n'
            f'users: [{{name: user, user: {{token: "{token}"}}}}]\n'
            "contexts: [{name: podnet, context: {cluster: podnet, user: user}}]\ncurrent-context: podnet\n"
        )
        return path

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        writer.close()
