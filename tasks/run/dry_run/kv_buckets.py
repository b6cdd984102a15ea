"""NATS KV for a dry run: bucket handles whose writes land in an overlay, not on the server.

Reads go to the server; writes (put, create, update, delete, purge) go into an
overlay that later reads of the same run see, with the compare-and-set rules
of JetStream. So every store on top (mappings, sync state and leases, parked
index, dead letters) runs its own code unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.errors import (
    InvalidKeyError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from sync_core.keys import is_valid_kv_key
from sync_core.nats_client import Connector, SyncNats, connect
from sync_core.nats_connection import NatsTarget
from sync_core.nats_kv import LeanKeyValue
from tasks.run.dry_run.write_log import RecordedWrite, WriteLog

KV_WILDCARD_ONE = "*"
KV_WILDCARD_REST = ">"


@dataclass(frozen=True)
class Overlaid:
    """A key's value as the dry run left it (``operation``: DEL or PURGE once deleted)."""

    value: bytes | None
    revision: int
    operation: str | None = None


class DryRunBucket(LeanKeyValue):
    """A bucket handle whose writes land in an overlay, not on the server.

    Only the primitives are replaced (``_get``, ``_update``, ``put``, ``delete``,
    ``purge``, ``has_any``): nats-py's ``get`` and ``create`` (the re-create of
    a deleted key) run on top of them as they do on the real handle.
    """

    def __init__(self, real: LeanKeyValue, overlay: dict[str, Overlaid], writes: WriteLog) -> None:
        # The real handle's reply inbox (our own LeanKeyValue's): reads share its subscription.
        super().__init__(real, real._inbox)
        self.real = real
        self._overlay = overlay
        self._writes = writes

    def __repr__(self) -> str:
        return f"DryRunBucket(bucket={self._name!r})"

    async def _get(self, key: str, revision: int | None = None) -> KeyValue.Entry:
        stored = self._overlay.get(key) if revision is None else None
        if stored is None:
            return await self.real._get(key, revision)
        entry = KeyValue.Entry(
            bucket=self._name,
            key=key,
            value=stored.value,
            revision=stored.revision,
            delta=None,
            created=None,
            operation=None,
        )
        if stored.operation is not None:
            raise KeyDeletedError(entry, stored.operation)
        return entry

    async def _current_revision(self, key: str) -> int:
        """The revision a compare-and-set on ``key`` must name (0: never written)."""
        try:
            return int((await self._get(key)).revision or 0)
        except KeyDeletedError as deleted:
            return int(deleted.entry.revision or 0)
        except KeyNotFoundError:
            return 0

    async def _record(
        self, key: str, action: str, value: bytes | None, operation: str | None = None
    ) -> int:
        revision = await self._current_revision(key) + 1
        self._overlay[key] = Overlaid(value, revision, operation)
        text = None if value is None else bytes(value).decode("utf-8", "replace")
        self._writes.add(RecordedWrite(f"kv:{self._name}", action, key, text))
        return revision

    async def put(self, key: str, value: bytes, validate_keys: bool = True) -> int:
        _check_key(key, validate_keys)
        return await self._record(key, "put", value)

    async def _update(
        self,
        key: str,
        value: bytes,
        last: int | None = None,
        validate_keys: bool = True,
        msg_ttl: float | None = None,
    ) -> int:
        _check_key(key, validate_keys)
        if (last or 0) != await self._current_revision(key):
            raise KeyWrongLastSequenceError(description="wrong last sequence (dry run)")
        return await self._record(key, "update" if await self._exists(key) else "create", value)

    async def _exists(self, key: str) -> bool:
        try:
            await self._get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return False
        return True

    async def delete(
        self,
        key: str,
        last: int | None = None,
        validate_keys: bool = True,
        msg_ttl: float | None = None,
    ) -> bool:
        _check_key(key, validate_keys)
        if last and last > 0 and last != await self._current_revision(key):
            raise KeyWrongLastSequenceError(description="wrong last sequence (dry run)")
        await self._record(key, "delete", None, "DEL")
        return True

    async def purge(self, key: str, msg_ttl: float | None = None) -> bool:
        await self._record(key, "purge", None, "PURGE")
        return True

    async def has_any(self, key_filter: str) -> bool:
        if any(_matches(key_filter, key) for key in self._overlay):
            return True
        return await self.real.has_any(key_filter)


def _check_key(key: str, validate: bool) -> None:
    """Refuse a key the server would refuse, as nats-py does."""
    if validate and not is_valid_kv_key(key):
        raise InvalidKeyError(key)


def _matches(key_filter: str, key: str) -> bool:
    """Whether ``key`` matches the subject filter ``key_filter`` (``*`` and ``>``)."""
    wanted, tokens = key_filter.split("."), key.split(".")
    for index, token in enumerate(wanted):
        if token == KV_WILDCARD_REST:
            return len(tokens) > index
        if index >= len(tokens) or (token != KV_WILDCARD_ONE and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


class DryRunNats(SyncNats):
    """A ``SyncNats`` whose bucket handles are ``DryRunBucket``s (requests pass through)."""

    def __init__(
        self,
        url: NatsTarget | str,
        name: str,
        writes: WriteLog,
        connector: Connector = connect,
    ) -> None:
        self.writes = writes
        self._overlays: dict[str, dict[str, Overlaid]] = {}
        self._dry: dict[str, DryRunBucket] = {}
        super().__init__(url, name, connector)

    def kv(self, bucket: str) -> LeanKeyValue:
        real = super().kv(bucket)
        dry = self._dry.get(bucket)
        if dry is None or dry.real is not real:
            dry = DryRunBucket(real, self._overlays.setdefault(bucket, {}), self.writes)
            self._dry[bucket] = dry
        return dry

    def overlay(self, bucket: str) -> dict[str, Overlaid]:
        """What the run left in ``bucket``: key -> its value after the run."""
        return dict(self._overlays.get(bucket, {}))

    def stored(self, bucket: str, key: str) -> bytes | None:
        """The value the server holds for ``key`` (None: absent or deleted)."""
        dry = self.kv(bucket)
        assert isinstance(dry, DryRunBucket)
        try:
            entry = self.run(dry.real.get(key))
        except KeyNotFoundError:
            return None
        return None if entry.value is None else bytes(entry.value)

    def forget_writes(self) -> None:
        """Start a new run: the overlay of the previous one is dropped."""
        for overlay in self._overlays.values():
            overlay.clear()
