"""MappingStore against a real NATS KV bucket: keys and plain-text values."""

from __future__ import annotations

import pytest

from sync_core.nats_client import SyncNats
from tasks.errors import PermanentError
from tasks.stores.id_mappings import MappingStore

BUCKET = "v1-mappings"
SFID = "a0941000002wBz9AAE"
UID = "5b3c1f0e-1d2a-4c3b-8e9f-0a1b2c3d4e5f"
COMMITTEE_SFID = "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a"
COMMITTEE_UID = "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a"


def raw(sync_nats: SyncNats, key: str) -> bytes | None:
    entry = sync_nats.kv_get(BUCKET, key)
    return None if entry is None else bytes(entry.value)


def test_project_mappings_are_plain_text_in_three_keys(sync_nats: SyncNats) -> None:
    store = MappingStore(sync_nats, BUCKET)
    assert store.project_uid(SFID) is None
    store.record_project(SFID, "tlf", UID)
    assert raw(sync_nats, f"project.sfid.{SFID}") == UID.encode()
    assert raw(sync_nats, "project.slug.tlf") == UID.encode()
    assert raw(sync_nats, f"project.uid.{UID}") == SFID.encode()
    assert store.project_uid(SFID) == UID
    assert store.project_uid_by_slug("tlf") == UID
    assert store.project_sfid(UID) == SFID


def test_committee_mappings(sync_nats: SyncNats) -> None:
    store = MappingStore(sync_nats, BUCKET)
    assert store.committee_uid(COMMITTEE_SFID) is None
    store.record_committee(COMMITTEE_SFID, COMMITTEE_UID)
    assert raw(sync_nats, f"committee.sfid.{COMMITTEE_SFID}") == COMMITTEE_UID.encode()
    assert raw(sync_nats, f"committee.uid.{COMMITTEE_UID}") == COMMITTEE_SFID.encode()
    assert store.committee_uid(COMMITTEE_SFID) == COMMITTEE_UID
    assert store.committee_sfid(COMMITTEE_UID) == COMMITTEE_SFID


def test_deleted_and_empty_mappings_read_as_absent(sync_nats: SyncNats) -> None:
    store = MappingStore(sync_nats, BUCKET)
    store.put(f"project.sfid.{SFID}", UID)
    sync_nats.run(sync_nats.kv(BUCKET).delete(f"project.sfid.{SFID}"))
    assert store.project_uid(SFID) is None
    sync_nats.kv_put(BUCKET, f"committee.sfid.{COMMITTEE_SFID}", b"")
    assert store.committee_uid(COMMITTEE_SFID) is None


def test_last_write_wins(sync_nats: SyncNats) -> None:
    store = MappingStore(sync_nats, BUCKET)
    store.put("project.slug.tlf", "old")
    store.put("project.slug.tlf", UID)
    assert store.project_uid_by_slug("tlf") == UID


def test_a_mapping_key_the_kv_would_refuse_is_a_permanent_error(sync_nats: SyncNats) -> None:
    store = MappingStore(sync_nats, BUCKET)
    for uid in ("x" * 5000, "uid with spaces", "ü"):
        with pytest.raises(PermanentError) as caught:
            store.record_project(SFID, "tlf", uid)
        assert caught.value.kind == "invalid_mapping_key"
        assert len(caught.value.message) < 200
    assert store.project_uid(SFID) is None  # nothing of the failed writes landed
    with pytest.raises(PermanentError):
        store.project_sfid("x" * 5000)
    store.record_project(SFID, "tlf", UID)  # the connection is still fine
    assert store.project_uid(SFID) == UID


def test_a_remembered_mapping_is_read_once_and_follows_the_runs_own_writes(
    sync_nats: SyncNats,
) -> None:
    store = MappingStore(sync_nats, "v1-mappings")
    key = "project.sfid.a0941000002wBz9AAE"
    with store.remembering(key):
        assert store.get(key) is None
        # Another writer is invisible inside the block: only the lease holder writes this key.
        sync_nats.kv_put("v1-mappings", key, b"uid-from-elsewhere")
        assert store.get(key) is None
        store.record_project("a0941000002wBz9AAE", "slug", "uid-1")
        assert store.project_uid("a0941000002wBz9AAE") == "uid-1"
        store.tombstone([key])
        assert store.is_tombstoned(key)
        assert store.clear_tombstone(key)
        assert store.read(key) is None
    # Outside the block every read goes to the bucket again.
    sync_nats.kv_put("v1-mappings", key, b"uid-2")
    assert store.get(key) == "uid-2"


def test_a_remembered_mapping_that_holds_its_value_is_not_written_again(
    sync_nats: SyncNats,
) -> None:
    store = MappingStore(sync_nats, "v1-mappings")
    sfid = "a0941000002wBz9AAE"
    store.record_project(sfid, "slug", "uid-1")
    forward = sync_nats.kv_get("v1-mappings", f"project.sfid.{sfid}")
    reverse = sync_nats.kv_get("v1-mappings", "project.uid.uid-1")
    assert forward is not None
    assert reverse is not None
    with store.remembering(f"project.sfid.{sfid}"):
        store.record_project(sfid, "new-slug", "uid-1")
    # The forward mapping was known to hold uid-1: no write; the others were written.
    after = sync_nats.kv_get("v1-mappings", f"project.sfid.{sfid}")
    assert after is not None
    assert after.revision == forward.revision
    rewritten = sync_nats.kv_get("v1-mappings", "project.uid.uid-1")
    assert rewritten is not None
    assert rewritten.revision > reverse.revision
    assert store.project_uid_by_slug("new-slug") == "uid-1"
