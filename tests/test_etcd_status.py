"""`podnet status`'s etcd lines, from members' Status answers (podnet/cli/etcd_status.py): the leader by
component name and the raft term, a row per member, the ones that did not answer said so."""

from podnet.apiserver.storage.etcd import MemberStatus

from podnet.cli.etcd_status import members, render
from podnet.cluster.supervisor import Process

NAMES = ["etcd", "etcd-2", "etcd-3"]


def test_the_leader_is_named_by_its_component_and_each_member_has_a_row():
    lines = render(NAMES, [MemberStatus("h:2379", 0xA, 0xB, 3, 190, "3.4.23"),
                           MemberStatus("h:2389", 0xB, 0xB, 3, 190, "3.4.23"),
                           MemberStatus("h:2399", error="etcd h:2399: failed to connect")])
    assert lines[0] == "etcd: leader etcd-2, raft term 3"
    assert lines[1].split() == ["MEMBER", "ENDPOINT", "ID", "ROLE", "RAFT", "TERM", "RAFT", "INDEX", "VERSION"]
    assert lines[2].split() == ["etcd", "h:2379", "a", "follower", "3", "190", "3.4.23"]
    assert lines[3].split() == ["etcd-2", "h:2389", "b", "leader", "3", "190", "3.4.23"]
    assert lines[4].split() == ["etcd-3", "h:2399", "-", "unreachable", "-", "-", "-"]


def test_during_an_election_the_newest_term_speaks():
    lines = render(NAMES[:2], [MemberStatus("h:2379", 0xA, 0xB, 3, 190, "3.4.23"),  # still follows the old leader
                               MemberStatus("h:2389", 0xC, 0, 4, 191, "3.4.23")])
    assert lines[0] == "etcd: no leader (raft term 4)"
    assert lines[3].split()[3:5] == ["no", "leader"]


def test_no_member_answers():
    assert render(["etcd"], [MemberStatus("h:2379", error="down")])[0] == "etcd: no member answers"


def test_members_are_found_in_the_supervisors_processes():
    etcd = Process("etcd-2", ["etcd", "--name", "podnet-2", "--listen-client-urls", "https://127.0.0.10:2389"], {},
                   external=True)
    api = Process("apiserver", ["apiserver", "--host", "127.0.0.10"], {})
    assert members([api, etcd]) == [("etcd-2", "127.0.0.10:2389")]
