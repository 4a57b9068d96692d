"""The listener checks notify-keyspace-events before it starts."""

from __future__ import annotations

import pytest

from replicator import pipeline
from replicator.core.errors import SourceError
from tests.support import clean_redis, messaging_config


def test_missing_notification_flags_stop_the_listener_naming_the_exact_setting(stack, uid):
    r = clean_redis(stack)
    r.config_set("notify-keyspace-events", "Kz")
    config = messaging_config(stack, uid, redis={"configure_notifications": False})
    with pytest.raises(SourceError) as info:
        pipeline.listener(pipeline.context(config))
    message = str(info.value)
    assert "but the rules need 'Kg$lshzxe' (missing 'g$lshxe')" in message
    assert "CONFIG SET notify-keyspace-events Kg$lshzxe" in message and "parameter group" in message


def test_missing_flags_are_added_when_allowed_keeping_the_existing_ones(stack, uid):
    r = clean_redis(stack)
    r.config_set("notify-keyspace-events", "Elz")
    config = messaging_config(stack, uid, redis={"configure_notifications": True})
    pipeline.listener(pipeline.context(config))
    flags = r.config_get("notify-keyspace-events")["notify-keyspace-events"]
    assert set("Kg$lshzxeE") <= set(flags.decode() if isinstance(flags, bytes) else flags)
