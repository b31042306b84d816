"""Network-namespace pods on two real node agents: real programs, real kernels, podnet's pipeline between."""

from __future__ import annotations

import pytest

from support.netns_pods import WEB_BODY, pod_exec, wait_serving

pytestmark = pytest.mark.root


def test_curl_reaches_http_server_in_other_node_by_pod_ip(netns_cluster):
    web = netns_cluster.pod_ips["web"]
    body = wait_serving(netns_cluster, "client", f"http://{web}:8080/")
    assert body == WEB_BODY
