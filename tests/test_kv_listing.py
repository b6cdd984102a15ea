"""Listing a KV bucket's live keys (``sync_core.kv_listing``) against a real nats-server.

nats-py's ``KeyValue.watch`` can end its initial values before messages already
on the wire (nats-io/nats.py#842), so ``dlq list``, ``replay`` and the sandbox's
V1 fake list through ``last_per_subject``, which ends on the server's count.
"""

from __future__ import annotations

from nats.aio.msg import Msg

from operations.current_keys import list_current
from sandbox.servers import NatsServer
from sync_core.kv_listing import (
    current_entries,
    kv_stream,
    kv_subject,
    last_per_subject,
    operation_of,
)
from sync_core.nats_client import SyncNats
from sync_core.sync_state import DEFAULT_STATE_BUCKET
from tasks.stores.dead_letters import DeadLetterStore

BUCKET = "v1-objects"
LISTINGS = 10
KEYS = 150


def listed(sync_nats: SyncNats, key_filter: str) -> dict[str, str | None]:
    """Key -> the operation of its last message, for every key under ``key_filter``."""
    seen: dict[str, str | None] = {}
    start = len(kv_subject(BUCKET, ""))

    def note(msg: Msg, _meta: Msg.Metadata) -> None:
        seen[msg.subject[start:]] = operation_of(msg.headers)

    sync_nats.run(
        last_per_subject(
            sync_nats.js, kv_stream(BUCKET), kv_subject(BUCKET, key_filter), note, True
        )
    )
    return seen


def test_every_key_comes_once_with_its_last_operation(sync_nats: SyncNats) -> None:
    for n in range(KEYS):
        sync_nats.kv_put(BUCKET, f"salesforce-project__c.p{n}", b"{}")
    sync_nats.kv_put(BUCKET, "salesforce-project__c.p0", b'{"again": true}')
    kv = sync_nats.kv(BUCKET)
    sync_nats.run(kv.delete("salesforce-project__c.p1"))
    sync_nats.run(kv.purge("salesforce-project__c.p2"))
    sync_nats.kv_put(BUCKET, "platform-collaboration__c.c1", b"{}")  # outside the filter

    for _ in range(LISTINGS):
        seen = listed(sync_nats, "salesforce-project__c.>")
        assert len(seen) == KEYS
        assert (seen["salesforce-project__c.p1"], seen["salesforce-project__c.p2"]) == (
            "DEL",
            "PURGE",
        )
        assert sum(operation == "PUT" for operation in seen.values()) == KEYS - 2


def test_a_filter_that_matches_nothing_ends_at_once(sync_nats: SyncNats) -> None:
    assert listed(sync_nats, "nothing-here.>") == {}


def test_replay_and_dlq_list_see_every_live_entry(buckets: NatsServer, sync_nats: SyncNats) -> None:
    for n in range(KEYS):
        sync_nats.kv_put(BUCKET, f"salesforce-project__c.r{n}", b"{}")
    sync_nats.run(sync_nats.kv(BUCKET).delete("salesforce-project__c.r0"))
    letters = DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)
    for n in range(KEYS):
        letters.add(f"salesforce-project__c.r{n}", n + 1, "PUT", error_kind="x", error_message="y")
    for _ in range(LISTINGS):
        current = list_current(buckets.url, BUCKET, "salesforce-project__c.")
        assert len(current) == KEYS - 1
        assert len(letters.list()) == KEYS


def current(sync_nats: SyncNats, key_filter: str) -> dict[str, bytes]:
    entries = sync_nats.run(current_entries(sync_nats.js, BUCKET, key_filter))
    assert len({e.key for e in entries}) == len(entries)  # each key once
    return {e.key: e.value for e in entries}


def test_current_entries_are_every_live_key_at_its_latest_value(sync_nats: SyncNats) -> None:
    for i in range(50):
        sync_nats.kv_put(BUCKET, f"a.k{i}", b"old")
    for i in range(0, 50, 2):
        sync_nats.kv_put(BUCKET, f"a.k{i}", b"new")
    sync_nats.kv_put(BUCKET, "b.other", b"x")
    found = current(sync_nats, "a.>")
    assert len(found) == 50
    assert found["a.k0"] == b"new"
    assert found["a.k1"] == b"old"


def test_current_entries_end_after_a_delete_and_on_an_empty_filter(sync_nats: SyncNats) -> None:
    sync_nats.kv_put(BUCKET, "c.one", b"1")
    sync_nats.kv_put(BUCKET, "c.two", b"2")
    sync_nats.run(sync_nats.kv(BUCKET).delete("c.two"))
    assert current(sync_nats, "c.>") == {"c.one": b"1"}
    assert current(sync_nats, "nothing.>") == {}
