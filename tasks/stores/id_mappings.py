"""The V1 to V2 id mappings in the KV bucket ``v1-mappings``.

Keys and values are plain UTF-8 text:

- ``project.sfid.{sfid}`` -> project uid, ``project.slug.{slug}`` -> project uid,
  ``project.uid.{uid}`` -> sfid;
- ``committee.sfid.{sfid}`` -> committee uid, ``committee.uid.{uid}`` -> sfid;
- ``committee_member.sfid.{sfid}`` -> ``{committee_uid}:{member_uid}`` (a member
  lives under its committee, so both are needed to address it),
  ``committee_member.uid.{member_uid}`` -> sfid.

After a delete V2 accepted, the forward and reverse mappings hold the
tombstone ``!del``: "deleted on purpose", which is not the same as absent
("never synced"). ``get`` and the typed lookups read a tombstone as no
mapping (nothing may point at a deleted object); ``read`` shows it.

Nothing is cached across runs: another worker may write a mapping at any
moment (a parent created after its child's first attempt). Within one run,
``remembering(key)`` reads the run's own forward mapping once and answers
later reads of that key from memory: only a run holding the key's lease
writes it, this run's own writes update the remembered value, and a write
of the value a remembered key holds already is skipped (an update's unchanged
forward mapping costs no round trip).

Every key is checked before it is used (``sync_core.keys.check_kv_key``):
ids are validated at the edge (``tasks.mapping.record_ids``), so a key that still fails
(a V2 uid outside the KV alphabet, say) is a ``PermanentError``
``invalid_mapping_key``, never a write that would make the server drop the
connection.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from nats.js.errors import APIError

from sync_core.keys import InvalidKVKey, check_kv_key
from sync_core.mapping_keys import (
    COMMITTEE_SFID,
    COMMITTEE_UID,
    MEMBER_PLACE_SEPARATOR,
    MEMBER_SFID,
    MEMBER_UID,
    PROJECT_SFID,
    PROJECT_SLUG,
    PROJECT_UID,
    TOMBSTONE,
)
from sync_core.nats_client import SyncNats
from tasks.errors import PermanentError
from tasks.stores.leases import check_write_allowed

# The mappings the current run remembers: key -> raw value (None: absent).
_remembered: contextvars.ContextVar[dict[str, str | None] | None] = contextvars.ContextVar(
    "v1sync_remembered_mappings", default=None
)


class MappingStore:
    """Read and write the mappings through the process's NATS facade.

    Parameters:
        nats: the blocking NATS client.
        bucket: the mappings bucket (``V1_MAPPINGS_BUCKET``).
    """

    def __init__(self, nats: SyncNats, bucket: str) -> None:
        self._nats = nats
        self.bucket = bucket

    def __repr__(self) -> str:
        return f"MappingStore(bucket={self.bucket!r})"

    @contextmanager
    def remembering(self, key: str, stored: Any = None, read: bool = False) -> Iterator[None]:
        """Within the block, ``key`` is read once and answered from memory (see the module).

        Only for a key no other run writes meanwhile: the run's own mapping under its lease.
        ``read``: the caller read it already, under the lease; ``stored`` is that
        KV entry (None when absent).
        """
        known = dict(_remembered.get() or {})
        known[key] = mapping_text(stored) if read else self._read_stored(key)
        token = _remembered.set(known)
        try:
            yield
        finally:
            _remembered.reset(token)

    def read(self, key: str) -> str | None:
        """The mapping's raw value (the tombstone included), or None when absent or empty."""
        known = _remembered.get()
        if known is not None and key in known:
            return known[key]
        return self._read_stored(key)

    def _read_stored(self, key: str) -> str | None:
        _check_keys([key])
        return mapping_text(self._nats.kv_get(self.bucket, key))

    def get(self, key: str) -> str | None:
        """The mapping's value, or None when absent, deleted, empty or tombstoned."""
        value = self.read(key)
        return None if value == TOMBSTONE else value

    def is_tombstoned(self, key: str) -> bool:
        """Whether ``key`` holds the tombstone (the object was deleted on purpose)."""
        return self.read(key) == TOMBSTONE

    def tombstone(self, keys: list[str]) -> None:
        """Write the tombstone into every one of ``keys`` (one round trip)."""
        self.put_many(dict.fromkeys(keys, TOMBSTONE))

    def clear_tombstone(self, key: str) -> bool:
        """Remove ``key`` when it holds the tombstone (and only then); True when removed."""
        _check_keys([key])
        kv = self._nats.kv(self.bucket)
        entry = self._nats.kv_get(self.bucket, key)
        if entry is None or bytes(entry.value or b"").decode("utf-8").strip() != TOMBSTONE:
            return False

        async def delete_if_unchanged() -> None:
            # ``last``: a mapping rewritten meanwhile (a re-create) is left alone.
            await kv.delete(key, last=entry.revision)

        try:
            self._nats.run(delete_if_unchanged())
        except APIError:  # KeyWrongLastSequenceError: rewritten since we read it
            _forget(key)
            return False
        _note({key: None})
        return True

    def put(self, key: str, value: str) -> None:
        """Write one mapping (last write wins), only while the run's lease holds."""
        _check_keys([key])
        check_write_allowed()
        try:
            self._nats.kv_put(self.bucket, key, value.encode("utf-8"))
        finally:
            _forget(key)
        _note({key: value})

    def put_many(self, values: dict[str, str]) -> None:
        """Write several mappings in one round trip (concurrently, so in no set order).

        Nothing is written when one of the keys is invalid, or without the run's lease.
        A remembered key that holds its value already is not written again.
        """
        _check_keys(values)
        check_write_allowed()
        known = _remembered.get() or {}
        values = {
            key: value
            for key, value in values.items()
            if key not in known or known[key] != ((value or "").strip() or None)
        }
        if not values:
            return
        kv = self._nats.kv(self.bucket)

        async def put_all() -> None:
            await asyncio.gather(
                *(kv.put(key, value.encode("utf-8")) for key, value in values.items())
            )

        try:
            self._nats.run(put_all())
        finally:
            # Some may have been written even when one failed: read them again.
            for key in values:
                _forget(key)
        _note(values)

    def project_uid(self, sfid: str) -> str | None:
        """The V2 uid of the project with V1 ``sfid``."""
        return self.get(PROJECT_SFID + sfid)

    def project_sfid(self, uid: str) -> str | None:
        """The V1 sfid of the V2 project ``uid``."""
        return self.get(PROJECT_UID + uid)

    def project_uid_by_slug(self, slug: str) -> str | None:
        """The V2 uid recorded for ``slug``."""
        return self.get(PROJECT_SLUG + slug)

    def record_project(self, sfid: str, slug: str | None, uid: str) -> None:
        """Write the three project mappings in one round trip."""
        values = {PROJECT_UID + uid: sfid, PROJECT_SFID + sfid: uid}
        if slug:
            values[PROJECT_SLUG + slug] = uid
        self.put_many(values)

    def committee_uid(self, sfid: str) -> str | None:
        """The V2 uid of the committee with V1 ``sfid``."""
        return self.get(COMMITTEE_SFID + sfid)

    def committee_sfid(self, uid: str) -> str | None:
        """The V1 sfid of the V2 committee ``uid``."""
        return self.get(COMMITTEE_UID + uid)

    def record_committee(self, sfid: str, uid: str) -> None:
        """Write both committee mappings in one round trip."""
        self.put_many({COMMITTEE_UID + uid: sfid, COMMITTEE_SFID + sfid: uid})

    def member_place(self, sfid: str) -> tuple[str, str] | None:
        """``(committee_uid, member_uid)`` of the member with V1 ``sfid``, or None.

        A value that is not ``{committee_uid}:{member_uid}`` reads as no mapping.
        """
        value = self.get(MEMBER_SFID + sfid)
        if value is None:
            return None
        committee_uid, separator, member_uid = value.partition(MEMBER_PLACE_SEPARATOR)
        if not separator or not committee_uid or not member_uid:
            return None
        return committee_uid, member_uid

    def member_sfid(self, member_uid: str) -> str | None:
        """The V1 sfid of the V2 committee member ``member_uid``."""
        return self.get(MEMBER_UID + member_uid)

    def record_member(self, sfid: str, committee_uid: str, member_uid: str) -> None:
        """Write both member mappings in one round trip."""
        self.put_many(
            {
                MEMBER_UID + member_uid: sfid,
                MEMBER_SFID + sfid: f"{committee_uid}{MEMBER_PLACE_SEPARATOR}{member_uid}",
            }
        )

    def record_member_move(
        self, sfid: str, committee_uid: str, member_uid: str, old_sfid: str
    ) -> None:
        """A member moved to another committee in V1 as a new row: one round trip.

        ``member_uid`` now maps to the new row ``sfid`` (in ``committee_uid``),
        and the old row's forward mapping becomes the tombstone, so its V1
        delete coming back is ``already_deleted`` to the forward path (the V2
        member lives on) and a loader re-emitting the old row re-creates nothing.
        """
        self.put_many(
            {
                MEMBER_UID + member_uid: sfid,
                MEMBER_SFID + sfid: f"{committee_uid}{MEMBER_PLACE_SEPARATOR}{member_uid}",
                MEMBER_SFID + old_sfid: TOMBSTONE,
            }
        )


def mapping_text(entry: Any) -> str | None:
    """A mapping entry's value (the tombstone included); None when absent or empty."""
    if entry is None or not entry.value:
        return None
    text = bytes(entry.value).decode("utf-8").strip()
    return text or None


def _note(values: Mapping[str, str | None]) -> None:
    """This run wrote ``values``: remembered keys among them now hold these."""
    known = _remembered.get()
    if known is not None:
        for key, value in values.items():
            if key in known:
                known[key] = (value or "").strip() or None


def _forget(key: str) -> None:
    """Read ``key`` from the bucket again (its value is not known for sure)."""
    known = _remembered.get()
    if known is not None:
        known.pop(key, None)


def _check_keys(keys: Iterable[str]) -> None:
    """``PermanentError(invalid_mapping_key)`` when one of ``keys`` is not a KV key."""
    for key in keys:
        try:
            check_kv_key(key)
        except InvalidKVKey as error:
            raise PermanentError(f"mapping {error}", kind="invalid_mapping_key") from None
