"""Leader election's decisions (apiserver/election.py), as client-go's leaderelection makes them, without a clock."""

from __future__ import annotations

import datetime

import pytest
from podnet.apiserver import election
from podnet.apiserver.election import Observation, Record, Timings

WALL = datetime.datetime(2026, 12, 4, 17, 30, 0, 123456, tzinfo=datetime.UTC)
TIMINGS = Timings(lease_duration=15, renew_deadline=10, retry_period=2)


def lease(holder: str, duration: int = 15, transitions: int = 0, acquired: str = "2026-12-04T17:00:00.000000Z") -> dict:
    return {"metadata": {"name": "kube-controller-manager", "namespace": "kube-system"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": acquired,
                     "renewTime": acquired, "leaseTransitions": transitions}}


def test_no_lease_yet_is_created_with_us_holding_it():
    record = election.claim(None, "a", now=100.0, wall=WALL, timings=TIMINGS)
    assert record == Record("a", 15, "2026-12-04T17:30:00.123456Z", "2026-12-04T17:30:00.123456Z", 0)
    assert record.spec() == {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0,
                             "acquireTime": "2026-12-04T17:30:00.123456Z", "renewTime": "2026-12-04T17:30:00.123456Z"}


def test_another_holders_lease_is_respected_until_it_expires_by_our_clock():
    seen = election.observe(None, Record.of(lease("b")), now=100.0)
    assert election.claim(seen, "a", now=114.9, wall=WALL, timings=TIMINGS) is None
    taken = election.claim(seen, "a", now=115.0, wall=WALL, timings=TIMINGS)
    assert taken is not None and taken.holder == "a" and taken.transitions == 1
    assert taken.acquire_time == "2026-12-04T17:30:00.123456Z"


def test_expiry_counts_from_when_the_record_last_changed_not_from_its_renew_time():
    """A renewTime from a machine whose clock is hours behind does not make a live holder look dead."""
    first = election.observe(None, Record.of(lease("b")), now=100.0)
    renewed = lease("b")
    renewed["spec"]["renewTime"] = "2026-12-04T17:00:02.000000Z"
    second = election.observe(first, Record.of(renewed), now=110.0)
    assert second.changed_at == 110.0
    assert election.claim(second, "a", now=120.0, wall=WALL, timings=TIMINGS) is None
    unchanged = election.observe(second, Record.of(renewed), now=124.0)
    assert unchanged.changed_at == 110.0
    assert election.claim(unchanged, "a", now=125.0, wall=WALL, timings=TIMINGS) is not None


def test_the_holder_renews_keeping_its_acquire_time_and_the_transition_count():
    seen = Observation(Record.of(lease("a", transitions=3)), changed_at=100.0)
    renewed = election.claim(seen, "a", now=101.0, wall=WALL, timings=TIMINGS)
    assert renewed == Record("a", 15, "2026-12-04T17:00:00.000000Z", "2026-12-04T17:30:00.123456Z", 3)


def test_a_released_lease_is_free_at_once():
    seen = Observation(Record.of(lease("", duration=1, transitions=2)), changed_at=100.0)
    taken = election.claim(seen, "a", now=100.0, wall=WALL, timings=TIMINGS)
    assert taken is not None and taken.holder == "a" and taken.transitions == 3


def test_release_is_written_only_by_the_holder():
    ours = Observation(Record.of(lease("a", transitions=4)), changed_at=100.0)
    assert election.release(ours, "a", WALL) == Record("", 1, "2026-12-04T17:30:00.123456Z",
                                                       "2026-12-04T17:30:00.123456Z", 4)
    theirs = Observation(Record.of(lease("b")), changed_at=100.0)
    assert election.release(theirs, "a", WALL) is None


def test_the_leader_is_deposed_at_the_renew_deadline_before_others_may_take_over():
    assert not election.deposed(last_renewed=100.0, now=109.9, timings=TIMINGS)
    assert election.deposed(last_renewed=100.0, now=110.0, timings=TIMINGS)
    # Others wait lease_duration from the last change they saw, which is no earlier than the last renewal.
    assert TIMINGS.renew_deadline < TIMINGS.lease_duration


def test_fractional_durations_round_up_to_whole_seconds():
    record = election.claim(None, "a", now=0.0, wall=WALL, timings=Timings(1.5, 1.0, 0.2))
    assert record is not None and record.duration_seconds == 2


@pytest.mark.parametrize(("timings", "message"), [
    (Timings(10, 10, 2), "leaseDuration must be greater than renewDeadline"),
    (Timings(15, 2.4, 2), "renewDeadline must be greater than retryPeriod*JitterFactor"),
    (Timings(15, 10, 0), "retryPeriod must be greater than zero"),
])
def test_timings_under_which_two_leaders_could_act_are_refused(timings, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        timings.validate()


def test_a_lease_without_a_spec_reads_as_unheld():
    assert Record.of({"metadata": {}}) == Record()
    assert not election.held_by_another(Observation(Record(), 0.0), "a", now=0.0)
