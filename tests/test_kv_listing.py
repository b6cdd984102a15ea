"""``sync_core.kv_listing.current_entries`` against a real nats-server.

It must return every live key under the filter, once, at its latest value,
and end by itself: at the entry nothing is pending behind, or (after the end
marker) when the last message is a delete the watcher drops, or nothing matches.
"""

from __future__ import annotations

from sync_core.kv_listing import current_entries
from sync_core.nats_client import SyncNats

BUCKET = "v1-objects"


def listed(sync_nats: SyncNats, key_filter: str) -> dict[str, bytes]:
    kv = sync_nats.kv(BUCKET)
    entries = sync_nats.run(current_entries(kv, key_filter))
    assert len({e.key for e in entries}) == len(entries)  # each key once
    return {e.key: bytes(e.value) for e in entries}


def test_every_live_key_at_its_latest_value(sync_nats: SyncNats) -> None:
    for i in range(50):
        sync_nats.kv_put(BUCKET, f"a.k{i}", b"old")
    for i in range(0, 50, 2):
        sync_nats.kv_put(BUCKET, f"a.k{i}", b"new")
    sync_nats.kv_put(BUCKET, "b.other", b"x")
    found = listed(sync_nats, "a.>")
    assert len(found) == 50
    assert found["a.k0"] == b"new"
    assert found["a.k1"] == b"old"


def test_a_delete_last_and_an_empty_filter_still_end(sync_nats: SyncNats) -> None:
    sync_nats.kv_put(BUCKET, "c.one", b"1")
    sync_nats.kv_put(BUCKET, "c.two", b"2")
    sync_nats.run(sync_nats.kv(BUCKET).delete("c.two"))
    assert listed(sync_nats, "c.>") == {"c.one": b"1"}
    assert listed(sync_nats, "nothing.>") == {}
