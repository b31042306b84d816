"""The cluster PKI without sockets: what the certificates say (SANs, CN/O, usages), who signed them, how long
they last, and how the x509 authenticator and the kubeconfig reader take them."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from podnet.apiserver.auth import Authenticator, User
from podnet.apiserver.rbac.authorizer import Attributes, authorize
from podnet.apiserver.rbac.defaults import default_policy

from podnet import kubeconfig, pki
from podnet.cluster import credentials, topology

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.make_ca(NOW)


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ({str(a) for a in names.get_values_for_type(x509.IPAddress)}, set(names.get_values_for_type(x509.DNSName)))


def test_the_ca_is_a_self_signed_ca_for_ten_years(ca):
    cert = ca.certificate
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(cert)
    assert cert.not_valid_after_utc - NOW == pki.CA_VALIDITY
    assert cert.not_valid_before_utc < NOW


def test_the_serving_certificate_names_every_address_of_the_api_server(ca):
    topo = topology.build(Path("/h"), 2, prefix="127.0.61")
    names = credentials.serving_names(topo.api_addresses, topo.service_cidr)
    serving = pki.make_serving(ca, names, NOW)
    cert = serving.certificate
    ips, dns = _sans(cert)
    assert ips == {"127.0.61.10", "127.0.0.1", "::1", "10.96.0.1"}
    assert dns == {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local"}
    cert.verify_directly_issued_by(ca.certificate)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc - NOW == pki.LEAF_VALIDITY


def test_compose_and_netns_addresses_are_named_too(ca):
    compose = topology.build(Path("/h"), 2, prefix="198.51.100", layout="network")
    assert compose.api_addresses == ("198.51.100.3", "198.51.100.10")
    netns = topology.build(Path("/h"), 2, prefix="203.0.113", layout="netns")
    ips, _ = _sans(pki.make_serving(ca, credentials.serving_names(netns.api_addresses, netns.service_cidr), NOW).certificate)
    assert "203.0.113.10" in ips
    other_range = credentials.serving_names((), "10.100.0.0/16")
    assert "10.100.0.1" in other_range


def test_a_python_client_verifies_the_serving_certificate_against_the_ca(ca):
    serving = pki.make_serving(ca, ["127.0.0.1", "localhost"], datetime.datetime.now(datetime.UTC))
    client = kubeconfig.ClientTls(ca_pem=ca.cert_pem).context()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    kubeconfig.load_client_certificate(server, serving.cert_pem, serving.key_pem)
    # A full handshake in memory: the client checks the chain and the name "localhost".
    client_in, client_out, server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        for side in (client_side, server_side):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    assert client_side.version() and client_side.getpeercert()["subject"] == ((("commonName", "kube-apiserver"),),)


def test_a_client_certificate_names_the_user_and_its_groups_as_kube_apiserver_reads_them(ca):
    client = pki.make_client(ca, "victor", ["view", "team-a"], NOW)
    cert = client.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "victor"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["view", "team-a"]
    assert cert.subject.rfc4514_string() == "CN=victor,O=team-a,O=view"  # openssl's /O=view/O=team-a/CN=victor
    der = cert.public_bytes(Encoding.DER)
    assert pki.verify_client(der, [ca.certificate], NOW) == pki.Identity("victor", ("view", "team-a"))


def test_a_client_certificate_from_another_ca_or_out_of_its_time_proves_nothing(ca):
    der = pki.make_client(ca, "alice", ["system:masters"], NOW).certificate.public_bytes(Encoding.DER)
    other = pki.make_ca(NOW, "someone-else")
    with pytest.raises(pki.CertificateError, match="unknown authority"):
        pki.verify_client(der, [other.certificate], NOW)
    with pytest.raises(pki.CertificateError, match="expired"):
        pki.verify_client(der, [ca.certificate], NOW + pki.LEAF_VALIDITY + datetime.timedelta(seconds=1))
    with pytest.raises(pki.CertificateError, match="expired or is not yet valid"):
        pki.verify_client(der, [ca.certificate], NOW - datetime.timedelta(hours=1))
    # A bundle of CAs: any of them may have signed it.
    assert pki.verify_client(der, [other.certificate, ca.certificate], NOW).user == "alice"
    serving = pki.make_serving(ca, ["127.0.0.1"], NOW).certificate.public_bytes(Encoding.DER)
    with pytest.raises(pki.CertificateError, match="key usage"):
        pki.verify_client(serving, [ca.certificate], NOW)
    with pytest.raises(pki.CertificateError, match="unparsable"):
        pki.verify_client(b"\x30\x03junk", [ca.certificate], NOW)


def test_the_authenticator_takes_a_certificate_then_a_token(ca):
    der = pki.make_client(ca, "victor", ["view"], NOW).certificate.public_bytes(Encoding.DER)
    foreign = pki.make_client(pki.make_ca(NOW), "mallory", ["system:masters"], NOW).certificate.public_bytes(
        Encoding.DER)
    authenticator = Authenticator({"t1": User("alice", "1", ("system:masters",))}, [ca.certificate])
    victor = authenticator.authenticate(None, der, NOW)
    assert victor == User("victor", "", ("view", "system:authenticated"))
    policy = default_policy()
    assert authorize(victor, Attributes("get", "x", "", "pods"), policy).allowed
    assert not authorize(victor, Attributes("create", "x", "", "pods"), policy).allowed
    assert authenticator.authenticate(None, foreign, NOW) is None
    assert authenticator.authenticate("Bearer t1", foreign, NOW).name == "alice"
    assert authenticator.authenticate("Bearer nope", None, NOW) is None
    assert not Authenticator(None, [ca.certificate]).open


def test_issue_writes_every_secret_for_its_owner_alone_and_a_kubeconfig_kubectl_reads(tmp_path, ca):
    topo = topology.build(tmp_path, 1)
    admin_token = credentials.issue(tmp_path, server=topo.api_url, api_addresses=topo.api_addresses,
                                    service_cidr=topo.service_cidr, components=["dns", "node-1/agent"], now=NOW)
    pki_dir = tmp_path / "pki"
    assert stat.S_IMODE(pki_dir.stat().st_mode) == 0o700
    files = [*pki_dir.iterdir(), tmp_path / "kubeconfig"]
    assert {f.name for f in files} >= {"ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "tokens.csv",
                                       "dns.kubeconfig", "node-1_agent.kubeconfig", "kubeconfig"}
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), {f.name: oct(f.stat().st_mode) for f in files}
    admin = yaml.safe_load((tmp_path / "kubeconfig").read_text())
    cluster, user = admin["clusters"][0]["cluster"], admin["users"][0]["user"]
    assert cluster == {"server": "https://127.0.0.10:6443",
                       "certificate-authority-data": base64.b64encode((pki_dir / "ca.crt").read_bytes()).decode()}
    assert set(user) == {"client-certificate-data", "client-key-data"}
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    assert cert.subject.rfc4514_string() == "CN=admin,O=system:masters"
    loaded = kubeconfig.load(tmp_path / "kubeconfig")
    assert loaded.server == topo.api_url and loaded.token is None
    loaded.tls.context()  # the key and the certificate belong together
    for tenant in credentials.TENANTS:  # each demo tenant its own user, with no group
        tenant_config = yaml.safe_load(credentials.tenant_kubeconfig(tmp_path, tenant).read_text())
        tenant_cert = base64.b64decode(tenant_config["users"][0]["user"]["client-certificate-data"])
        assert x509.load_pem_x509_certificate(tenant_cert).subject.rfc4514_string() == f"CN={tenant}"
        assert stat.S_IMODE(credentials.tenant_kubeconfig(tmp_path, tenant).stat().st_mode) == 0o600
    agent = kubeconfig.load(pki_dir / "node-1_agent.kubeconfig")
    rows = (pki_dir / "tokens.csv").read_text().splitlines()
    assert rows[0] == f'{admin_token},admin,admin,"system:masters"'
    assert credentials.user_token(tmp_path, "admin") == admin_token
    viewer = credentials.user_token(tmp_path, "viewer")
    assert viewer and f'{viewer},viewer,viewer,"view"' in rows
    assert f'{agent.token},system:node:node-1,system:node:node-1,"system:nodes"' in rows
    # Issuing again (a new `podnet up` in the same home) keeps the CA and replaces everything else.
    ca_pem, serving_pem = (pki_dir / "ca.crt").read_bytes(), (pki_dir / "apiserver.crt").read_bytes()
    credentials.issue(tmp_path, server=topo.api_url, api_addresses=(), service_cidr=topo.service_cidr,
                      components=["dns"], now=NOW)
    assert kubeconfig.load(pki_dir / "dns.kubeconfig").token not in "\n".join(rows)
    assert (pki_dir / "ca.crt").read_bytes() == ca_pem and (pki_dir / "apiserver.crt").read_bytes() != serving_pem
    assert not (pki_dir / "node-1_agent.kubeconfig").exists()
    # ... unless it would expire before the certificates it signs, or its key is not its own.
    later = NOW + pki.CA_VALIDITY - pki.LEAF_VALIDITY + datetime.timedelta(days=1)
    credentials.issue(tmp_path, server=topo.api_url, api_addresses=(), service_cidr=topo.service_cidr,
                      components=[], now=later)
    assert (pki_dir / "ca.crt").read_bytes() != ca_pem
    ca_pem = (pki_dir / "ca.crt").read_bytes()
    (pki_dir / "ca.key").unlink()
    credentials.write_secret(pki_dir / "ca.key", pki.make_ca(NOW).key_pem)
    credentials.issue(tmp_path, server=topo.api_url, api_addresses=(), service_cidr=topo.service_cidr,
                      components=[], now=later)
    assert (pki_dir / "ca.crt").read_bytes() != ca_pem


def test_write_secret_never_writes_through_what_is_already_there(tmp_path):
    target = tmp_path / "elsewhere"
    os.symlink(target, tmp_path / "ca.key")
    with pytest.raises(FileExistsError):
        credentials.write_secret(tmp_path / "ca.key", b"secret")
    assert not target.exists()


def test_kubeconfig_paths_are_relative_to_its_folder_and_token_files_are_read(tmp_path, ca):
    client = pki.make_client(ca, "eddie", ["edit:team-a"], NOW)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "eddie.crt").write_bytes(client.cert_pem)
    (tmp_path / "eddie.key").write_bytes(client.key_pem)
    (tmp_path / "token").write_text("  s3cret\n")
    config = {"clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority": "ca.crt"}}],
              "users": [{"name": "u", "user": {"client-certificate": "eddie.crt", "client-key": "eddie.key", "tokenFile": "token"}}],
              "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"}
    (tmp_path / "config").write_text(yaml.safe_dump(config))
    loaded = kubeconfig.load(tmp_path / "config")
    assert loaded.token == "s3cret" and loaded.tls.ca_pem == ca.cert_pem and loaded.tls.cert_pem == client.cert_pem
    loaded.tls.context()
    config["users"][0]["user"] = {"client-certificate": "eddie.crt"}
    (tmp_path / "config").write_text(yaml.safe_dump(config))
    with pytest.raises(kubeconfig.KubeconfigError, match="go together"):
        kubeconfig.load(tmp_path / "config")
    config["users"][0]["user"] = {"client-certificate-data": "not base64!", "client-key-data": "x"}
    (tmp_path / "config").write_text(yaml.safe_dump(config))
    with pytest.raises(kubeconfig.KubeconfigError, match="client-certificate-data is not base64"):
        kubeconfig.load(tmp_path / "config")


def test_ip_sans_are_addresses_and_the_rest_dns_names():
    sans = pki.subject_alternative_names(["10.0.0.1", "::1", "kubernetes", "10.0.0.1"])
    assert sans == [x509.IPAddress(ipaddress.ip_address("10.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1")),
                    x509.DNSName("kubernetes")]
