"""`podnet partition` on two real node agents: the cut stops pod traffic between the nodes, `--list`
shows it, `--heal` lifts it; bad requests give one line and change nothing."""

import pytest

from podnet.cli.faults_cmd import cut_lines

pytestmark = pytest.mark.slow  # real processes: an API server and two agents

ADDRESSES = {"node-1": "127.0.0.11", "node-2": "127.0.0.12", "node-3": "127.0.0.13"}


def test_list_lines_name_each_pair_once_and_say_when_one_agent_alone_cuts_it():
    cuts = {"node-1": {"127.0.0.12", "127.0.0.13"}, "node-2": {"127.0.0.11"}, "node-3": set()}
    assert cut_lines(cuts, ADDRESSES) == ["node-1 <-> node-2", "node-1 <-> node-3  (cut by node-1 only)"]
    assert cut_lines({"node-3": {"127.0.0.99"}}, ADDRESSES) == ["127.0.0.99 <-> node-3  (cut by node-3 only)"]
    assert cut_lines({"node-1": set(), "node-2": set()}, ADDRESSES) == []


def connects(cluster, timeout: str = "1") -> bool:
    run = cluster.cli("exec", "a", "--", "connect", f"{cluster.pod_ips['b']}:80", "--timeout", timeout)
    return run.returncode == 0


def test_partition_cuts_lists_and_heals(two_node_cluster):
    cluster = two_node_cluster
    assert connects(cluster, "5")
    dropped_before = cluster.agents["node-1"].counters().get("tunnel.drop.partitioned", 0)

    cut = cluster.cli("partition", "node-1", "node-2")
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout.splitlines() == [
        "node-1: now drops tunnel traffic to and from node-2 (127.0.0.12)",
        "node-2: now drops tunnel traffic to and from node-1 (127.0.0.11)",
    ]
    assert not connects(cluster)
    assert cluster.agents["node-1"].counters()["tunnel.drop.partitioned"] > dropped_before
    listed = cluster.cli("partition", "--list")
    assert (listed.returncode, listed.stdout) == (0, "node-1 <-> node-2\n"), listed.stderr
    without_node_2 = cluster.cli("partition", "--list", "--agent-socket", "node-2=/nonexistent/agent.sock")
    assert (without_node_2.returncode, without_node_2.stdout) == (
        1,
        "node-1 <-> node-2  (cut by node-1 only)\n",
    )
    assert without_node_2.stderr == (
        "warning: the agent of node node-2 is not reachable at /nonexistent/agent.sock: No such file or directory;"
        " its cuts are not listed\n"
    )

    healed = cluster.cli("partition", "node-2", "node-1", "--heal")
    assert healed.returncode == 0, healed.stderr
    assert healed.stdout.splitlines() == [
        "node-2: forwards tunnel traffic to and from node-1 (127.0.0.11) again",
        "node-1: forwards tunnel traffic to and from node-2 (127.0.0.12) again",
    ]
    assert connects(cluster, "5")
    listed = cluster.cli("partition", "--list")
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "", "No partitions.\n")


def test_a_cut_outlives_a_restart_of_the_agent(two_node_cluster):
    """A partition is the network's, not the agent's: an agent killed and started again keeps dropping."""
    cluster = two_node_cluster
    assert cluster.cli("partition", "node-1", "node-2").returncode == 0
    try:
        agent = cluster.agents["node-1"]
        agent.kill()
        agent.start()
        assert agent.rpc("faults.partitions") == {"partitioned": ["127.0.0.12"]}
        assert cluster.cli("partition", "--list").stdout == "node-1 <-> node-2\n"
        assert not connects(cluster)
    finally:
        assert cluster.cli("partition", "node-1", "node-2", "--heal").returncode == 0
    assert connects(cluster, "5")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("node-1", "node-9"), 'Error from server (NotFound): nodes "node-9" not found'),
        (("node-1", "node-1"), "error: a node cannot be cut from itself (node-1 given twice)"),
        (
            ("node-1", "node-2", "--agent-socket", "node-2=/nonexistent/agent.sock"),
            "error: the agent of node node-2 is not reachable at /nonexistent/agent.sock: No such file or directory",
        ),
    ],
)
def test_a_bad_request_is_one_line_a_failing_exit_and_cuts_nothing(two_node_cluster, args, error):
    run = two_node_cluster.cli("partition", *args)
    assert (run.returncode, run.stdout, run.stderr) == (1, "", error + "\n")
    assert two_node_cluster.agents["node-1"].rpc("faults.partitions") == {"partitioned": []}
