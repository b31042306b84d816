"""The real kubectl against a `local_cluster`, with the kubeconfig `podnet up` wrote (TLS with the cluster
CA, the admin's client certificate), or as another user with a client certificate from the cluster CA.

`Kubectl(cluster.home)`: `.run(*args, user=None, input=None)` (`user`: (name, groups) of another user),
`.arun` (the same from a coroutine), `.popen(*args)`, `.in_terminal(shell_line)` (under `script`, on a
pseudo-terminal).
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
from dataclasses import dataclass
from pathlib import Path

from podnet import kubeconfig, pki
from podnet.cluster import credentials


def _text(done: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                       done.stderr.decode(errors="replace"))


@dataclass
class Kubectl:
    home: Path

    @property
    def admin(self) -> Path:
        return self.home / "kubeconfig"

    def kubeconfig_of(self, user: str, groups: tuple[str, ...]) -> Path:
        """A kubeconfig for the admin's server and CA with a client certificate for `user` in `groups`."""
        path = self.home / f"{user}.kubeconfig"
        if not path.exists():
            directory = credentials.pki_dir(self.home)
            ca = pki.KeyPair((directory / "ca.crt").read_bytes(), (directory / "ca.key").read_bytes())
            certificate = pki.make_client(ca, user, groups, datetime.datetime.now(datetime.UTC))
            admin = kubeconfig.load(self.admin)
            path.write_text(kubeconfig.render(admin.server, admin.tls.ca_pem, user,
                                              cert_pem=certificate.cert_pem, key_pem=certificate.key_pem))
        return path

    def argv(self, *args: str, user: tuple[str, tuple[str, ...]] | None = None) -> list[str]:
        config = self.kubeconfig_of(*user) if user else self.admin
        return ["kubectl", "--kubeconfig", str(config), *args]

    def run(self, *args: str, user: tuple[str, tuple[str, ...]] | None = None, input: bytes | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return _text(subprocess.run(self.argv(*args, user=user), input=input, capture_output=True, timeout=timeout))

    async def arun(self, *args: str, **options: object) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.run, *args, **options)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def in_terminal(self, shell_line: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`shell_line` (naming kubectl with the admin's kubeconfig as $KUBECTL) run by `script` on a pseudo-
        terminal, as a user at a terminal runs it; what the terminal showed comes back as stdout."""
        argv = ["script", "-qec", shell_line.replace("$KUBECTL", " ".join(self.argv())), "/dev/null"]
        # The user types nothing, and does not hang up either: script's input stays open until it ends.
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            try:
                stdout, stderr = process.stdout.read(), process.stderr.read()
                process.wait(timeout)
            finally:
                process.kill()
        return _text(subprocess.CompletedProcess(argv, process.returncode, stdout, stderr))
