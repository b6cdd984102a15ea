"""Echoes of the forward path settled in the bridge: no Celery task for them (issue 24).

Every V2 write of the forward path (V1 -> V2) comes back as a V2 indexer event.
The worker's reverse run would skip it as ``skipped:echo`` (its V1-relevant
fingerprint equals the one recorded on the object's V1 key), but only after a
whole Celery task: delivery, its lease and ~5 NATS round trips, ~4 ms of
worker CPU per echo, which took a quarter of the forward rate with the switch
on. The bridge decides the same thing here, before enqueuing, for the events
of a fetched batch: an echo is recorded in the V2 object's durable state and
acked, never enqueued. Anything it is not sure of is enqueued as before, and
the worker decides (a delete, an unreadable event, a read that fails, any
exception).

An event is settled here only when, in this order:

1. it is a create or an update, well formed (``sync_core.indexer_events``);
   a member names its committee;
2. the object's mapping (``committee.uid.{uid}`` / ``committee_member.uid.{uid}``)
   holds a V1 sfid (not absent, not the tombstone ``!del``);
3. the V2 object's state (``v2.{type}.{uid}`` in ``v1-sync-state``) has no live
   lease, no pending run, no V1 create intent, no unfinished member move, is
   no dead letter, and its recorded sequence is below the event's;
4. the V1 key's state (``platform-collaboration__c.{sfid}`` /
   ``platform-community__c.{sfid}``) has no live lease and its fingerprint
   equals the event's (``sync_core.v1_bodies.event_fingerprint``);
5. the V2 object's state becomes ``skipped`` at the event's sequence
   (``SyncState.finished(..., epoch=REVERSE_EPOCH)``, as the worker's run
   would record it) by a compare-and-set on the KV revision read in 3.

Why latest-wins holds: the echo is recorded at its own sequence with a
compare-and-set against the state read in step 3. A worker that took the
object's lease in between (for an older event) changed that state, so the
compare-and-set fails and the event is enqueued; a worker task of an older
event that runs afterwards finds a newer sequence recorded and ends
``superseded``, exactly as if the echo's task had run first. A newer event is
never hidden: it has a higher sequence and is judged on its own. Why an echo
is never taken for a person's edit: the fingerprint on the V1 key is written
by the forward run under that key's lease together with its outcome (and by
the reverse run after its V1 write), so while a forward run is writing, its
lease is live and the event is not settled (it is looked at again for up to
``RECHECK_WINDOW``, as when the object's mapping is not written yet, then
enqueued); a person's edit has another
fingerprint (a revert to an older content included: the recorded fingerprint
is the last one agreed). Events of one object within a batch are decided in
stream order, objects concurrently.

The reconciler's ``lost_v2_events`` counts a settled state as done, so an echo
settled here is not re-driven.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from bridge.changes import KvChange
from bridge.metrics import BridgeMetrics
from sync_core.indexer_events import V2Action, V2Event, V2ObjectType, parse_v2_event
from sync_core.keys import COMMITTEE_KEYS, MEMBER_KEYS
from sync_core.mapping_keys import COMMITTEE_UID, MEMBER_UID, TOMBSTONE
from sync_core.sync_state import SyncState, Terminal, read_state
from sync_core.v1_bodies import event_fingerprint
from sync_core.v2_events import REVERSE_EPOCH, v2_key

log = logging.getLogger(__name__)

# The reason the worker's run records for an echo (``tasks.run.decisions.ECHO_REASON``).
ECHO_REASON = "echo"
# How many events of a batch are decided at once (each is a few KV round trips).
MAX_CONCURRENT_DECISIONS = 64
# The longest a batch's decisions may take (NATS slow or away): the events not
# decided by then are enqueued, well inside the messages' ack wait.
SETTLE_TIMEOUT = 5.0
# V2 publishes the event of a forward write while the forward run still holds the
# V1 key's lease (its fingerprint lands with its outcome, a few ms later) and, for
# a create, before it wrote the object's mapping: such an event is looked at again
# after ``RECHECK_SECONDS``, then twice as long each time (at most
# ``RECHECK_MAX_SECONDS``: each look is three reads), for up to ``RECHECK_WINDOW``
# seconds from the batch's start before it is left to the worker (which would
# wait for the same thing).
RECHECK_SECONDS = 0.02
RECHECK_MAX_SECONDS = 0.16
RECHECK_WINDOW = 0.5
RECHECK_REASONS = frozenset({"unmapped", "v1_key_leased"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the bridge settled an event as an echo, and if not, why (for the log)."""

    settled: bool
    why: str


ENQUEUE_DELETE = Verdict(False, "delete")


class V2EchoFilter:
    """Settles the echoes of a batch of V2 events in ``v1-sync-state`` (see the module)."""

    def __init__(
        self,
        js: JetStreamContext,
        mappings_bucket: str,
        state_bucket: str,
        metrics: BridgeMetrics,
    ) -> None:
        self.js = js
        self.mappings_bucket = mappings_bucket
        self.state_bucket = state_bucket
        self.metrics = metrics
        self._mappings: KeyValue | None = None
        self._state: KeyValue | None = None

    async def settle(self, events: Sequence[tuple[KvChange, Msg]]) -> list[bool]:
        """For each event, whether it was settled as an echo (ack it, enqueue nothing)."""
        settled = [False] * len(events)
        by_key: dict[str, list[int]] = {}
        for index, (change, _) in enumerate(events):
            by_key.setdefault(change.key, []).append(index)
        limit = asyncio.Semaphore(MAX_CONCURRENT_DECISIONS)
        recheck_until = time.monotonic() + RECHECK_WINDOW

        async def one_object(indexes: list[int]) -> None:
            async with limit:
                for index in sorted(indexes, key=lambda i: events[i][0].revision):
                    change, msg = events[index]
                    settled[index] = await self._settle_one(change, msg, recheck_until)

        decisions = asyncio.gather(*(one_object(indexes) for indexes in by_key.values()))
        try:
            await asyncio.wait_for(decisions, SETTLE_TIMEOUT)
        except TimeoutError:
            # An echo whose write landed but was not seen here is enqueued: its task
            # finds the sequence settled and ends ``unchanged``.
            log.warning("echo checks timed out: the worker decides the rest")
        count = sum(settled)
        if count:
            log.info(
                "V2 echoes settled without a task", extra={"count": count, "batch": len(events)}
            )
        return settled

    async def _settle_one(self, change: KvChange, msg: Msg, recheck_until: float) -> bool:
        """One event: any doubt, any error, is a task for the worker (False)."""
        try:
            verdict = await self.decide(change, msg, recheck_until)
        except Exception as error:
            log.warning(
                "echo check failed: the worker decides",
                extra={"key": change.key, "sequence": change.revision, "failure": repr(error)},
            )
            return False
        if verdict.settled:
            object_type = change.key.split(".")[1]
            self.metrics.v2_echoes_skipped.labels(object_type=object_type).inc()
            log.debug(
                "V2 echo skipped in the bridge",
                extra={"key": change.key, "sequence": change.revision, "reason": ECHO_REASON},
            )
        else:
            log.debug(
                "V2 event enqueued",
                extra={"key": change.key, "sequence": change.revision, "why": verdict.why},
            )
        return verdict.settled

    async def decide(self, change: KvChange, msg: Msg, recheck_until: float = 0.0) -> Verdict:
        """Settle ``change`` as an echo when every check of the module docstring holds;
        looked at again until ``recheck_until`` (monotonic) while a forward run may be
        recording it (``RECHECK_REASONS``)."""
        if change.operation == V2Action.DELETED:
            return ENQUEUE_DELETE
        event = parse_v2_event(msg.data, msg.subject)
        if not isinstance(event, V2Event):
            return Verdict(False, "unreadable")
        if event.action is V2Action.DELETED or v2_key(event.object_type, event.object_id) != (
            change.key
        ):
            return Verdict(False, "not_this_event")
        fingerprint = event_fingerprint(event)
        if fingerprint is None:
            return Verdict(False, "no_fingerprint")
        if event.object_type is V2ObjectType.COMMITTEE:
            mapping_key, v1_prefix = COMMITTEE_UID + event.object_id, COMMITTEE_KEYS.prefix
        else:
            if not event.data.get("committee_uid"):
                return Verdict(False, "no_committee")
            mapping_key, v1_prefix = MEMBER_UID + event.object_id, MEMBER_KEYS.prefix
        verdict = await self._settle_if_echo(change, event, fingerprint, mapping_key, v1_prefix)
        pause = RECHECK_SECONDS
        while verdict.why in RECHECK_REASONS and time.monotonic() < recheck_until:
            await asyncio.sleep(min(pause, max(0.0, recheck_until - time.monotonic())))
            pause = min(pause * 2, RECHECK_MAX_SECONDS)
            verdict = await self._settle_if_echo(change, event, fingerprint, mapping_key, v1_prefix)
        return verdict

    async def _settle_if_echo(
        self, change: KvChange, event: V2Event, fingerprint: str, mapping_key: str, v1_prefix: str
    ) -> Verdict:
        """Steps 2 to 5 of the module docstring: the reads, then the compare-and-set."""
        mappings, state_kv = await self._buckets()
        sfid, (state, kv_revision) = await asyncio.gather(
            _mapping(mappings, mapping_key), read_state(state_kv, change.key)
        )
        if sfid is None or sfid == TOMBSTONE:
            return Verdict(False, "unmapped")
        now = time.time()
        why = _busy(state, change.revision, now)
        if why is not None:
            return Verdict(False, why)
        v1_state, _ = await read_state(state_kv, f"{v1_prefix}.{sfid}")
        if v1_state.lease_live(now):
            return Verdict(False, "v1_key_leased")
        if v1_state.fingerprint != fingerprint:
            return Verdict(False, "content_differs")
        echo = state.finished(
            change.revision,
            Terminal.SKIPPED.value,
            time.time(),
            _recorded_uid(event),
            epoch=REVERSE_EPOCH,
        )
        try:
            if kv_revision == 0:
                await state_kv.create(change.key, echo.to_bytes())
            else:
                await state_kv.update(change.key, echo.to_bytes(), last=kv_revision)
        except KeyWrongLastSequenceError:
            return Verdict(False, "state_changed")
        return Verdict(True, ECHO_REASON)

    async def _buckets(self) -> tuple[KeyValue, KeyValue]:
        """The two buckets' handles, looked up once."""
        if self._mappings is None or self._state is None:
            self._mappings = await self.js.key_value(self.mappings_bucket)
            self._state = await self.js.key_value(self.state_bucket)
        return self._mappings, self._state


def _busy(state: SyncState, sequence: int, now: float) -> str | None:
    """Why the V2 object's state leaves the event to the worker, or None."""
    if state.lease_live(now):
        return "v2_key_leased"
    current = state.in_life(REVERSE_EPOCH)
    if current.revision >= sequence:
        return "settled_already"
    if current.pending is not None:
        return "pending_run"
    if state.intent is not None:
        return "create_intent"
    if state.moving_from is not None:
        return "member_moving"
    if current.outcome in (Terminal.DEAD_LETTERED, Terminal.DELETE_REFUSED):
        return "dead_letter"
    return None


def _recorded_uid(event: V2Event) -> str | None:
    """The uid the worker's run records (``RunReport.uid``): the committee's own, the
    member's committee, else the project."""
    data = event.data
    if event.object_type is V2ObjectType.COMMITTEE:
        return event.object_id
    for name in ("committee_uid", "project_uid"):
        value = data.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


async def _mapping(kv: KeyValue, key: str) -> str | None:
    """A mapping's text (the tombstone included); None when absent, deleted or empty."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    text = bytes(entry.value or b"").decode("utf-8").strip()
    return text or None
