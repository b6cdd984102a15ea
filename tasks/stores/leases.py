"""The per-key lease, so two workers never sync one V1 key at once.

The lease lives in the key's durable sync state (``v1-sync-state``): a random
token and an expiry a few seconds ahead, taken and renewed with
compare-and-set. While the run lives, a background thread renews it every
``LEASE_RENEW_SECONDS``; a SIGKILLed worker stops renewing, and its key is
free again ``LEASE_TTL_SECONDS`` later (not after the task's hard time limit).

A run that may have lost its lease must not write: ``check_write_allowed()``
is called before every V2 write and every mapping write (``tasks.clients.v2``,
``tasks.stores.id_mappings``) and raises ``LeaseLost`` (transient: the run retries)
once the lease is not known to be held. "Known to be held" is judged locally:
until the expiry the last successful renewal wrote, minus a safety margin for
clock differences between pods, so the check costs no round trip.

Renewals of every lease of the process are scheduled by one daemon thread
(``LeaseRenewals``) and run on a few pool threads: most runs end long before
their first renewal, and a thread of their own cost each run a thread start
and join (~0.15 ms of CPU, a few percent of a run).
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import TracebackType
from typing import Any

from sync_core.sync_state import KeyLease as LeaseRecord
from sync_core.sync_state import SyncState
from tasks.errors import TransientError
from tasks.stores.sync_state import NOT_READ, StateStore

log = logging.getLogger(__name__)

LEASE_TTL_SECONDS = 6.0
LEASE_RENEW_SECONDS = 2.0
# A write needs at least this much lease left: covers a slow call and clock skew.
LEASE_SAFETY_MARGIN_SECONDS = 1.5
# Renewals run concurrently on this many threads: a slow one never holds up the others.
RENEWAL_THREADS = 4

_current: contextvars.ContextVar[KeyLock | None] = contextvars.ContextVar(
    "v1sync_key_lease", default=None
)


class LeaseLost(TransientError):
    """The run can no longer be sure it holds its key: it must not write."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the lease on {key} was lost; not writing", kind="lease_lost")


def check_write_allowed() -> None:
    """Raise ``LeaseLost`` when the current run's lease is not known to be held.

    Outside a run (operator tools, tests of the clients) there is no lease and
    nothing to check.
    """
    lease = _current.get()
    if lease is not None:
        lease.check()


class KeyLock:
    """The lease of one V1 key for one run.

    Parameters:
        store: the sync state store.
        key: the V1 key.
        ttl: seconds a lease lives without renewal.
        renew_every: seconds between renewals.
        clock: wall-clock time (the lease is compared across processes).

    ``acquire()`` takes it (False when another live run holds it); ``with
    lock:`` after that renews it in the background, makes it the run's write
    guard, and releases it on the way out.
    """

    def __init__(
        self,
        store: StateStore,
        key: str,
        ttl: float = LEASE_TTL_SECONDS,
        renew_every: float = LEASE_RENEW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.key = key
        self.ttl = ttl
        self.renew_every = renew_every
        # Short test leases get a proportionate margin.
        self.margin = min(LEASE_SAFETY_MARGIN_SECONDS, ttl / 4)
        self._clock = clock
        self.token = secrets.token_hex(12)
        self.held = False
        self.lost = False
        self.state: SyncState = SyncState(key)
        # The entry ``acquire(read=…)`` read alongside the state (None: absent or not read).
        self.entry: Any = None
        # The entry ``acquire(then_read=…)`` read once the lease was taken (or ``NOT_READ``).
        self.then_entry: Any = NOT_READ
        self.refused = False
        # The KV revision of ``state``, as last read or written by this lease.
        self.revision = 0
        self._valid_until = 0.0
        self._stop = threading.Event()
        self._guard: contextvars.Token[KeyLock | None] | None = None

    def __repr__(self) -> str:
        return f"KeyLock(key={self.key!r}, held={self.held})"

    def acquire(
        self,
        read: str | None = None,
        wanted: Callable[[SyncState, Any], bool] | None = None,
        then_read: tuple[str, str] | None = None,
    ) -> bool:
        """Take the lease if no live run holds it; True when we hold it now.

        ``read``: a bucket whose entry of the same key is read in the same
        round trip as the state (``StateStore.modify_reading``), kept as
        ``entry``: the value the run syncs, never older than the state the
        lease was taken on. ``wanted(state, entry)`` False leaves the lease
        untaken (a duplicate or superseded run needs none); ``refused`` tells
        that case from a lease another run holds. ``then_read`` (bucket, key):
        an entry read in the same round trip right after the lease was taken,
        kept as ``then_entry`` (``NOT_READ`` when the lease was not taken).
        """
        started = self._clock()
        self.refused = False

        def take(state: SyncState, entry: Any = None) -> SyncState | None:
            self.refused = (
                state.lease_live(self._clock())
                and state.lease is not None
                and (state.lease.token != self.token)
            )
            if self.refused or (wanted is not None and not wanted(state, entry)):
                return None
            return replace(state, lease=LeaseRecord(self.token, self._clock() + self.ttl))

        if read is None:
            state, revision = self._store.modify_versioned(self.key, take)
        else:
            (state, revision), self.entry, self.then_entry = self._store.modify_reading(
                self.key, take, read, self.key, then_read
            )
        self.state, self.revision = state, revision
        if self.refused or state.lease is None or state.lease.token != self.token:
            return False
        self.held = True
        self._valid_until = started + self.ttl
        return True

    def renew(self) -> bool:
        """Extend the lease once; False (and ``lost``) when another run took it over."""
        started = self._clock()
        taken_over = False

        def extend(state: SyncState) -> SyncState | None:
            nonlocal taken_over
            taken_over = state.lease is None or state.lease.token != self.token
            if taken_over:
                return None
            return replace(state, lease=LeaseRecord(self.token, self._clock() + self.ttl))

        state, revision = self._store.modify_versioned(self.key, extend)
        if not taken_over:
            self.state, self.revision = state, revision
        if taken_over:
            self.lost = True
            log.warning("key lease taken over by another run", extra={"key": self.key})
            return False
        self._valid_until = started + self.ttl
        return True

    def valid(self) -> bool:
        """Whether the lease is known to be ours for at least the safety margin."""
        return self.held and not self.lost and self._clock() + self.margin < self._valid_until

    def check(self) -> None:
        """Raise ``LeaseLost`` unless ``valid()``."""
        if not self.valid():
            raise LeaseLost(self.key)

    def known(self) -> tuple[SyncState, int] | None:
        """The state and revision this lease last wrote, while held (to save a read)."""
        return (self.state, self.revision) if self.held else None

    def forget(self) -> None:
        """The terminal state write dropped the lease already: nothing left to release."""
        self.held = False
        self._stop.set()

    def release(self) -> None:
        """Stop renewing and drop the lease if it is still ours."""
        self._stop.set()
        if not self.held:
            return
        self.held = False

        def drop(state: SyncState) -> SyncState | None:
            if state.lease is None or state.lease.token != self.token:
                return None
            return replace(state, lease=None)

        self._store.modify(self.key, drop)

    @property
    def stopped(self) -> bool:
        """Whether the run is over (no more renewals)."""
        return self._stop.is_set()

    def renew_scheduled(self) -> bool:
        """One scheduled renewal; True when the next one should follow."""
        if self.stopped:
            return False
        try:
            return self.renew() and not self.stopped
        except Exception:
            # NATS away: ``valid()`` runs out on its own and writes stop; keep trying.
            log.warning("key lease renewal failed", extra={"key": self.key}, exc_info=True)
            return True

    def __enter__(self) -> KeyLock:
        self._guard = _current.set(self)
        RENEWALS.schedule(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._guard is not None:
            _current.reset(self._guard)
            self._guard = None
        self._stop.set()


class LeaseRenewals:
    """Renews every held lease of the process every ``renew_every`` seconds.

    One daemon thread keeps the due times in a heap and hands each renewal to
    a small pool; a lease whose run ended (``stopped``) is dropped when due.
    Started on first use, and again in a forked child (threads do not survive
    a fork).
    """

    def __init__(self, threads: int = RENEWAL_THREADS) -> None:
        self._threads = threads
        self._due: list[tuple[float, int, KeyLock]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._pool: ThreadPoolExecutor | None = None
        os.register_at_fork(after_in_child=self._restart)

    def schedule(self, lease: KeyLock) -> None:
        """Renew ``lease`` one ``renew_every`` from now (and on, until it stops)."""
        with self._wake:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="lease-renewal")
                threading.Thread(target=self._run, name="lease-renewals", daemon=True).start()
            entry = (time.monotonic() + lease.renew_every, next(self._order), lease)
            heapq.heappush(self._due, entry)
            if self._due[0] is entry:
                self._wake.notify()

    def _restart(self) -> None:
        # A forked child inherits the parent's heap and lock, but none of its threads.
        self._due, self._wake, self._pool = [], threading.Condition(), None

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._wake.wait(timeout)
                _, _, lease = heapq.heappop(self._due)
                pool = self._pool
            if not lease.stopped and pool is not None:
                pool.submit(self._renew, lease)

    def _renew(self, lease: KeyLock) -> None:
        if lease.renew_scheduled():
            self.schedule(lease)


RENEWALS = LeaseRenewals()
