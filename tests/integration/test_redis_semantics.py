"""The command core answers what Redis answers: random redis-py calls on a real Redis and on the pure core.

This is the contract the DynamoDB-backed client builds on (it runs the same core over items it loads), checked
here without DynamoDB so that thousands of command sequences run in seconds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.redis_calls import InMemoryRedis, call_strategy, run_both
from tests.support import clean_redis

KEYS = [b"k1", b"k2", "ключ".encode(), b"\x00bin"]
MEMBERS = [b"a", b"b", b"", b"\xff", "é".encode(), b"aa"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(call_strategy(KEYS, MEMBERS), min_size=1, max_size=40))
def test_random_command_sequences_answer_as_redis_does(stack, calls):
    real = clean_redis(stack)
    run_both(real, InMemoryRedis(), calls)
