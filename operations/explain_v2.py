"""``explain v2.{object_type}.{uid}``: what the V2 -> V1 run of a V2 object's event would do.

The task's own run (``tasks.run.reverse.run_reverse``, forced like a re-queue)
on the dry-run runtime of ``explain`` (``tasks.run.dry_run``): every read is
real (the event from the V2 events stream, the mappings, the sync states,
``v1-objects``), and every write is recorded instead of made, the V1 calls
included (``DryRunV1Writer`` answers them as V1 accepting them). The event is
the object's latest in the stream (``operations.v2_latest``), or the one of
``KEY@SEQUENCE``.
"""

from __future__ import annotations

from dataclasses import asdict

from operations.explain import (
    VERDICTS,
    Explanation,
    UnknownKey,
    Verdict,
    ends_as,
    kv_written,
    note_waiting,
    redact,
    states_written,
)
from operations.v2_latest import latest_event, parse_v2_key
from sync_core.broker import task_id_for
from sync_core.indexer_events import V2Event, parse_v2_event
from sync_core.sync_state import RunState, SyncState
from sync_core.v2_events import REVERSE_EPOCH
from tasks.run.decisions import ECHO_REASON
from tasks.run.dry_run import DryRun
from tasks.run.outcomes import Outcome
from tasks.run.report import RunReport
from tasks.run.reverse import SWITCHED_OFF_REASON, run_reverse
from tasks.run.reverse_writes import CONFIRMING_REASON, SETTLING_REASON
from tasks.stores.v2_event_log import read_event

# What the reverse run ends in, for an operator (superseded is told apart from a skip).
# A superseded event is an older one: said apart from the other skips.
V2_VERDICTS = {**VERDICTS, Outcome.SUPERSEDED: "superseded"}
KEY_LOCKED_REASON = "key_locked"


def explain_v2_key(dry: DryRun, key: str, sequence: int | None = None) -> Explanation:
    """What a ``sync_v2_event`` task for the object's event would do (``UnknownKey`` if none).

    ``sequence``: the event (a task id's); None: the object's latest event in the stream.
    """
    dry.reset()
    runtime = dry.runtime
    settings = runtime.settings
    stream = settings.v2_events_stream
    parsed = parse_v2_key(key)
    if parsed is None:
        raise UnknownKey(f"{key} names no V2 committee or committee_member (v2.TYPE.UID)")
    if sequence is None:
        state_kv = runtime.nats.kv(settings.sync_state_bucket)
        latest = runtime.nats.run(latest_event(runtime.nats.js, stream, state_kv, key))
        if latest is None:
            raise UnknownKey(f"the stream {stream} holds no event of {key}")
        sequence = latest.revision
    stored = read_event(runtime.nats, stream, sequence)
    if stored is None:
        raise UnknownKey(f"the stream {stream} holds no event at sequence {sequence}")
    event = parse_v2_event(stored.data, stored.subject)
    action = stored.subject.rpartition(".")[2]
    found = Explanation(key=key, object_type=parsed.object_type, revision=sequence)
    found.operation = action
    if isinstance(event, V2Event):
        found.record = redact(dict(event.data))
        found.operation = str(event.action)
    state_before = runtime.state.get(key).in_life(REVERSE_EPOCH)
    found.synced_revision = state_before.revision if state_before.revision >= 0 else None
    letter = runtime.dead_letters.get(task_id_for(key, sequence))
    if letter is not None:
        found.dead_letter = asdict(letter)

    report = RunReport(key=key, revision=sequence, operation=found.operation or action)
    outcome, _ = run_reverse(runtime, report, force=True)

    found.warnings = list(report.warnings)
    found.mappings_read = dict(dry.mappings.reads)
    found.writes = [asdict(write) for write in dry.writes.all()]
    found.mappings_written = kv_written(dry, settings.v1_mappings_bucket)
    found.state_written = states_written(dry, settings.sync_state_bucket)
    found.v1_calls = [asdict(call) for call in dry.v1_calls]
    if dry.v1_calls:
        found.write = dry.v1_calls[-1].body
    _verdict(dry, found, report, outcome)
    _note_state(found, state_before, settings.sync_retry_max)
    return found


def _verdict(dry: DryRun, found: Explanation, report: RunReport, outcome: Outcome) -> None:
    """The outcome, its reason and what an operator should know of it."""
    verdict = V2_VERDICTS[outcome]
    if outcome is Outcome.CREATED:
        ends_as(found, verdict, "no_v1_mapping")
        found.notes.append(
            "a V1 create: the intent is recorded first, so a lost answer is found in "
            "v1-objects on the retry instead of creating a second V1 object"
        )
    elif outcome is Outcome.UPDATED:
        ends_as(found, verdict, "v1_differs")
    elif outcome is Outcome.DELETED:
        ends_as(found, verdict, report.reason or "v2_deleted")
    elif outcome is Outcome.RETRYING and report.reason == KEY_LOCKED_REASON:
        ends_as(found, verdict, KEY_LOCKED_REASON)
        found.notes.append(
            "a worker holds this object (or the forward run of its V1 key) right now: "
            "explain it again shortly"
        )
    elif outcome is Outcome.RETRYING and report.reason == SETTLING_REASON:
        ends_as(found, verdict, SETTLING_REASON)
        found.notes.append(
            "a V2 create this young waits a few seconds first, so the forward path's "
            "mappings of an object it created are in place"
        )
    elif outcome is Outcome.RETRYING and report.reason == CONFIRMING_REASON:
        ends_as(found, verdict, CONFIRMING_REASON)
        wait = dry.runtime.settings.sync_v1_create_confirm_wait
        found.notes.append(
            "an earlier V1 create of this object got no answer: the run waits for its row "
            f"to come back through V1's loader and adopts it; after {wait:g}s without one "
            "(SYNC_V1_CREATE_CONFIRM_WAIT) it sends the create again"
        )
    elif outcome in (Outcome.RETRYING, Outcome.PARKED):
        note_waiting(dry, found, report, outcome, "has a V1 id: the run looks again every 30 s")
    elif verdict == Verdict.DEAD_LETTER:
        ends_as(found, verdict, report.error_kind, report.error_message)
    else:
        ends_as(found, verdict, report.reason)
        if report.reason == ECHO_REASON:
            found.notes.append(
                "an echo: the event is this service's own V2 write, or V1 holds this "
                "content already (the fingerprint recorded on its V1 key): no V1 call"
            )
        elif report.reason == SWITCHED_OFF_REASON:
            found.notes.append(
                "SYNC_V2_TO_V1 is off in this environment: a worker skips every V2 event"
            )


def _note_state(found: Explanation, state: SyncState, retry_max: int) -> None:
    """What the object's durable state says of this event."""
    sequence = found.revision
    if sequence is None:
        return
    if state.revision == sequence and state.outcome is not None:
        found.notes.append(
            f"the sync state has sequence {sequence} as {state.outcome}: a task queued by "
            "the bridge stops there; `requeue` / `dlq requeue` force the run shown here"
        )
    elif state.revision > sequence:
        found.notes.append(
            f"event {state.revision} of this object was applied already "
            f"({state.outcome}): this older one changes nothing"
        )
    pending = state.pending
    if pending is None or pending.revision != sequence:
        return
    if pending.state is RunState.RETRY:
        found.notes.append(
            f"the task is retrying this event: {pending.attempt} of its tries spent "
            f"(of {retry_max + 1}); the run shown goes on from there"
        )
    elif pending.state is RunState.PARKED:
        found.notes.append(f"the task is parked on {pending.parent_key} (the sync state)")
