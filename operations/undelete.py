"""``requeue --undelete``: clear the tombstones of deleted V2 objects on purpose.

A delete that V2 accepted turns the object's forward mapping (``project.sfid.{sfid}``,
``committee.sfid.{sfid}``, ``committee_member.sfid.{sfid}``: ``ObjectKind.undelete_key``
of the key's kind) into the tombstone ``!del``; a later put of the
record is then skipped as ``tombstoned``. Removing the tombstone (only when it
still is one) lets the next sync create the object again, under a new uid.
The reverse mapping of the old uid stays ``!del``: that V2 object is gone.
"""

from __future__ import annotations

from collections.abc import Iterable

from operations.current_keys import open_nats
from sync_core.nats_client import SyncNats
from sync_core.nats_connection import NatsTarget
from tasks.kinds.registry import kind_for_key
from tasks.stores.id_mappings import MappingStore

NATS_CLIENT_NAME = "v1-sync-helper-undelete"


def forward_mapping_key(key: str) -> str | None:
    """The ``v1-mappings`` key that holds ``key``'s tombstone, or None for other keys."""
    kind, record_id = kind_for_key(key)
    return None if kind is None or not record_id else kind.undelete_key(record_id)


def find_tombstones(
    nats_url: NatsTarget | str, mappings_bucket: str, keys: Iterable[str]
) -> dict[str, bool]:
    """Whether each V1 key's V2 object is tombstoned (read only: ``--dry-run``)."""
    nats = SyncNats(nats_url, NATS_CLIENT_NAME, connector=open_nats)
    try:
        mappings = MappingStore(nats, mappings_bucket)
        found: dict[str, bool] = {}
        for key in dict.fromkeys(keys):
            mapping_key = forward_mapping_key(key)
            found[key] = mapping_key is not None and mappings.is_tombstoned(mapping_key)
        return found
    finally:
        nats.close()


def clear_tombstones(
    nats_url: NatsTarget | str, mappings_bucket: str, keys: Iterable[str]
) -> dict[str, bool]:
    """Remove the tombstone of each V1 key; key -> whether there was one to remove."""
    nats = SyncNats(nats_url, NATS_CLIENT_NAME, connector=open_nats)
    try:
        mappings = MappingStore(nats, mappings_bucket)
        cleared: dict[str, bool] = {}
        for key in dict.fromkeys(keys):
            mapping_key = forward_mapping_key(key)
            cleared[key] = mapping_key is not None and mappings.clear_tombstone(mapping_key)
        return cleared
    finally:
        nats.close()
