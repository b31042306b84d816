"""Every setting the controllers read is a field of the API server's config with a flag: set each and
see it used, by the settings the controllers get and by a real API server's controllers."""

import asyncio
import datetime
import ipaddress
import subprocess
import sys

from podnet.apiserver.config import ApiServerConfig
from podnet.apiserver.controllers.runner import Settings

from podnet import pki
from podnet.client import ApiClient, ApiError

# Each field the controllers read, set to a value other than its default.
SET = {
    "service_cidr": "10.100.0.0/16",
    "cluster_cidr": "10.250.0.0/16",
    "node_cidr_mask_size": 26,
    "node_grace_period": 7.0,
    "eviction_timeout": 11.0,
    "orphaned_pod_quarantine": 13.0,
    "advertise_address": "127.0.130.9",
    "advertise_port": 7443,
    "root_ca_file": "/etc/podnet/published-ca.crt",
}


def test_each_field_reaches_the_controllers_settings():
    defaults = Settings.from_config(ApiServerConfig(), "https://127.0.0.1:6443")
    # A CA is published only by a server that serves TLS.
    settings = Settings.from_config(ApiServerConfig(**SET, tls_cert="/etc/podnet/apiserver.crt"), "https://127.0.0.1:6443")
    read = {
        "service_cidr": settings.service_cidr,
        "cluster_cidr": settings.cluster_cidr,
        "node_cidr_mask_size": settings.node_cidr_prefix,
        "node_grace_period": settings.node_grace_period,
        "eviction_timeout": settings.pod_eviction_timeout,
        "orphaned_pod_quarantine": settings.orphaned_pod_quarantine,
        "advertise_address": settings.api_address,
        "advertise_port": settings.api_port,
        "root_ca_file": settings.root_ca_file,
    }
    assert read == SET
    assert (defaults.api_address, defaults.api_port, defaults.node_cidr_prefix) == ("127.0.0.1", 6443, 24)
    assert defaults.root_ca_file == ""
    client_ca = ApiServerConfig(tls_cert="/etc/podnet/apiserver.crt", client_ca_file="/etc/podnet/ca.crt")
    assert Settings.from_config(client_ca, "https://127.0.0.1:6443").root_ca_file == "/etc/podnet/ca.crt"


def test_without_advertised_values_the_endpoint_is_where_the_controllers_reach_the_server():
    settings = Settings.from_config(ApiServerConfig(), "http://127.0.0.1:41234")
    assert (settings.api_address, settings.api_port) == ("127.0.0.1", 41234)
    assert Settings.from_config(ApiServerConfig(), "https://localhost").api_address == "127.0.0.1"
    assert Settings.from_config(ApiServerConfig(), "https://localhost").api_port == 443


def test_bad_values_are_refused_by_the_flags_with_one_line():
    cases = [
        (["--node-cidr-mask-size", "8"], "--node-cidr-mask-size 8 must be between"),
        (["--advertise-address", "api.example"], "--advertise-address 'api.example' is not an IPv4 address"),
        (["--advertise-port", "70000"], "--advertise-port 70000 is out of range"),
        (["--root-ca-file", "/nonexistent/ca.crt"], "--root-ca-file /nonexistent/ca.crt: No such file or directory"),
        (["--root-ca-file", __file__], f"--root-ca-file {__file__}: not a PEM certificate bundle"),
    ]
    for args, message in cases:
        done = subprocess.run([sys.executable, "-m", "podnet", "apiserver", *args], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr


async def _eventually(fetch, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            found = await fetch()
        except ApiError:
            found = None
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_an_api_server_started_with_the_flags_uses_them(make_api_server, tmp_path):
    # A CA other than the one that signs the server's certificate and its clients' (--client-ca-file).
    published = pki.make_ca(datetime.datetime.now(datetime.UTC)).cert_pem.decode()
    (tmp_path / "published-ca.crt").write_text(published)
    server = make_api_server(controllers=True, extra_args=[
        "--service-cidr", SET["service_cidr"], "--cluster-cidr", SET["cluster_cidr"],
        "--node-cidr-mask-size", str(SET["node_cidr_mask_size"]),
        "--advertise-address", SET["advertise_address"], "--advertise-port", str(SET["advertise_port"]),
        "--root-ca-file", str(tmp_path / "published-ca.crt"),
    ])
    api: ApiClient
    async with server.client() as api:
        endpoints = await _eventually(lambda: api.get("endpoints", "kubernetes", "default"))
        subset = endpoints["subsets"][0]
        assert subset["addresses"] == [{"ip": SET["advertise_address"]}]
        assert subset["ports"][0]["port"] == SET["advertise_port"]
        service = await api.get("services", "kubernetes", "default")
        assert service["spec"]["clusterIP"] == "10.100.0.1"
        assert service["spec"]["ports"][0]["targetPort"] == SET["advertise_port"]

        await api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}})

        async def pod_cidr():
            return ((await api.get("nodes", "node-1")).get("spec") or {}).get("podCIDR")

        cidr = ipaddress.ip_network(await _eventually(pod_cidr))
        assert cidr.prefixlen == SET["node_cidr_mask_size"]
        assert cidr.subnet_of(ipaddress.ip_network(SET["cluster_cidr"]))

        root_ca = await _eventually(lambda: api.get("configmaps", "kube-root-ca.crt", "default"))
        assert root_ca["data"] == {"ca.crt": published}
        assert published != server.ca.cert_pem.decode()
