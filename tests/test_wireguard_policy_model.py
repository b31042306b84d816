"""The Kubernetes e2e NetworkPolicy model on three agents that encrypt (`--encryption wireguard`): the
live cases pass unchanged, so policy sees each packet as it was before it was sealed, and the cells
between nodes did cross inside WireGuard (every agent handshook with both others and sent nothing in
clear)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.policy_cluster import ModelCluster, running_model_cluster
from test_policy_live import LIVE_CASES, probe_live_case

from podnet.rpc.agentmethods import PEER_TX

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encrypted_model_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelCluster]:
    home = tmp_path_factory.mktemp("podnet-home")
    with running_model_cluster(home, prefix="127.0.198", agent_args=("--encryption", "wireguard")) as model:
        yield model


@pytest.mark.parametrize("case_name", list(LIVE_CASES))
def test_e2e_model_case_probed_live_through_wireguard(encrypted_model_cluster, case_name):
    probe_live_case(encrypted_model_cluster, case_name)
    for name, agent in encrypted_model_cluster.agents.items():
        counters = agent.counters()
        assert counters.get("wireguard.transport-sent", 0) > 0, (name, counters)
        assert counters.get("drop.wireguard-no-key", 0) == 0, (name, counters)
        assert len([key for key in counters if key.startswith(PEER_TX)]) == 2, (name, counters)
