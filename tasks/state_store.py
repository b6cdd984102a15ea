"""The workers' side of the durable sync state (``sync_core.sync_state``), blocking calls.

Every write is a compare-and-set on the key's KV revision, so a worker's
terminal write, another worker's lease and a retry schedule never overwrite
each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import nats.errors
from nats.js.kv import KeyValue

from sync_core.nats_client import SyncNats
from sync_core.sync_state import (
    ParkedChild,
    PendingRun,
    RunState,
    SyncState,
    modify,
    parked_filter,
    parked_key,
    read_state,
)

# Listing the children of one parent ends when the watcher is idle this long.
LIST_IDLE_TIMEOUT = 5.0


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

    def finish(
        self, key: str, revision: int, outcome: str, at: float, uid: str | None, token: str | None
    ) -> tuple[SyncState, SyncState]:
        """Record a terminal outcome and drop the lease ``token`` held; (before, after)."""
        seen: list[SyncState] = []

        def change(state: SyncState) -> SyncState:
            seen[:] = [state]
            after = state.finished(revision, outcome, at, uid)
            if token is not None and after.lease is not None and after.lease.token == token:
                after = replace(after, lease=None)
            return after

        after = self.modify(key, change)
        return seen[0], after

    def set_pending(self, key: str, pending: PendingRun, token: str | None) -> SyncState:
        """Record an unfinished run (unless a newer revision finished already)."""

        def change(state: SyncState) -> SyncState | None:
            if state.settled(pending.revision):
                return None
            lease = state.lease
            if token is not None and lease is not None and lease.token == token:
                lease = None
            return replace(state, pending=pending, lease=lease)

        return self.modify(key, change)

    def add_parked(self, parent_key: str, child: ParkedChild) -> None:
        """Write the index entry: ``child`` waits for ``parent_key``."""
        self._nats.kv_put(self.bucket, parked_key(parent_key, child.key), child.to_bytes())

    def remove_parked(self, parent_key: str, child_key: str) -> None:
        """Drop the index entry of ``child_key`` under ``parent_key``."""
        kv = self._nats.kv(self.bucket)
        self._nats.run(kv.purge(parked_key(parent_key, child_key)))

    def parked_children(self, parent_key: str) -> list[ParkedChild]:
        """Every child waiting for ``parent_key`` (one filtered watch, values included)."""
        # The bucket handle first: looking it up inside the coroutine would block its own loop.
        kv = self._nats.kv(self.bucket)
        return self._nats.run(self._list_parked(kv, parent_key), timeout=LIST_IDLE_TIMEOUT * 3)

    async def _list_parked(self, kv: KeyValue, parent_key: str) -> list[ParkedChild]:
        # Short inactive threshold: one watch per mapped outcome must not leave a
        # consumer behind for nats-py's default 5 minutes (see ``tasks.deadletters``).
        watcher = await kv.watch(
            parked_filter(parent_key), ignore_deletes=True, inactive_threshold=LIST_IDLE_TIMEOUT
        )
        children: list[ParkedChild] = []
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=LIST_IDLE_TIMEOUT)
                except nats.errors.TimeoutError:
                    break
                if entry is None:
                    break
                try:
                    children.append(ParkedChild.from_bytes(bytes(entry.value or b"")))
                except ValueError:
                    continue
        finally:
            await watcher.stop()
        return children


def parked_pending(revision: int, parent_key: str, since: float) -> PendingRun:
    """The pending run of a child parked on ``parent_key``."""
    return PendingRun(RunState.PARKED, revision, since, parent_key=parent_key)


def retry_pending(revision: int, since: float, due: float) -> PendingRun:
    """The pending run of a retry due at ``due``."""
    return PendingRun(RunState.RETRY, revision, since, due=due)
