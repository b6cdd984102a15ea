"""``requeue --undelete``: clear the tombstones of deleted V2 objects on purpose.

A delete that V2 accepted turns the object's forward mapping (``project.sfid.{sfid}``,
``committee.sfid.{sfid}``) into the tombstone ``!del``; a later put of the
record is then skipped as ``tombstoned``. Removing the tombstone (only when it
still is one) lets the next sync create the object again, under a new uid.
The reverse mapping of the old uid stays ``!del``: that V2 object is gone.
"""

from __future__ import annotations

from collections.abc import Iterable

from operations.current_keys import open_nats
from sync_core.keys import ObjectType, parse_key
from sync_core.nats_client import SyncNats
from sync_core.nats_connection import NatsTarget
from tasks.stores.id_mappings import COMMITTEE_SFID, PROJECT_SFID, MappingStore

NATS_CLIENT_NAME = "v1-sync-helper-undelete"
# The forward mapping of each object type whose deletes leave a tombstone.
FORWARD_PREFIXES = {ObjectType.PROJECT: PROJECT_SFID, ObjectType.COMMITTEE: COMMITTEE_SFID}


def forward_mapping_key(key: str) -> str | None:
    """The ``v1-mappings`` key that holds ``key``'s tombstone, or None for other keys."""
    object_type, record_id = parse_key(key)
    prefix = FORWARD_PREFIXES.get(object_type) if object_type is not None else None
    return None if prefix is None else prefix + record_id


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
