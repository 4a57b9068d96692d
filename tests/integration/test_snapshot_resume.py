"""An interrupted cluster snapshot resumes from each primary's checkpoint: every key published, few twice."""

from __future__ import annotations

import threading
from collections import Counter

from redis.cluster import RedisCluster

from replicator import pipeline
from replicator.core.avro import EventCodec
from replicator.snapshot.checkpoints import Checkpoints
from replicator.snapshot.loader import SnapshotLoader
from tests.support import Running, messaging_config, topic_records

KEYS, SCAN_COUNT, EVERY = 3000, 50, 200


def _loader(run, client):
    ctx = run.ctx
    return SnapshotLoader(client, ctx.rules, lambda: pipeline.publisher(ctx), "cluster", 0, ctx.config.capture,
                          scan_count=SCAN_COUNT, checkpoint_every=EVERY,
                          checkpoints=Checkpoints(pipeline.dynamodb(ctx), ctx.config.dynamodb.state_table))


def test_an_interrupted_snapshot_resumes_where_each_primary_stopped(stack, uid, redis_cluster):
    rc = RedisCluster.from_url(redis_cluster)
    rc.flushall()
    pipe = rc.pipeline()
    for n in range(KEYS):
        pipe.set(f"item:{n}", f"value {n}")
    pipe.execute()
    config = messaging_config(stack, uid, redis={"url": redis_cluster})
    with Running(config) as run:
        client, _node, _db = pipeline.redis_client(config)
        stop = threading.Event()
        first = _loader(run, client).run(stop, progress=lambda done, _note: done >= 1000 and stop.set())
        assert 1000 <= first.keys_scanned < KEYS  # interrupted part-way
        second = _loader(run, client).run(resume=True)
        assert second.keys_scanned < KEYS  # resumed, not started over

    counts = Counter(EventCodec().decode(r.value).key for r in topic_records(config))
    assert set(counts) == {f"item:{n}".encode() for n in range(KEYS)}  # every key published
    again = sum(c - 1 for c in counts.values())
    # Only keys scanned after a node's last checkpoint are published twice: at most a window per primary.
    assert again <= 3 * (EVERY + 2 * SCAN_COUNT), again
    assert first.events_published + second.events_published == KEYS + again

    fresh = _loader(run, client).run()  # without --resume it starts over: the checkpoints are cleared
    assert fresh.keys_scanned == KEYS
