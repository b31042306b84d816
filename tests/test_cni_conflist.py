"""Network configuration lists as a runtime reads them (podnet/cni/conflist.py), without a process."""

from __future__ import annotations

import json

import pytest

from podnet.cni.conflist import ConfList, podnet_conflist
from podnet.cni.spec import CniError, Code

LIST = {
    "cniVersion": "1.0.0",
    "name": "podnet",
    "plugins": [
        {"type": "podnet-cni", "agentSocket": "/run/agent.sock"},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        {"type": "tuning", "mtu": 1400},
    ],
}
MAPPINGS = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]


def test_each_plugin_gets_the_lists_name_and_version_its_capabilities_and_the_previous_result():
    conflist = ConfList.parse(json.dumps(LIST))
    args = {"portMappings": MAPPINGS, "bandwidth": {"ingressRate": 1000000}}
    first = conflist.plugin_config(0, args, None)
    assert first == {"type": "podnet-cni", "agentSocket": "/run/agent.sock", "name": "podnet", "cniVersion": "1.0.0"}
    previous = {"cniVersion": "1.0.0", "ips": [{"address": "10.244.1.5/24"}]}
    second = conflist.plugin_config(1, args, previous)
    assert second == {"type": "portmap", "snat": True, "name": "podnet", "cniVersion": "1.0.0",
                      "runtimeConfig": {"portMappings": MAPPINGS}, "prevResult": previous}
    assert "runtimeConfig" not in conflist.plugin_config(2, args, previous)
    assert conflist.order("ADD") == [0, 1, 2] and conflist.order("DEL") == [2, 1, 0]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", Code.DECODE_FAILURE),
        (json.dumps({**LIST, "cniVersion": "0.3.1"}), Code.INCOMPATIBLE_VERSION),
        (json.dumps({**LIST, "name": "-bad"}), Code.INVALID_CONFIG),
        (json.dumps({**LIST, "plugins": []}), Code.INVALID_CONFIG),
        (json.dumps({**LIST, "plugins": [{"agentSocket": "x"}]}), Code.INVALID_CONFIG),
    ],
)
def test_bad_lists_are_refused_with_the_specs_codes(text, code):
    with pytest.raises(CniError) as caught:
        ConfList.parse(text)
    assert caught.value.code == code


def test_the_agents_list_round_trips_and_says_1_0_0_for_the_reference_plugins():
    conflist = podnet_conflist("/state/agent.sock", ({"type": "tuning"},))
    assert ConfList.parse(conflist.to_json()) == conflist
    assert conflist.version == "1.0.0" and conflist.plugins[0]["type"] == "podnet-cni"
