"""API priority and fairness decisions (apiserver/fairness.py), without a server."""

from __future__ import annotations

from podnet.apiserver.auth import AUTHENTICATED_GROUP, User
from podnet.apiserver.fairness import Dispatcher, Rejected, Ticket, classify, deal_hand

ADMIN = User("alice", "", ("system:masters", AUTHENTICATED_GROUP))
NODE = User("system:node:node-1", "", ("system:nodes", AUTHENTICATED_GROUP))
KUBE_PROXY = User("system:kube-proxy:node-1", "", ("system:podnet:kube-proxies", AUTHENTICATED_GROUP))
TENANT_A = User("team-a", "", (AUTHENTICATED_GROUP,))
TENANT_B = User("team-b", "", (AUTHENTICATED_GROUP,))
ROBOT = User("system:serviceaccount:team-a:robot", "", ("system:serviceaccounts", AUTHENTICATED_GROUP))


def test_users_are_classified_by_the_first_matching_schema():
    cases = [
        (ADMIN, "exempt", "exempt"),
        (User("system:apiserver", "", ("system:masters",)), "exempt", "exempt"),
        (NODE, "system-nodes", "system"),
        (KUBE_PROXY, "podnet-components", "system"),
        (ROBOT, "service-accounts", "workload-low"),
        (TENANT_A, "global-default", "global-default"),
        (User("stranger", "", ()), "catch-all", "global-default"),
    ]
    for user, schema, level in cases:
        classification = classify(user)
        assert (classification.schema.name, classification.level.name, classification.flow) == (schema, level, user.name)


def test_uids_are_stable_and_distinct():
    a, b = classify(TENANT_A), classify(NODE)
    assert a.schema.uid == classify(TENANT_B).schema.uid
    assert len({a.schema.uid, a.level.uid, b.schema.uid, b.level.uid}) == 4


def test_seats_are_split_by_shares():
    dispatcher = Dispatcher(150, 10)
    assert (dispatcher.seats("system"), dispatcher.seats("workload-low"), dispatcher.seats("global-default")) == (30, 100, 20)


def test_a_flooding_flow_queues_behind_itself_and_another_flow_is_next():
    dispatcher = Dispatcher(150, 10)
    a = classify(TENANT_A)
    running = [dispatcher.arrive(a) for _ in range(20)]
    assert all(isinstance(t, Ticket) and t.admitted for t in running)
    flood = [dispatcher.arrive(a) for _ in range(30)]
    assert all(isinstance(t, Ticket) and not t.admitted for t in flood)
    other = dispatcher.arrive(classify(TENANT_B))
    assert isinstance(other, Ticket) and not other.admitted
    # A's 30 waiting requests fill the 6 queues of its hand; freed seats go round the non-empty queues, so
    # B's one queue is served within 7 seats, not after A's 30.
    admitted = [ticket for done in running[:7] for ticket in dispatcher.finish(done)]
    assert other in admitted
    assert sum(t.classification.flow == "team-a" for t in admitted) == 6


def test_a_full_queue_refuses():
    dispatcher = Dispatcher(150, 10)
    a = classify(TENANT_A)
    for _ in range(20):
        dispatcher.arrive(a)
    outcomes = [dispatcher.arrive(a) for _ in range(6 * 50 + 1)]
    assert outcomes[-1] == Rejected("queue-full")
    assert all(isinstance(t, Ticket) for t in outcomes[:-1])
    assert dispatcher.waiting("global-default") == 300


def test_cancel_leaves_the_queue_and_frees_a_held_seat():
    dispatcher = Dispatcher(150, 10)
    a = classify(TENANT_A)
    running = [dispatcher.arrive(a) for _ in range(20)]
    waiting = dispatcher.arrive(a)
    assert isinstance(waiting, Ticket)
    assert dispatcher.cancel(waiting) == []
    assert dispatcher.waiting("global-default") == 0
    assert dispatcher.cancel(running[0]) == []
    assert dispatcher.in_use("global-default") == 19


def test_exempt_requests_are_never_counted():
    dispatcher = Dispatcher(1, 1)
    admin = classify(ADMIN)
    assert all(dispatcher.arrive(admin).admitted for _ in range(1000))  # type: ignore[union-attr]
    assert all(dispatcher.open_watch(admin) is None for _ in range(1000))


def test_watches_are_limited_per_user():
    dispatcher = Dispatcher(150, 3)
    a, b = classify(TENANT_A), classify(TENANT_B)
    assert [dispatcher.open_watch(a) for _ in range(4)] == [None, None, None, Rejected("too-many-watches")]
    assert dispatcher.open_watch(b) is None
    dispatcher.close_watch(a)
    assert dispatcher.open_watch(a) is None
    for _ in range(3):
        dispatcher.close_watch(a)
    assert dispatcher.watches == {"team-b": 1}


def test_hands_are_distinct_and_deterministic():
    hand = deal_hand("team-a", 128, 6)
    assert hand == deal_hand("team-a", 128, 6)
    assert len(set(hand)) == 6 and all(0 <= q < 128 for q in hand)
    assert hand != deal_hand("team-b", 128, 6)
