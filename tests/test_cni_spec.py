"""The CNI protocol core (podnet/cni/spec.py), without a process: environment and stdin in, the spec's
requests, results and error objects out."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from podnet.cni.spec import (
    Attachment,
    CniError,
    Code,
    Command,
    check_attachment,
    parse_request,
    version_result,
)

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/blue", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin:/usr/lib/cni", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=a"}
CONFIG = {"cniVersion": "1.1.0", "name": "podnet", "type": "podnet-cni"}


def stdin(**fields) -> bytes:
    return json.dumps({**CONFIG, **fields}).encode()


def error_of(environ: dict, data: bytes) -> CniError:
    with pytest.raises(CniError) as caught:
        parse_request(environ, data)
    return caught.value


def test_add_request_carries_the_environment_and_the_pod_from_cni_args():
    request = parse_request(ENV, stdin())
    assert request.command is Command.ADD and request.version == "1.1.0"
    assert (request.container_id, request.netns, request.ifname) == ("c1", "/run/netns/blue", "eth0")
    assert request.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert (request.pod_namespace, request.pod_name) == ("web", "a")


@pytest.mark.parametrize(
    ("environ", "data", "code", "words"),
    [
        ({**ENV, "CNI_COMMAND": "FROB"}, stdin(), Code.INVALID_ENVIRONMENT, "CNI_COMMAND"),
        ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, stdin(), Code.INVALID_ENVIRONMENT, "CNI_NETNS"),
        ({**ENV, "CNI_IFNAME": "", "CNI_CONTAINERID": ""}, stdin(), Code.INVALID_ENVIRONMENT,
         "CNI_CONTAINERID, CNI_IFNAME"),
        ({**ENV, "CNI_ARGS": "K8S_POD_NAME"}, stdin(), Code.INVALID_ENVIRONMENT, "KEY=VALUE"),
        (ENV, stdin(cniVersion="0.3.1"), Code.INCOMPATIBLE_VERSION, "0.3.1"),
        (ENV, stdin(cniVersion="2.0.0"), Code.INCOMPATIBLE_VERSION, "1.1.0"),
        (ENV, stdin(cniVersion="one"), Code.DECODE_FAILURE, "version"),
        (ENV, stdin(cniVersion=""), Code.INVALID_CONFIG, "cniVersion"),
        (ENV, b"{not json", Code.DECODE_FAILURE, "network configuration"),
        (ENV, b"[]", Code.DECODE_FAILURE, "JSON object"),
        ({**ENV, "CNI_COMMAND": "CHECK"}, stdin(), Code.INVALID_CONFIG, "prevResult"),
    ],
)
def test_bad_invocations_get_the_specs_error_codes(environ, data, code, words):
    error = error_of(environ, data)
    assert error.code == code
    assert words in str(error)


def test_del_needs_no_namespace_and_version_needs_nothing():
    environ = {k: v for k, v in ENV.items() if k != "CNI_NETNS"}
    assert parse_request({**environ, "CNI_COMMAND": "DEL"}, stdin()).netns == ""
    assert parse_request({"CNI_COMMAND": "VERSION"}, b"").command is Command.VERSION
    assert version_result() == {"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


def test_gc_reads_valid_attachments_and_runtime_config_is_read_when_present():
    data = stdin(**{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
                    "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "TCP"}],
                                      "bandwidth": {"ingressRate": 1000000}}})
    request = parse_request({"CNI_COMMAND": "GC"}, data)
    assert [(a.container_id, a.ifname) for a in request.valid_attachments()] == [("c1", "eth0")]
    mapping = request.port_mappings()[0]
    assert (mapping.host_port, mapping.container_port, mapping.protocol) == (18080, 80, "tcp")
    assert request.bandwidth() == {"ingressRate": 1000000}
    bad = parse_request({"CNI_COMMAND": "GC"}, stdin(**{"cni.dev/valid-attachments": [{"ifname": "eth0"}]}))
    with pytest.raises(CniError) as caught:
        bad.valid_attachments()
    assert caught.value.code == Code.INVALID_CONFIG


ATTACHMENT = Attachment("eth0", "0a:58:0a:f4:01:05", "/run/netns/blue", "10.244.1.5/24", "10.244.1.1",
                        nameservers=("10.96.0.10",), search=("web.svc.cluster.local",), options=("ndots:5",))


def test_results_take_the_shape_of_the_negotiated_version():
    new = ATTACHMENT.result("1.1.0")
    assert new == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/run/netns/blue", "mtu": 1450}],
        "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["web.svc.cluster.local"], "options": ["ndots:5"]},
    }
    old = ATTACHMENT.result("0.4.0")
    assert old["ips"][0]["version"] == "4" and "mtu" not in old["interfaces"][0]
    assert Attachment.from_data(json.loads(json.dumps(ATTACHMENT.to_data()))) == ATTACHMENT


def test_a_veth_pairs_host_end_comes_first_and_the_address_names_the_pod_end():
    paired = replace(ATTACHMENT, host_ifname="pnv0123456789a", host_mac="3e:81:24:0f:94:8e",
                     links=("169.254.1.1/32",))
    result = paired.result("1.0.0")
    assert result["interfaces"] == [
        {"name": "pnv0123456789a", "mac": "3e:81:24:0f:94:8e", "mtu": 1450},
        {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/run/netns/blue", "mtu": 1450}]
    assert result["ips"][0]["interface"] == 1
    assert result["routes"] == [{"dst": "169.254.1.1/32"}, {"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
    assert check_attachment(result, "eth0", LINKS, ADDRESSES, [*ROUTES, {"dst": "169.254.1.1", "dev": "eth0"}]) == []
    assert check_attachment(result, "eth0", LINKS, ADDRESSES, ROUTES) == ["route to 169.254.1.1/32 is missing"]
    assert Attachment.from_data(json.loads(json.dumps(paired.to_data()))) == paired


def test_errors_print_as_the_spec_writes_them():
    error = CniError(Code.TRY_AGAIN_LATER, "agent not ready", "no podCIDR yet")
    assert json.loads(error.to_json("1.0.0")) == {"cniVersion": "1.0.0", "code": 11, "msg": "agent not ready",
                                                  "details": "no podCIDR yet"}


# What `ip -json link/addr/route` print in a namespace set up as ATTACHMENT says.
LINKS = [{"ifname": "lo", "flags": ["LOOPBACK", "UP"]},
         {"ifname": "eth0", "address": "0a:58:0a:f4:01:05", "flags": ["BROADCAST", "UP", "LOWER_UP"]}]
ADDRESSES = [{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "10.244.1.5", "prefixlen": 24}]}]
ROUTES = [{"dst": "default", "gateway": "10.244.1.1", "dev": "eth0"},
          {"dst": "10.244.1.0/24", "dev": "eth0", "prefsrc": "10.244.1.5"}]


def test_check_finds_nothing_missing_when_all_is_there():
    assert check_attachment(ATTACHMENT.result("1.1.0"), "eth0", LINKS, ADDRESSES, ROUTES) == []


@pytest.mark.parametrize(
    ("links", "addresses", "routes", "problem"),
    [
        (LINKS[:1], [], [], "interface eth0 is not in the namespace"),
        (LINKS, [], ROUTES, "address 10.244.1.5/24 is not on eth0"),
        (LINKS, ADDRESSES, ROUTES[1:], "route to 0.0.0.0/0 via 10.244.1.1 is missing"),
        ([LINKS[0], {**LINKS[1], "flags": ["BROADCAST"]}], ADDRESSES, ROUTES, "interface eth0 is down"),
        ([LINKS[0], {**LINKS[1], "address": "0a:58:00:00:00:01"}], ADDRESSES, ROUTES, "has MAC"),
    ],
)
def test_check_names_what_is_missing(links, addresses, routes, problem):
    problems = check_attachment(ATTACHMENT.result("1.1.0"), "eth0", links, addresses, routes)
    assert any(problem in p for p in problems), problems
