"""The UI server's own rules, without a cluster."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

from podnet import pki
from podnet.kubeconfig import ClientTls
from podnet.ui.server import Ui, UiConfig


async def test_a_client_certificate_given_to_the_ui_never_speaks_for_its_users(tmp_path: Path):
    # `podnet ui --kubeconfig ~/.podnet/kubeconfig` reads the administrator's certificate with the CA.
    now = datetime.datetime.now(datetime.UTC)
    ca = pki.make_ca(now)
    admin = pki.make_client(ca, "admin", ["system:masters"], now)
    tls = ClientTls(ca_pem=ca.cert_pem, cert_pem=admin.cert_pem, key_pem=admin.key_pem)
    ui = Ui(UiConfig(server="https://127.0.0.10:6443", home=tmp_path, tls=tls), asyncio.Event())
    assert ui.config.tls == ClientTls(ca_pem=ca.cert_pem)
    feed = ui.feed("a-users-token")
    try:
        assert feed.client.token == "a-users-token"
    finally:
        await ui.close()
