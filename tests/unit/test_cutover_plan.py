"""The cutover plan: stages by a stable hash share, nested shares, steps refused with a reason, heartbeats."""

from __future__ import annotations

import pytest

from replicator.core import commands
from replicator.core.cutover import CutoverError, Heartbeat, Plan, Stage, lagging, position

OWNERS = [b"user%05d" % i for i in range(20_000)]


def _stages(plan: Plan) -> dict[bytes, Stage]:
    return {o: plan.stage(o) for o in OWNERS}


def test_a_share_is_about_that_share_of_the_owners_and_stays_the_same_owners_as_it_grows():
    plan = Plan().with_shadow(100)
    ten = plan.holding(10).switched()
    fifty = ten.with_shadow(100).holding(50).switched()
    switched_10 = {o for o, s in _stages(ten).items() if s is Stage.DYNAMODB}
    switched_50 = {o for o, s in _stages(fifty).items() if s is Stage.DYNAMODB}
    assert 0.09 < len(switched_10) / len(OWNERS) < 0.11
    assert 0.48 < len(switched_50) / len(OWNERS) < 0.52
    assert switched_10 <= switched_50
    assert position(b"user00001") == position(b"user00001")  # not Python's salted hash


def test_the_stages_of_a_switch_in_progress_and_after_it():
    plan = Plan().with_shadow(60).holding(20)
    assert plan.epoch == 2
    assert {s for o, s in _stages(plan).items() if position(o) < 0.2} == {Stage.SWITCHING}
    assert {s for o, s in _stages(plan).items() if 0.2 <= position(o) < 0.6} == {Stage.SHADOW}
    assert {s for o, s in _stages(plan).items() if position(o) >= 0.6} == {Stage.REDIS}
    done = plan.switched()
    assert done.epoch == 3 and done.switching is None and done.dynamodb == 20
    assert {s for o, s in _stages(done).items() if position(o) < 0.2} == {Stage.DYNAMODB}
    released = plan.released()
    assert released.dynamodb == 0 and {s for o, s in _stages(released).items() if position(o) < 0.2} == {Stage.SHADOW}
    complete = done.with_complete(5)
    assert {s for o, s in _stages(complete).items() if position(o) < 0.05} == {Stage.COMPLETE}
    assert Stage.COMPLETE.switched and Stage.DYNAMODB.switched and not Stage.SWITCHING.switched


@pytest.mark.parametrize(("step", "says"), [
    (lambda p: p.holding(80), "only 50% of the owners are in shadow"),
    (lambda p: p.holding(20), "already switched"),
    (lambda p: p.with_shadow(10), "cutover back"),
    (lambda p: p.with_complete(40), "only 30% of the owners are switched"),
    (lambda p: p.with_complete(10).with_complete(5), "cannot go back"),
    (lambda p: p.holding(40).with_shadow(100), "in progress"),
    (lambda p: p.switched(), "no switch"),
    (lambda p: p.with_shadow(101), "0 to 100"),
])
def test_steps_that_cannot_be_taken_say_why(step, says):
    plan = Plan().with_shadow(50).holding(30).switched()
    with pytest.raises(CutoverError, match=says):
        step(plan)


def test_the_record_round_trips():
    plan = Plan().with_shadow(75.5).holding(12.5)
    assert Plan.from_json(plan.to_json()) == plan
    assert Plan().trivial and not plan.trivial


def test_a_switch_waits_for_live_clients_on_an_older_epoch_only():
    beats = [Heartbeat("a", 3, 100.0, 115.0), Heartbeat("b", 2, 100.0, 115.0), Heartbeat("dead", 1, 80.0, 95.0)]
    assert [h.instance for h in lagging(beats, 3, now=101.0)] == ["b"]
    assert lagging(beats, 2, now=101.0) == []


@pytest.mark.parametrize(("args", "expected"), [
    ([b"SET", b"k", b"v", b"EX", b"10"], [b"SET", b"k", b"v", b"PXAT", b"1010000"]),
    ([b"set", b"k", b"v", b"nx", b"px", b"5"], [b"set", b"k", b"v", b"nx", b"PXAT", b"1000005"]),
    ([b"EXPIRE", b"k", b"-5", b"GT"], [b"PEXPIREAT", b"k", b"995000", b"GT"]),
    ([b"PEXPIRE", b"k", b"7"], [b"PEXPIREAT", b"k", b"1000007"]),
    ([b"SET", b"k", b"v", b"EX", b"0"], [b"SET", b"k", b"v", b"EX", b"0"]),  # refused as it is, in Redis' words
    ([b"EXPIRE", b"k", b"soon"], [b"EXPIRE", b"k", b"soon"]),
    ([b"SET", b"k", b"v", b"KEEPTTL"], [b"SET", b"k", b"v", b"KEEPTTL"]),
    ([b"ZADD", b"k", b"1", b"m"], [b"ZADD", b"k", b"1", b"m"]),
])
def test_a_mirrored_write_carries_the_expiry_dynamodb_got(args, expected):
    assert commands.absolute_expiry(args, 1_000_000) == expected


def test_back_holds_the_switched_owners_above_its_share_then_returns_them_to_shadow():
    switched = Plan().with_shadow(100).holding(60).switched().with_complete(10)
    returning = switched.returning_to(30)
    stages = {o: returning.stage(o) for o in OWNERS}
    assert {s for o, s in stages.items() if position(o) < 0.1} == {Stage.COMPLETE}
    assert {s for o, s in stages.items() if 0.1 <= position(o) < 0.3} == {Stage.DYNAMODB}
    assert {s for o, s in stages.items() if 0.3 <= position(o) < 0.6} == {Stage.RETURNING}
    assert Stage.RETURNING.held and Stage.SWITCHING.held and not Stage.RETURNING.switched
    back = returning.returned()
    assert (back.dynamodb, back.returning, back.epoch) == (30, None, returning.epoch + 1)
    assert {s for o, s in {o: back.stage(o) for o in OWNERS}.items() if 0.3 <= position(o) < 0.6} == {Stage.SHADOW}
    assert returning.kept().dynamodb == 60 and returning.kept().returning is None
    assert Plan.from_json(returning.to_json()) == returning
    with pytest.raises(CutoverError, match="complete and cannot go back"):
        switched.returning_to(5)
    with pytest.raises(CutoverError, match="nothing to bring back"):
        switched.returning_to(60)
    with pytest.raises(CutoverError, match="in progress"):
        returning.holding(80)


def test_clients_read_fast_from_before_a_hold_until_its_step_ends():
    fast = Plan().with_shadow(100).hastened("switch")
    assert fast.fast and fast.epoch == 2 and fast.switching is None
    held = fast.holding(50)
    assert held.fast and held.switching == 50
    assert not held.switched().fast and not held.released().fast
    assert not fast.eased().fast and fast.eased().epoch == 3
    assert Plan().eased() == Plan()
    assert Plan.from_json(held.to_json()) == held
