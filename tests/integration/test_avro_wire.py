"""What goes over the wire: Avro single-object encoding readable with the schema file alone; bytes stay bytes."""

from __future__ import annotations

import io
import json

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from replicator.core.avro import schema_dir
from tests.support import Running, clean_redis, ddb, eventually, messaging_config, topic_records


def test_every_published_message_decodes_with_the_schema_file(stack, uid):
    r = clean_redis(stack)
    config = messaging_config(stack, uid)
    with Running(config) as run:
        run.start_listener()
        r.zadd("opponents:alice", {"bob": 1.5, "carol": 2})
        r.set("meta:alice:bob", '{"nick": "Bob"}')
        r.hset("h:1", mapping={"f": "v"})
        r.rpush("l:1", "a", "b", "a")
        r.sadd("s:1", "x", "y")
        eventually(lambda: len(topic_records(config)) >= 5, 30, message="five events on the topic")
        r.delete("meta:alice:bob")  # after its upsert was read: a delete within the coalescing window is one event
        eventually(lambda: len(topic_records(config)) >= 6, 30, message="the delete on the topic")

    schema = fastavro.parse_schema(json.loads((schema_dir() / "change_event.avsc").read_text()))
    header = b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    decoded = []
    for record in topic_records(config):
        assert record.value[:10] == header
        event = fastavro.schemaless_reader(io.BytesIO(record.value[10:]), schema, return_record_name=True)
        assert record.key == event["owner"]
        decoded.append(event)
    by_key = {}
    for event in decoded:
        by_key.setdefault(event["source"]["key"], []).append(event)
    zset = by_key[b"opponents:alice"][-1]
    assert zset["owner"] == b"alice" and zset["op"] == "UPSERT" and zset["origin"] == "LIVE"
    assert zset["value"] == ("replicator.v1.ZSetValue",
                             {"members": [{"member": b"bob", "score": 1.5}, {"member": b"carol", "score": 2.0}]})
    assert by_key[b"l:1"][-1]["value"] == ("replicator.v1.ListValue", {"items": [b"a", b"b", b"a"]})
    meta_ops = [e["op"] for e in by_key[b"meta:alice:bob"]]
    assert meta_ops[-1] == "DELETE" and by_key[b"meta:alice:bob"][-1]["value"] is None
    versions = [e["version"] for e in by_key[b"meta:alice:bob"]]
    assert versions == sorted(versions)


def test_binary_keys_and_values_survive_the_round_trip(stack, uid):
    r, client = clean_redis(stack), ddb(stack)
    config = messaging_config(stack, uid)
    key, value = b"bin:\xff\x00\xfe", b"\x00\xff\x80payload\xc3"
    hkey, field, hvalue = b"binh:\x80", b"\xfe\xff", b"\x00\x01"
    with Running(config) as run:
        run.start_applier().start_listener()
        r.set(key, value)
        r.hset(hkey, field, hvalue)

        def mirrored():
            items = {i["key"]["B"]: i for i in client.scan(TableName=f"mirror_{uid}", ConsistentRead=True)["Items"]}
            return items if key in items and hkey in items else None

        items = eventually(mirrored, 60, message="binary keys mirrored")
        assert items[key]["value"] == {"B": value}
        assert items[hkey]["value"] == {"L": [{"L": [{"B": field}, {"B": hvalue}]}]}

        r.delete(key)
        eventually(lambda: "value" not in client.get_item(TableName=f"mirror_{uid}", Key={"key": {"B": key}},
                                                          ConsistentRead=True)["Item"], 60, message="tombstone")
    events = [e for e in topic_records(config) if e.key == key]
    assert events, "the binary key's events are keyed by the binary key itself"
