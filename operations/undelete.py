"""``requeue --undelete``: clear the tombstones of deleted V2 objects on purpose.

A delete that V2 accepted turns the object's forward mapping (the kind's
``sfid_prefix`` + sfid: ``project.sfid.{sfid}``, ``committee.sfid.{sfid}``,
``committee_member.sfid.{sfid}``) into the tombstone ``!del``; a later put of
the record is then skipped as ``tombstoned``. Removing the tombstone (only
when it still is one) lets the next sync create the object again, under a new
uid. The reverse mapping of the old uid stays ``!del``: that V2 object is gone.

Which mapping holds a key's tombstone is the object kind's own fact (the
kinds the task syncs, ``tasks.run.sync.KINDS``), so every type whose deletes
leave a tombstone can be undeleted, with no table of its own here.
"""

from __future__ import annotations

from collections.abc import Iterable

from sync_core.keys import parse_key
from sync_core.nats_client import SyncNats
from tasks.run.sync import KINDS
from tasks.stores.id_mappings import MappingStore

NATS_CLIENT_NAME = "v1-sync-helper-undelete"


def forward_mapping_key(key: str) -> str | None:
    """The ``v1-mappings`` key that holds ``key``'s tombstone, or None for other keys."""
    object_type, record_id = parse_key(key)
    kind = KINDS.get(object_type) if object_type is not None else None
    return None if kind is None or not record_id else kind.sfid_prefix + record_id


def clear_tombstones(nats_url: str, mappings_bucket: str, keys: Iterable[str]) -> dict[str, bool]:
    """Remove the tombstone of each V1 key; key -> whether there was one to remove."""
    nats = SyncNats(nats_url, NATS_CLIENT_NAME)
    try:
        mappings = MappingStore(nats, mappings_bucket)
        cleared: dict[str, bool] = {}
        for key in dict.fromkeys(keys):
            mapping_key = forward_mapping_key(key)
            cleared[key] = mapping_key is not None and mappings.clear_tombstone(mapping_key)
        return cleared
    finally:
        nats.close()
