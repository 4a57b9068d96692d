"""Random keys and values through capture and apply (hypothesis): DynamoDB ends up equal to Redis, read completely.

Rule keys get what their rules can hold (UTF-8 owners and members, scores DynamoDB numbers take); every other key,
binary names included, goes to the mirror with anything Redis can hold: any type, any bytes, any score (infinite
and out of DynamoDB's number range too), expiries, renames and deletions.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import Running, assert_converged, clean_redis, ddb, dead_letter_records, messaging_config

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
owners = st.sampled_from(["ann", "bo b", "名前", "x:y", "zed"])
rule_prefixes = (b"opponents:", b"meta:")
mirror_keys = st.one_of(st.binary(min_size=1, max_size=12).filter(lambda k: not k.startswith(rule_prefixes)),
                        st.sampled_from([b"m:1", b"m:2", b"m:\xff\x00", b"session:x"]))
blobs = st.binary(max_size=3000)
any_score = st.floats(allow_nan=False)
#: A rule's number attribute holds what DynamoDB numbers hold (1e-200 is a dead letter: see test_hostile).
rule_score = st.floats(min_value=-1e15, max_value=1e15, allow_nan=False).filter(lambda s: s == 0 or abs(s) > 1e-100)

operations = st.one_of(
    st.tuples(st.just("zadd_rule"), owners, st.dictionaries(text, rule_score, min_size=1, max_size=5)),
    st.tuples(st.just("zrem_rule"), owners, text),
    st.tuples(st.just("meta"), owners, text, text),
    st.tuples(st.just("del_meta"), owners, text),
    st.tuples(st.just("set"), mirror_keys, blobs),
    st.tuples(st.just("hset"), mirror_keys, st.dictionaries(st.binary(max_size=20), blobs, min_size=1, max_size=5)),
    st.tuples(st.just("rpush"), mirror_keys, st.lists(blobs, min_size=1, max_size=5)),
    st.tuples(st.just("sadd"), mirror_keys, st.sets(st.binary(max_size=20), min_size=1, max_size=5)),
    st.tuples(st.just("zadd"), mirror_keys, st.dictionaries(st.binary(max_size=20), any_score, min_size=1, max_size=5)),
    st.tuples(st.just("expire"), mirror_keys, st.integers(min_value=60_000, max_value=10**9)),
    st.tuples(st.just("rename"), mirror_keys, mirror_keys),
    st.tuples(st.just("del"), mirror_keys),
)


def _apply(r, op) -> None:
    kind, *args = op
    pipe = r.pipeline(transaction=False)
    if kind == "zadd_rule":
        pipe.zadd(f"opponents:{args[0]}", args[1])
    elif kind == "zrem_rule":
        pipe.zrem(f"opponents:{args[0]}", args[1])
    elif kind == "meta":
        pipe.set(f"meta:{args[0]}:{args[1]}", args[2])
    elif kind == "del_meta":
        pipe.delete(f"meta:{args[0]}:{args[1]}")
    elif kind in ("set", "hset", "rpush", "sadd", "zadd"):
        pipe.delete(args[0])  # a key of another type would make the command fail
        if kind == "set":
            pipe.set(args[0], args[1])
        elif kind == "hset":
            pipe.hset(args[0], mapping=args[1])
        elif kind == "rpush":
            pipe.rpush(args[0], *args[1])
        elif kind == "sadd":
            pipe.sadd(args[0], *args[1])
        else:
            pipe.zadd(args[0], args[1])
    elif kind == "expire":
        pipe.pexpire(args[0], args[1])
    elif kind == "rename":
        if r.exists(args[0]) and args[0] != args[1]:
            pipe.rename(args[0], args[1])
    else:
        pipe.delete(args[0])
    pipe.execute()


def test_random_keys_and_values_end_up_exactly_equal_in_dynamodb(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_applier().start_listener()

        @settings(max_examples=30, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.lists(operations, min_size=1, max_size=25))
        def replicated(ops):
            for op in ops:
                _apply(r, op)
            assert_converged(r, client, config, timeout=60)

        replicated()
        run.check()
    assert not dead_letter_records(config)
