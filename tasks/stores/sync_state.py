"""The workers' side of the durable sync state (``sync_core.sync_state``), blocking calls.

Every write is a compare-and-set on the key's KV revision, so a worker's
terminal write, another worker's lease and a retry schedule never overwrite
each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from sync_core.keys import check_kv_key
from sync_core.nats_client import SyncNats
from sync_core.nats_kv import LeanKeyValue
from sync_core.sync_state import (
    CAS_ATTEMPTS,
    ConcurrentUpdate,
    ParkedChild,
    PendingRun,
    RunState,
    SyncState,
    Terminal,
    modify,
    parked_filter,
    parked_key,
    read_state,
)

# A listing of parked children: one stream-info request and a read per child.
LIST_TIMEOUT = 15.0
# A sync state and the KV revision it was read or written at.
Versioned = tuple[SyncState, int]
# ``modify_reading``'s answer for a ``then_read`` entry it did not read.
NOT_READ: Any = object()
# How nats-py names a KV bucket's stream and subjects.
KV_STREAM_PREFIX = "KV_"
KV_SUBJECT_PREFIX = "$KV."


class StateStore:
    """Read and write sync states in the bucket ``SYNC_STATE_BUCKET``.

    Parameters:
        nats: the process's blocking NATS client.
        bucket: the sync state bucket.
    """

    def __init__(self, nats: SyncNats, bucket: str) -> None:
        self._nats = nats
        self.bucket = bucket

    def __repr__(self) -> str:
        return f"StateStore(bucket={self.bucket!r})"

    def get(self, key: str) -> SyncState:
        """The key's state (a fresh one when the key has none)."""
        state, _ = self._nats.run(read_state(self._nats.kv(self.bucket), key))
        return state

    def modify(self, key: str, change: Callable[[SyncState], SyncState | None]) -> SyncState:
        """Compare-and-set ``change`` onto the key's state (see ``sync_state.modify``)."""
        return self._nats.run(modify(self._nats.kv(self.bucket), key, change))

    def modify_versioned(
        self,
        key: str,
        change: Callable[[SyncState], SyncState | None],
        known: Versioned | None = None,
    ) -> Versioned:
        """``modify`` returning the KV revision too; ``known`` saves the first read.

        ``known`` is a state and revision this process wrote or read (a run's
        lease): the first compare-and-set is conditioned on it, and only when
        the state changed since is it read again.
        """
        kv = self._nats.kv(self.bucket)
        return self._nats.run(_modify_versioned(kv, key, change, known))

    def modify_reading(
        self,
        key: str,
        change: Callable[[SyncState, Any], SyncState | None],
        bucket: str,
        entry_key: str,
        then_read: tuple[str, str] | None = None,
    ) -> tuple[Versioned, Any, Any]:
        """``modify`` whose ``change`` also sees the current entry of ``entry_key`` in ``bucket``.

        Each try reads the state and the entry in one round trip (concurrently),
        so the entry is never older than the state revision the compare-and-set
        is conditioned on: a run that takes the key's lease with it has read
        the value after any run that held the lease before. ``change`` gets the
        entry (None when absent or deleted). ``then_read`` (bucket, key): an
        entry read in the same call once the state was written (a run's own
        mapping, read under the lease it just took). Returns (the state written
        or as read with its KV revision, the entry, the ``then_read`` entry or
        ``NOT_READ`` when nothing was written or nothing asked).
        """
        check_kv_key(entry_key)
        state_kv = self._nats.kv(self.bucket)
        entry_kv = self._nats.kv(bucket)
        after_kv = None
        if then_read is not None:
            check_kv_key(then_read[1])
            after_kv = self._nats.kv(then_read[0])

        async def modify_then_read() -> tuple[Versioned, Any, Any]:
            versioned, entry, written = await _modify_reading(
                state_kv, key, change, entry_kv, entry_key
            )
            if after_kv is None or then_read is None or not written:
                return versioned, entry, NOT_READ
            return versioned, entry, await _entry_or_none(after_kv, then_read[1])

        return self._nats.run(modify_then_read())

    def finish(
        self,
        key: str,
        revision: int,
        outcome: str,
        at: float,
        uid: str | None,
        token: str | None,
        known: Versioned | None = None,
        probe_parked: str | None = None,
        *,
        epoch: int,
        fingerprint: str | None = None,
    ) -> tuple[SyncState, SyncState, bool]:
        """Record a terminal outcome and drop the lease ``token`` held; (before, after, parked).

        ``epoch``: the life of ``v1-objects`` ``revision`` belongs to.
        ``known``: see ``modify_versioned``. ``probe_parked``: a parent key
        whose parked children the caller will release; whether any index entry
        exists under it is asked in the same round trip (``parked`` is False
        when not asked). ``fingerprint``: the V1-relevant content written
        (``SyncState.fingerprint``), stored in the same write.
        """
        seen: list[SyncState] = []

        def change(state: SyncState) -> SyncState:
            seen[:] = [state]
            after = state.finished(revision, outcome, at, uid, epoch=epoch)
            if fingerprint is not None:
                after = replace(after, fingerprint=fingerprint)
            if (
                after.intent is not None
                and after.intent <= revision
                and outcome != Terminal.DEAD_LETTERED
            ):
                # The V1 create the intent announced has its answer recorded (V2 -> V1).
                after = replace(after, intent=None, intent_at=None)
            if token is not None and after.lease is not None and after.lease.token == token:
                after = replace(after, lease=None)
            return after

        kv = self._nats.kv(self.bucket)

        async def both() -> tuple[Versioned, bool]:
            if probe_parked is None:
                return await _modify_versioned(kv, key, change, known), False
            return await asyncio.gather(
                _modify_versioned(kv, key, change, known), self._any_parked(kv, probe_parked)
            )

        (after, _), parked = self._nats.run(both())
        return seen[0], after, parked

    def set_pending(
        self, key: str, pending: PendingRun, token: str | None, *, epoch: int
    ) -> SyncState:
        """Record an unfinished run of life ``epoch`` (unless a newer revision finished already).

        A state of another life of ``v1-objects`` moves to this one (``in_life``).
        """

        def change(stored: SyncState) -> SyncState | None:
            state = stored.in_life(epoch)
            lease = state.lease
            if token is not None and lease is not None and lease.token == token:
                lease = None
            if state.settled(pending.revision):
                # A forced re-run of a settled revision (a re-queued dead letter) that
                # retries or parks: nothing to record, but its lease must not linger
                # until it expires.
                unchanged = lease is state.lease and state is stored
                return None if unchanged else replace(state, lease=lease)
            return replace(state, pending=pending, lease=lease)

        return self.modify(key, change)

    def add_parked(self, parent_key: str, child: ParkedChild) -> None:
        """Write the index entry: ``child`` waits for ``parent_key``."""
        self._nats.kv_put(self.bucket, parked_key(parent_key, child.key), child.to_bytes())

    def remove_parked(self, parent_key: str, child_key: str) -> None:
        """Drop the index entry of ``child_key`` under ``parent_key``."""
        kv = self._nats.kv(self.bucket)
        self._nats.run(kv.purge(parked_key(parent_key, child_key)))

    def parked_children(self, parent_key: str, probe: bool = True) -> list[ParkedChild]:
        """Every child waiting for ``parent_key``.

        One stream-info request lists the index keys (no consumer is created),
        then each child's entry is read. This runs after every successful sync
        and nearly all find nothing, so a cheaper probe goes first: one
        ``next_by_subj`` message lookup asks whether any index entry (or the
        delete marker of a removed one) exists under the parent at all.
        ``probe=False``: the caller asked already (``finish(probe_parked=…)``).
        """
        # The bucket handle first: looking it up inside the coroutine would block its own loop.
        kv = self._nats.kv(self.bucket)
        if probe and not self._nats.run(self._any_parked(kv, parent_key)):
            return []
        return self._nats.run(self._list_parked(kv, parent_key), timeout=LIST_TIMEOUT)

    @staticmethod
    async def _any_parked(kv: LeanKeyValue, parent_key: str) -> bool:
        return await kv.has_any(parked_filter(parent_key))

    async def _list_parked(self, kv: KeyValue, parent_key: str) -> list[ParkedChild]:
        subject_prefix = f"{KV_SUBJECT_PREFIX}{self.bucket}."
        info = await self._nats.js.stream_info(
            f"{KV_STREAM_PREFIX}{self.bucket}",
            subjects_filter=subject_prefix + parked_filter(parent_key),
        )
        children: list[ParkedChild] = []
        for subject in sorted(info.state.subjects or {}):
            try:
                entry = await kv.get(subject[len(subject_prefix) :])
            except KeyNotFoundError:
                continue  # released already: a delete marker keeps the subject listed
            try:
                children.append(ParkedChild.from_bytes(bytes(entry.value or b"")))
            except ValueError:
                continue
        return children


async def _entry_or_none(kv: KeyValue, key: str) -> Any:
    try:
        return await kv.get(key)
    except KeyNotFoundError:
        return None


async def _write_state(kv: KeyValue, key: str, state: SyncState, revision: int) -> int | None:
    """Compare-and-set ``state`` over KV revision ``revision``; the new revision, None if lost."""
    try:
        if revision == 0:
            return int(await kv.create(key, state.to_bytes()))
        return int(await kv.update(key, state.to_bytes(), last=revision))
    except KeyWrongLastSequenceError:
        return None


async def _modify_versioned(
    kv: KeyValue,
    key: str,
    change: Callable[[SyncState], SyncState | None],
    known: Versioned | None,
) -> Versioned:
    """``sync_state.modify`` with revisions, starting from ``known`` (see ``modify_versioned``)."""
    for attempt in range(CAS_ATTEMPTS):
        state, revision = known if attempt == 0 and known is not None else await read_state(kv, key)
        updated = change(state)
        if updated is None or updated == state:
            if attempt == 0 and known is not None:
                # Nothing to write judged on a remembered state: judge the stored one.
                continue
            return state, revision
        written = await _write_state(kv, key, updated, revision)
        if written is not None:
            return updated, written
    raise ConcurrentUpdate(f"sync state of {key!r} changed under {CAS_ATTEMPTS} writes in a row")


async def _modify_reading(
    state_kv: KeyValue,
    key: str,
    change: Callable[[SyncState, Any], SyncState | None],
    entry_kv: KeyValue,
    entry_key: str,
) -> tuple[Versioned, Any, bool]:
    """``sync_state.modify`` with another entry read alongside the state
    (``modify_reading``); the last item says whether the state was written."""
    for _ in range(CAS_ATTEMPTS):
        (state, revision), entry = await asyncio.gather(
            read_state(state_kv, key), _entry_or_none(entry_kv, entry_key)
        )
        updated = change(state, entry)
        if updated is None or updated == state:
            return (state, revision), entry, False
        written = await _write_state(state_kv, key, updated, revision)
        if written is not None:
            return (updated, written), entry, True
    raise ConcurrentUpdate(f"sync state of {key!r} changed under {CAS_ATTEMPTS} writes in a row")


def parked_pending(revision: int, parent_key: str, since: float, attempt: int = 0) -> PendingRun:
    """The pending run of a child parked on ``parent_key`` (``attempt``: budget spent so far)."""
    return PendingRun(RunState.PARKED, revision, since, parent_key=parent_key, attempt=attempt)


def retry_pending(revision: int, since: float, due: float, attempt: int = 0) -> PendingRun:
    """The pending run of a retry due at ``due``, to run as try ``attempt``."""
    return PendingRun(RunState.RETRY, revision, since, due=due, attempt=attempt)
