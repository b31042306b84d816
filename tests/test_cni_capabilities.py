"""What a runtime gives the chained plugins for a pod (podnet/cni/capabilities.py): its hostPorts as
portmap's `portMappings`, its bandwidth annotations as bandwidth's `bandwidth`, in bits."""

from __future__ import annotations

import pytest

from podnet.cni.capabilities import bits_per_second, capability_args
from podnet.cni.spec import CniError, Code


def pod(ports: list[dict] | None = None, annotations: dict | None = None) -> dict:
    return {"metadata": {"name": "p", "annotations": annotations or {}},
            "spec": {"containers": [{"name": "a", "ports": ports or []}, {"name": "b"}]}}


def test_host_ports_become_port_mappings_and_other_ports_nothing():
    ports = [{"containerPort": 80}, {"containerPort": 8080, "hostPort": 18080},
             {"containerPort": 53, "hostPort": 1053, "protocol": "UDP", "hostIP": "127.0.0.11"}]
    assert capability_args(pod(ports)) == {"portMappings": [
        {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp", "hostIP": ""},
        {"hostPort": 1053, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.11"}]}
    assert capability_args(pod([{"containerPort": 80}])) == {}


@pytest.mark.parametrize(("text", "bits"), [("1M", 1_000_000), ("10Mi", 10 * 2**20), ("500k", 500_000),
                                            ("1.5G", 1_500_000_000), ("2000", 2000)])
def test_bandwidth_annotations_are_kubernetes_quantities(text, bits):
    assert bits_per_second(text, "kubernetes.io/ingress-bandwidth") == bits


def test_each_direction_gets_a_rate_and_a_burst_of_a_tenth_of_a_second_at_least_a_few_frames():
    limits = capability_args(pod(annotations={"kubernetes.io/ingress-bandwidth": "10M",
                                              "kubernetes.io/egress-bandwidth": "1k"}))["bandwidth"]
    assert limits == {"ingressRate": 10_000_000, "ingressBurst": 1_000_000, "egressRate": 1000,
                      "egressBurst": 4 * 1514 * 8}


@pytest.mark.parametrize("text", ["fast", "1X", "-1M", "999", "2P"])
def test_a_bad_or_out_of_range_annotation_is_an_invalid_configuration(text):
    with pytest.raises(CniError) as caught:
        capability_args(pod(annotations={"kubernetes.io/ingress-bandwidth": text}))
    assert caught.value.code == Code.INVALID_CONFIG and "kubernetes.io/ingress-bandwidth" in caught.value.msg
