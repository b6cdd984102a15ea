"""The reconciler: the level-triggered half of the pipeline, inside the bridge process.

The bridge turns each KV change into a task (edge-triggered); Celery on Redis
can lose such a task (an emptied or failed-over broker, a worker killed with
prefetched messages). Every ``RECONCILE_INTERVAL`` the reconciler compares the
latest revision of every key of ``v1-objects`` (our three prefixes) with the
durable sync state in ``v1-sync-state`` and enqueues, through the bridge's own
encoder and publisher in one pipelined batch, the keys that are behind for
longer than ``RECONCILE_GRACE``. It leaves alone:

- keys in flight: a live key lease (a run holds it), or a retry scheduled and
  not overdue (its due time plus the grace has not passed);
- keys settled at their latest revision (synced, skipped, or dead-lettered at
  that revision);
- revisions the bridges have not acked yet (above the consumer's ack floor):
  those are still on their way through JetStream;
- revisions at or above the one of the oldest task still waiting in the Celery
  queue (the queue floor): the bridge pushes in stream order, so those may
  still be queued, however long a backlog takes to drain;
- parked children, unless their parent's mapping exists now (the release was
  lost to a crash) or they have waited ``SYNC_PARENT_WAIT`` (the run then
  dead-letters them);
- a key it re-enqueued less than one grace period ago.

Revisions are compared within one life of ``v1-objects`` only
(``sync_core.epochs``): a sweep reads the bucket's epoch (one stream-info
request) and a state entry of another life, or of none (written before
epochs), counts as a key never synced, so a rebuilt bucket has every key of
its new life re-driven; tasks carry the epoch. A key settled in the state
whose forward mapping is gone (``v1-mappings`` emptied or rebuilt) is not
settled either: it is re-driven with ``force`` (its revision looks synced),
and the run finds its V2 object again through the 409 adoption paths. Reading
every mapping each sweep would double a sweep's cost, so the mappings are
listed only when ``v1-mappings`` may have lost entries since the last sweep:
its epoch changed, or it holds fewer messages (with history 1 a KV bucket's
message count never falls in normal use), or the last sweep still found keys
without a mapping (the signal, ``sync_core.epochs.BucketLife``, is kept in the
sweep summary, so a restarted bridge compares with the sweep before it).

With ``SYNC_V2_TO_V1`` on, the sweeps also re-drive the V2 objects of the
V2 -> V1 direction (``v2.{object_type}.{uid}`` states in ``v1-sync-state``):
a retry recorded as pending and overdue by the grace, or a parked run whose
parent is mapped now or whose wait is over, gets its ``sync_v2_event`` task
for the pending stream sequence again (``plan_reverse``). An event whose first
task was lost before it ran leaves no state: the sweeps read the V2 events
stream on from the last sequence a sweep checked (``lost_v2_events``, the
sequence kept in the sweep summary), so each event is read about once, and
re-drive an object whose latest acked event is older than the grace and
neither settled nor pending in its state.

It respects the bridge's backpressure (never more than the room left below
``BRIDGE_MAX_QUEUE_DEPTH``; the rest waits for the next sweep). Exactly one
reconciler sweeps at a time across all bridges: it holds the lease
``reconciler.lease`` in the state bucket, an expiry timestamp renewed with
compare-and-set well inside its TTL. A sweep reads NATS only: two ordered
consumers delivering the last message per subject (headers only for
``v1-objects``), so its cost grows with the number of keys, never with V2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from bridge.changes import KvChange
from bridge.messages import TaskMessageEncoder, queued_revision
from bridge.metrics import BridgeMetrics
from bridge.publisher import BrokerPublisher
from bridge.v2_events import V2_OBJECT_TYPES, scan_events
from sync_core.epochs import EPOCH_TASK_KWARG, BucketLife, bucket_epoch, bucket_life
from sync_core.keys import ObjectType, forward_mapping_key, key_specs, parse_key
from sync_core.kv_listing import kv_stream, kv_subject, last_per_subject, operation_of
from sync_core.sync_state import (
    RECONCILER_LEASE_KEY,
    RECONCILER_SWEEP_KEY,
    RunState,
    SweepSummary,
    SyncState,
    Terminal,
    decode_state,
)
from sync_core.v2_events import REVERSE_EPOCH, V2_KEY_PREFIX, V2EventCapture

log = logging.getLogger(__name__)

PUT = "PUT"
# The lease is renewed this often (at most), and lives three renewals.
LEASE_RENEW_MAX = 10.0
LEASE_TTL_RENEWALS = 3
# But never shorter than this: a loaded event loop must not lose the lease to a
# stall of a few hundred milliseconds (a stopped reconciler releases it at once).
LEASE_TTL_MIN = 5.0
# A listing whose ordered consumer delivers nothing for this long has stalled.
LIST_IDLE_TIMEOUT = 30.0
# Parent mapping lookups of parked children, in flight at once.
MAPPING_LOOKUPS_IN_FLIGHT = 64
# Outcomes after which the key's forward mapping exists.
MAPPED_OUTCOMES = frozenset({Terminal.CREATED, Terminal.UPDATED, Terminal.UNCHANGED})
# Re-drives of keys whose revision looks synced but whose mapping is gone.
FORCE_KWARGS = {"force": True}
# The oldest queued messages looked at for the queue floor (V2 -> V1 tasks are passed over).
QUEUE_FLOOR_SCAN = 100
# The action a re-driven V2 event's task carries: its run reads the event's own
# (the state does not record it); as ``tasks.run.reverse_writes.release_children``.
REDRIVEN_V2_ACTION = "updated"


@dataclass(frozen=True)
class ReconcileTuning:
    """The reconciler's knobs (from ``BridgeSettings``)."""

    interval: float = 60.0
    grace: float = 30.0
    parent_wait: float = 24 * 3600.0
    max_queue_depth: int = 10_000

    @property
    def renew_every(self) -> float:
        """Seconds between lease renewals."""
        return min(LEASE_RENEW_MAX, self.interval / 3)

    @property
    def lease_ttl(self) -> float:
        """Seconds the lease lives without renewal."""
        return max(LEASE_TTL_MIN, self.renew_every * LEASE_TTL_RENEWALS)


@dataclass(frozen=True)
class Latest:
    """A key's latest change in ``v1-objects``."""

    revision: int
    operation: str
    written: float


@dataclass
class SweepPlan:
    """What one sweep decided: the keys behind, and the changes to enqueue."""

    keys: int = 0
    behind: int = 0
    # Behind past the grace and not in flight, parked, waiting for a retry or on
    # their way (unacked, queued): what ``v1sync_reconcile_keys_behind`` exports.
    overdue: int = 0
    changes: list[KvChange] = field(default_factory=list)
    # Settled keys whose forward mapping is gone: re-driven with ``force``.
    forced: list[KvChange] = field(default_factory=list)
    # V2 objects (``v2.…``) whose retry or parked run was lost: ``sync_v2_event`` again.
    reverse: list[KvChange] = field(default_factory=list)


def holder_name() -> str:
    """A name for this bridge's reconciler, unique across pods and restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class ReconcilerLease:
    """The one-reconciler-at-a-time lease: ``{holder, expires}`` under compare-and-set."""

    def __init__(
        self, kv: KeyValue, holder: str, ttl: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._kv = kv
        self.holder = holder
        self.ttl = ttl
        self._clock = clock
        self.held = False

    async def _read(self) -> tuple[dict[str, Any] | None, int]:
        try:
            entry = await self._kv.get(RECONCILER_LEASE_KEY)
        except KeyNotFoundError as missing:
            revision = int(missing.entry.revision or 0) if missing.entry is not None else 0
            return None, revision
        try:
            data = json.loads(bytes(entry.value or b""))
        except ValueError:
            data = None
        return (data if isinstance(data, dict) else None), int(entry.revision or 0)

    async def hold(self) -> bool:
        """Take or renew the lease; True while this reconciler holds it."""
        now = self._clock()
        data, revision = await self._read()
        if (
            data is not None
            and data.get("holder") != self.holder
            and float(data.get("expires", 0)) > now
        ):
            self.held = False
            return False
        value = json.dumps({"holder": self.holder, "expires": now + self.ttl}).encode()
        try:
            if revision:
                await self._kv.update(RECONCILER_LEASE_KEY, value, last=revision)
            else:
                await self._kv.create(RECONCILER_LEASE_KEY, value)
        except KeyWrongLastSequenceError:
            self.held = False
            return False
        if not self.held:
            log.info("reconciler lease taken", extra={"holder": self.holder})
        self.held = True
        return True

    async def release(self) -> None:
        """Give the lease up (on stop), so another bridge takes over at once."""
        if not self.held:
            return
        self.held = False
        data, revision = await self._read()
        if data is not None and data.get("holder") == self.holder and revision:
            try:
                await self._kv.delete(RECONCILER_LEASE_KEY, last=revision)
            except Exception as error:
                log.debug("reconciler lease release failed", extra={"failure": repr(error)})


class Reconciler:
    """Sweeps while it holds the lease, every ``tuning.interval`` seconds."""

    def __init__(
        self,
        nc: Client,
        *,
        objects_bucket: str,
        mappings_bucket: str,
        state_bucket: str,
        consumer: str,
        encoder: TaskMessageEncoder,
        publisher: BrokerPublisher,
        metrics: BridgeMetrics,
        tuning: ReconcileTuning,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
        v2_encoder: TaskMessageEncoder | None = None,
        v2_capture: V2EventCapture | None = None,
    ) -> None:
        """``v2_encoder``: the ``sync_v2_event`` encoder (``SYNC_V2_TO_V1``); with it the
        sweeps re-drive the V2 objects' lost retries and parked runs (``plan_reverse``),
        and with ``v2_capture`` (the events' stream and consumer) the events whose task
        was lost before it ran (``lost_v2_events``)."""
        self.js = nc.jetstream()
        self.v2_encoder = v2_encoder
        self.v2_capture = v2_capture
        self.objects_bucket = objects_bucket
        self.mappings_bucket = mappings_bucket
        self.state_bucket = state_bucket
        self.consumer = consumer
        self.encoder = encoder
        self.publisher = publisher
        self.metrics = metrics
        self.tuning = tuning
        self.holder = holder or holder_name()
        self._clock = clock
        self._sent: dict[str, float] = {}
        self._lease: ReconcilerLease | None = None
        self._redis_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile")
        self.sweeps = 0
        self.last_summary: SweepSummary | None = None
        self._summary_read = False

    @property
    def leader(self) -> bool:
        """Whether this reconciler holds the lease."""
        return self._lease is not None and self._lease.held

    async def run(self, stop: asyncio.Event) -> None:
        """Hold (or wait for) the lease and sweep on schedule until ``stop`` is set."""
        state_kv = await self.js.key_value(self.state_bucket)
        self._lease = ReconcilerLease(state_kv, self.holder, self.tuning.lease_ttl, self._clock)
        next_sweep = time.monotonic() + self.tuning.interval
        try:
            while not stop.is_set():
                try:
                    leader = await self._lease.hold()
                except Exception as error:
                    log.warning("reconciler lease check failed", extra={"failure": repr(error)})
                    leader = False
                self.metrics.reconciler_leads(leader)
                if leader and time.monotonic() >= next_sweep:
                    try:
                        await self.sweep()
                    except Exception as error:
                        log.warning("reconcile sweep failed", extra={"failure": repr(error)})
                    next_sweep = time.monotonic() + self.tuning.interval
                wait = min(self.tuning.renew_every, max(0.0, next_sweep - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.01))
        finally:
            self.metrics.reconciler_leads(False)
            try:
                await self._lease.release()
            except Exception as error:
                log.debug("reconciler lease release failed", extra={"failure": repr(error)})
            self._redis_thread.shutdown(wait=False)

    # -- one sweep -----------------------------------------------------------

    async def sweep(self) -> SweepSummary:
        """Compare, enqueue what is behind, record the summary; returns it."""
        started = time.perf_counter()
        now = self._clock()
        previous = await self.previous_summary()
        epoch = await bucket_epoch(self.js, self.objects_bucket)
        mappings_life = await self.mappings_life()
        latest = await self.latest_revisions()
        states = await self.states()
        ack_floor = await self.ack_floor()
        queue_floor = await self.queue_floor()
        unmapped: set[str] | None = None
        if mappings_life is not None and mappings_check_due(mappings_life, previous):
            unmapped = await self.unmapped_keys(latest, states, epoch)
        plan = await self.plan(
            latest, states, ack_floor, now, queue_floor, epoch=epoch, unmapped=unmapped
        )
        reverse: list[KvChange] = []
        v2_checked = previous.v2_events_checked if previous is not None else 0
        if self.v2_encoder is not None:
            reverse_states = await self.reverse_states()
            reverse = await self.plan_reverse(reverse_states, now, plan)
            if self.v2_capture is not None:
                lost, v2_checked = await self.lost_v2_events(reverse_states, now, v2_checked)
                planned = {change.key for change in reverse}
                lost = [change for change in lost if change.key not in planned]
                plan.behind += len(lost)
                plan.overdue += len(lost)
                reverse += lost
                plan.reverse = reverse
        depth = await self._on_redis_thread(self.publisher.depth, self.encoder.queue)
        room = max(0, self.tuning.max_queue_depth - depth)
        forced = plan.forced[:room]
        batch = plan.changes[: room - len(forced)]
        reverse = reverse[: room - len(forced) - len(batch)]
        stamped = self.encoder.with_kwargs({EPOCH_TASK_KWARG: epoch})
        if forced:
            encoder = stamped.with_kwargs(FORCE_KWARGS)
            await self._on_redis_thread(self.publisher.push, encoder.encode(forced))
            log.warning(
                "reconciler re-drove keys whose mapping is gone",
                extra={"count": len(forced), "keys": [c.key for c in forced[:20]]},
            )
        if batch:
            await self._on_redis_thread(self.publisher.push, stamped.encode(batch))
        if reverse:
            assert self.v2_encoder is not None
            # No epoch (V2 events belong to no life of v1-objects), no force: the
            # run resumes the budget its durable state holds.
            await self._on_redis_thread(self.publisher.push, self.v2_encoder.encode(reverse))
        for change in forced + batch + reverse:
            self._sent[change.key] = now
        deferred = len(plan.changes) + len(plan.forced) + len(plan.reverse) - len(batch)
        deferred -= len(forced) + len(reverse)
        batch = forced + batch + reverse
        if batch:
            self.metrics.reconcile_reenqueued.inc(len(batch))
            log.info(
                "reconciler re-enqueued keys behind",
                extra={"count": len(batch), "keys": [c.key for c in batch[:20]]},
            )
        self._forget_old_sends(now)
        duration = time.perf_counter() - started
        other_life = [key for key, state in states.items() if state.epoch != epoch]
        summary = SweepSummary(
            at=now,
            duration=round(duration, 4),
            keys=plan.keys,
            behind=plan.behind,
            reenqueued=len(batch),
            deferred=deferred,
            holder=self.holder,
            epoch=epoch,
            other_life=len(other_life),
            other_life_in_bucket=sum(1 for key in other_life if key in latest),
            mappings_epoch=None if mappings_life is None else mappings_life.epoch,
            mappings_messages=None if mappings_life is None else mappings_life.messages,
            unmapped=len(unmapped or ()),
            v2_events_checked=v2_checked,
        )
        self.metrics.reconcile_keys_behind.set(plan.overdue)
        self.metrics.reconcile_sweep_seconds.observe(duration)
        self.metrics.reconcile_last_sweep.set(self._clock())
        state_kv = await self.js.key_value(self.state_bucket)
        await state_kv.put(RECONCILER_SWEEP_KEY, summary.to_bytes())
        self.sweeps += 1
        self.last_summary = summary
        log.info("reconcile sweep", extra=summary.__dict__)
        return summary

    async def plan(
        self,
        latest: dict[str, Latest],
        states: dict[str, SyncState],
        ack_floor: int | None,
        now: float,
        queue_floor: int | None = None,
        *,
        epoch: int | None = None,
        unmapped: set[str] | None = None,
    ) -> SweepPlan:
        """Which keys are behind, and which of them to enqueue now (see the module doc).

        ``epoch``: the life of ``v1-objects`` ``latest`` is of (states of another
        read as keys never synced); ``unmapped``: keys settled in the state whose
        forward mapping is gone (``unmapped_keys``).
        """
        plan = SweepPlan(keys=len(latest))
        parked: list[tuple[str, Latest, SyncState]] = []
        grace = self.tuning.grace
        for key, change in latest.items():
            state = states.get(key)
            if state is None:
                state = SyncState(key)
            elif epoch is not None:
                state = state.in_life(epoch)
            if state.settled(change.revision):
                if unmapped and key in unmapped:
                    plan.behind += 1
                    if not state.lease_live(now) and now - self._sent.get(key, -grace) >= grace:
                        plan.forced.append(KvChange(key, change.revision, change.operation))
                continue
            plan.behind += 1
            if state.lease_live(now):
                continue
            sent_lately = now - self._sent.get(key, -grace) < grace
            pending = state.pending
            if pending is not None and pending.revision == change.revision:
                if pending.state is RunState.RETRY and (pending.due or 0.0) + grace > now:
                    continue
                if pending.state is RunState.PARKED:
                    if not sent_lately:
                        parked.append((key, change, state))
                    continue
            if now - change.written < grace:
                continue
            if ack_floor is not None and change.revision > ack_floor:
                continue
            if queue_floor is not None and change.revision >= queue_floor:
                continue
            plan.overdue += 1
            if not sent_lately:
                plan.changes.append(KvChange(key, change.revision, change.operation))
        plan.changes.extend(await self._parked_to_release(parked, now))
        return plan

    async def plan_reverse(
        self, states: dict[str, SyncState], now: float, plan: SweepPlan
    ) -> list[KvChange]:
        """The V2 objects' runs to re-drive (also noted in ``plan``): their tasks were lost.

        A V2 object's latest event is not compared (finding it is a scan of the
        V2 events stream); its durable state says what is unfinished: a
        ``pending`` retry overdue by the grace, or a parked run whose parent is
        mapped now or whose wait is over (as for ``v1-objects`` keys). Keys in
        flight (a live lease) or re-enqueued less than a grace ago are left
        alone. Each gets ``sync_v2_event`` for its pending sequence (the run
        reads its action from the event).
        """
        grace = self.tuning.grace
        parked: list[tuple[str, Latest, SyncState]] = []
        found: list[KvChange] = []
        for key, state in states.items():
            state = state.in_life(REVERSE_EPOCH)
            pending = state.pending
            if pending is None or state.settled(pending.revision):
                continue
            plan.behind += 1
            if state.lease_live(now) or now - self._sent.get(key, -grace) < grace:
                continue
            change = Latest(pending.revision, REDRIVEN_V2_ACTION, pending.since)
            if pending.state is RunState.PARKED:
                parked.append((key, change, state))
            elif (pending.due or 0.0) + grace <= now:
                plan.overdue += 1
                found.append(KvChange(key, pending.revision, REDRIVEN_V2_ACTION))
        found.extend(await self._parked_to_release(parked, now))
        plan.reverse = found
        return found

    async def lost_v2_events(
        self, states: dict[str, SyncState], now: float, checked: int
    ) -> tuple[list[KvChange], int]:
        """Events after sequence ``checked`` whose task left no trace in the durable state.

        A ``sync_v2_event`` task Redis lost before its first run (valkey's last
        second before a crash, an emptied broker) leaves nothing in
        ``v1-sync-state`` for ``plan_reverse`` to see. So each sweep reads the
        V2 events stream on from the last sequence a sweep checked (one ordered
        consumer per object type; nothing to read when no event came): an
        object's latest event older than the grace and acked by the bridges,
        neither settled nor pending in its state, is re-driven. Returns those
        and the new checked sequence, which stops before the first event still
        unaccounted for (or still young, or not yet acked), so a re-drive that
        is lost too is found again by the next sweep.
        """
        assert self.v2_capture is not None
        stream = self.v2_capture.stream
        try:
            info = await self.js.stream_info(stream)
            consumer = await self.js.consumer_info(stream, self.v2_capture.consumer)
        except Exception as error:  # no stream or consumer yet, or NATS away
            log.debug("no V2 events to check", extra={"failure": repr(error)})
            return [], checked
        first, last = int(info.state.first_seq or 0), int(info.state.last_seq or 0)
        if last < checked:
            checked = 0  # the stream was recreated: its sequences started again
        acked = int(consumer.ack_floor.stream_seq or 0) if consumer.ack_floor else 0
        start = max(checked + 1, first)
        if start > min(last, acked):
            return [], max(checked, min(start, acked + 1) - 1)
        grace = self.tuning.grace
        latest: dict[str, KvChange] = {}
        hold = [acked + 1]

        def note(change: KvChange, stored_at: float) -> None:
            if change.revision > acked or now - stored_at < grace:
                hold.append(change.revision)  # the bridges' job still, or in flight
            else:
                latest[change.key] = change  # stream order: the latest wins

        try:
            for object_type in V2_OBJECT_TYPES:
                await scan_events(self.js, stream, object_type, start, note)
        except TimeoutError:
            log.warning("reading the V2 events stream stalled", extra={"stream": stream})
            return [], checked
        found: list[KvChange] = []
        for key, change in latest.items():
            state = states.get(key, SyncState(key)).in_life(REVERSE_EPOCH)
            pending = state.pending
            if state.settled(change.revision) or (
                pending is not None and pending.revision >= change.revision
            ):
                continue
            hold.append(change.revision)
            if not state.lease_live(now) and now - self._sent.get(key, -grace) >= grace:
                found.append(change)
        return found, min(hold) - 1

    async def reverse_states(self) -> dict[str, SyncState]:
        """The durable state of every V2 object (``v2.…`` keys of the state bucket)."""
        found: dict[str, SyncState] = {}
        start = len(kv_subject(self.state_bucket, ""))

        def note(msg: Msg, meta: Msg.Metadata) -> None:
            if operation_of(msg.headers) == PUT:
                key = msg.subject[start:]
                found[key] = decode_state(msg.data, key)

        subject = kv_subject(self.state_bucket, V2_KEY_PREFIX + ">")
        await last_per_subject(self.js, kv_stream(self.state_bucket), subject, note, False)
        return found

    async def _parked_to_release(
        self, parked: list[tuple[str, Latest, SyncState]], now: float
    ) -> list[KvChange]:
        """Parked children whose parent is mapped by now, or whose wait is over."""
        if not parked:
            return []
        mappings = await self.js.key_value(self.mappings_bucket)
        limit = asyncio.Semaphore(MAPPING_LOOKUPS_IN_FLIGHT)

        async def mapped(parent_key: str) -> bool:
            async with limit:
                try:
                    entry = await mappings.get(parent_key)
                except KeyNotFoundError:
                    return False
                return bool(entry.value)

        releases: list[KvChange] = []
        waiting: list[tuple[str, Latest, str]] = []
        for key, change, state in parked:
            assert state.pending is not None
            if now - state.pending.since >= self.tuning.parent_wait:
                releases.append(KvChange(key, change.revision, change.operation))
            elif state.pending.parent_key:
                waiting.append((key, change, state.pending.parent_key))
        found = await asyncio.gather(*(mapped(parent) for _, _, parent in waiting))
        releases += [
            KvChange(key, change.revision, change.operation)
            for (key, change, _), is_mapped in zip(waiting, found, strict=True)
            if is_mapped
        ]
        return releases

    # -- reading NATS ----------------------------------------------------------

    async def previous_summary(self) -> SweepSummary | None:
        """The last sweep's summary: this reconciler's, or the stored one of the one before."""
        if self.last_summary is not None or self._summary_read:
            return self.last_summary
        self._summary_read = True
        try:
            entry = await (await self.js.key_value(self.state_bucket)).get(RECONCILER_SWEEP_KEY)
            return SweepSummary.from_bytes(bytes(entry.value or b""))
        except (KeyNotFoundError, ValueError):
            return None

    async def mappings_life(self) -> BucketLife | None:
        """The epoch and message count of ``v1-mappings``; None when it cannot be read
        (no bucket yet: the sweep goes on without the mapping check)."""
        try:
            return await bucket_life(self.js, self.mappings_bucket)
        except Exception as error:
            log.warning("cannot read the mappings bucket", extra={"failure": repr(error)})
            return None

    async def unmapped_keys(
        self, latest: dict[str, Latest], states: dict[str, SyncState], epoch: int
    ) -> set[str]:
        """Keys whose latest revision is synced (created, updated, unchanged) in the state of
        life ``epoch`` but whose forward mapping ``v1-mappings`` does not hold.

        One headers-only listing of the forward mappings (``mappings_check_due`` says when).
        """
        wanted: dict[str, str] = {}
        for key, change in latest.items():
            state = states.get(key)
            if state is None or change.operation != PUT:
                continue
            state = state.in_life(epoch)
            if state.revision != change.revision or state.outcome not in MAPPED_OUTCOMES:
                continue
            object_type, record_id = parse_key(key)
            if object_type is not None:
                wanted[forward_mapping_key(object_type, record_id)] = key
        if not wanted:
            return set()
        mapped: set[str] = set()
        start = len(kv_subject(self.mappings_bucket, ""))

        def note(msg: Msg, meta: Msg.Metadata) -> None:
            if operation_of(msg.headers) == PUT:  # not a deleted or purged mapping
                mapped.add(msg.subject[start:])

        await asyncio.gather(
            *(
                last_per_subject(
                    self.js,
                    kv_stream(self.mappings_bucket),
                    kv_subject(self.mappings_bucket, forward_mapping_key(object_type, ">")),
                    note,
                    True,
                )
                for object_type in ObjectType
            )
        )
        return {key for mapping, key in wanted.items() if mapping not in mapped}

    async def latest_revisions(self) -> dict[str, Latest]:
        """The latest revision of every key of ours in ``v1-objects`` (headers only)."""
        found: dict[str, Latest] = {}
        start = len(kv_subject(self.objects_bucket, ""))

        def note(msg: Msg, meta: Msg.Metadata) -> None:
            operation = operation_of(msg.headers) or PUT
            found[msg.subject[start:]] = Latest(
                meta.sequence.stream, operation, meta.timestamp.timestamp()
            )

        await self._each_prefix(self.objects_bucket, note, headers_only=True)
        return found

    async def states(self) -> dict[str, SyncState]:
        """The sync state of every key of ours (values included: they are small)."""
        found: dict[str, SyncState] = {}
        start = len(kv_subject(self.state_bucket, ""))

        def note(msg: Msg, meta: Msg.Metadata) -> None:
            if operation_of(msg.headers) != PUT:
                return  # a deleted or purged state entry
            key = msg.subject[start:]
            found[key] = decode_state(msg.data, key)

        await self._each_prefix(self.state_bucket, note, headers_only=False)
        return found

    async def _each_prefix(
        self, bucket: str, note: Callable[[Msg, Msg.Metadata], None], *, headers_only: bool
    ) -> None:
        await asyncio.gather(
            *(
                last_per_subject(
                    self.js,
                    kv_stream(bucket),
                    kv_subject(bucket, f"{prefix}.>"),
                    note,
                    headers_only,
                )
                for prefix in prefixes()
            )
        )

    async def queue_floor(self) -> int | None:
        """The KV revision of the oldest ``sync_kv_entry`` waiting in the Celery queue.

        None when there is none among the ``QUEUE_FLOOR_SCAN`` oldest messages (V2 -> V1
        tasks, whose sequences are of another stream, are passed over).
        """
        oldest = await self._on_redis_thread(
            self.publisher.oldest_few, self.encoder.queue, QUEUE_FLOOR_SCAN
        )
        for raw in oldest:
            revision = queued_revision(raw)
            if revision is not None:
                return revision
        return None

    async def ack_floor(self) -> int | None:
        """The stream sequence up to which the bridges acked every message, if known."""
        try:
            info = await self.js.consumer_info(kv_stream(self.objects_bucket), self.consumer)
        except Exception as error:  # no consumer yet, or NATS away: no filter
            log.debug("no consumer ack floor", extra={"failure": repr(error)})
            return None
        floor = info.ack_floor
        return None if floor is None else int(floor.stream_seq or 0)

    # -- helpers -----------------------------------------------------------------

    def _forget_old_sends(self, now: float) -> None:
        grace = self.tuning.grace
        self._sent = {key: when for key, when in self._sent.items() if now - when < grace}

    async def _on_redis_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._redis_thread, fn, *args)


def mappings_check_due(now: BucketLife, previous: SweepSummary | None) -> bool:
    """Whether ``v1-mappings`` may have lost entries since the sweep ``previous``.

    Its epoch or message count (``now``) against what that sweep saw, or that
    sweep still found keys without their mapping.
    """
    if previous is None or previous.mappings_epoch is None or previous.mappings_messages is None:
        return True
    before = BucketLife(previous.mappings_epoch, previous.mappings_messages)
    return now.emptied_since(before) or previous.unmapped > 0


def prefixes() -> Iterable[str]:
    """The ``v1-objects`` key prefixes of the registered object types (``sync_core.keys``)."""
    return [spec.prefix for spec in key_specs()]
