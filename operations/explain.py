"""``explain KEY``: what a sync of one key would do, without doing it.

The task's own run (``tasks.run.sync.run_sync``, forced like a re-queue) on a
dry-run runtime (``tasks.run.dry_run``): every read is real, and every write
the run would make (V2 POST/PUT/DELETE, mappings and tombstones, the sync
state and lease, the parked index, dead letters, Redis, enqueued tasks) is
recorded instead of made. There is no second copy of the run to drift from
it: what ``explain`` reports is what the task's code decides.

What a dry run cannot know is what V2 would answer to a write; it answers as
V2 accepting it. A delete V2 refused before is told from the key's dead
letter and durable sync state.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from operations.current_keys import lookup_change
from sync_core.broker import task_id_for
from sync_core.sync_state import PendingRun, RunState, Terminal
from tasks.clients.identity import MACHINE_SUFFIX, Identity
from tasks.clients.users import PLATFORM_ID_PATTERN
from tasks.errors import SyncError
from tasks.kinds.base import ObjectKind
from tasks.kinds.registry import kind_for_key
from tasks.mapping.codec import is_soft_delete
from tasks.mapping.merge import field_changes
from tasks.mapping.record_ids import check_key_id
from tasks.mapping.settings_merge import settings_changes
from tasks.run.decisions import read_value, skip_for_key
from tasks.run.deletes import deleting_user
from tasks.run.dry_run import NEW_UID, DryRun, V2Call, open_dry_run
from tasks.run.outcomes import Outcome
from tasks.run.report import OTHER_OBJECT_TYPE, RunReport
from tasks.run.runtime import Runtime
from tasks.run.settings_resource import SETTINGS_RESOURCE
from tasks.run.sync import run_sync, synced_revision

__all__ = ["NEW_UID", "Explanation", "UnknownKey", "explain_key", "open_dry_run"]

REDACTED = "<redacted>"
SETTINGS_PATH_SUFFIX = "/" + SETTINGS_RESOURCE
# V1 tables hold no credentials; should a column ever look like one, it is not shown.
SECRET_COLUMN = re.compile(r"password|secret|token|api_?key|private_?key", re.IGNORECASE)
DELETE_REFUSED_KIND = Terminal.DELETE_REFUSED.value
KEY_LOCKED_REASON = "key_locked"


class Verdict:
    """The outcomes ``explain`` reports (what the task's run would end in)."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    DELETE = "delete"
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"
    PARKED = "parked"
    SKIP = "skip"


# The run's outcome -> the verdict (deletes and retries have more to say: see below).
VERDICTS = {
    Outcome.CREATED: Verdict.CREATE,
    Outcome.UPDATED: Verdict.UPDATE,
    Outcome.UNCHANGED: Verdict.UNCHANGED,
    Outcome.DELETED: Verdict.DELETE,
    Outcome.SKIPPED: Verdict.SKIP,
    Outcome.SUPERSEDED: Verdict.SKIP,
    Outcome.RETRYING: Verdict.RETRY,
    Outcome.PARKED: Verdict.PARKED,
    Outcome.DEAD_LETTERED: Verdict.DEAD_LETTER,
    Outcome.DELETE_REFUSED: Verdict.DEAD_LETTER,
}


@dataclass
class Explanation:
    """Everything ``explain`` found out about one key (``--json`` prints it as is)."""

    key: str
    object_type: str = OTHER_OBJECT_TYPE
    revision: int | None = None
    operation: str | None = None
    outcome: str = Verdict.SKIP
    reason: str | None = None
    message: str | None = None
    record: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    identity: dict[str, Any] | None = None
    mappings_read: dict[str, str | None] = field(default_factory=dict)
    mappings_written: dict[str, str] = field(default_factory=dict)
    v2_uid: str | None = None
    v2_current: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    write: dict[str, Any] | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    # The object's settings resource, when the run would PUT it (projects, committees).
    settings_current: dict[str, Any] | None = None
    settings_write: dict[str, Any] | None = None
    settings_changes: list[dict[str, Any]] = field(default_factory=list)
    synced_revision: int | None = None
    dead_letter: dict[str, Any] | None = None
    # The sync state bucket's entries the run would leave changed (key -> value, None: removed).
    state_written: dict[str, Any] = field(default_factory=dict)
    # Every write the run would make, in order (V2, KV, Redis, queue).
    writes: list[dict[str, Any]] = field(default_factory=list)
    # V2 -> V1 (``v2.…`` keys): the V1 calls the run would make (method, path, body).
    v1_calls: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UnknownKey(LookupError):
    """The key was never in ``v1-objects``."""


def explain_key(dry: DryRun, key: str) -> Explanation:
    """What a task for the key's current revision would do (``UnknownKey`` if there is none).

    Runs the task's own ``run_sync`` on the dry run, forced as a re-queue is
    (``explain`` shows the run, not the "already synced" shortcut; a note says
    when the bridge's task would take it).
    """
    dry.reset()
    runtime = dry.runtime
    found = Explanation(key=key)
    kind, _ = kind_for_key(key)
    if kind is not None:
        found.object_type = kind.name
    skip = skip_for_key(kind, kind is not None and kind.available(runtime))
    if skip is not None:
        return ends_as(found, Verdict.SKIP, skip.reason)
    assert kind is not None
    settings = runtime.settings
    change = runtime.nats.run(lookup_change(runtime.nats.kv(settings.v1_objects_bucket), key))
    if change is None:
        raise UnknownKey(f"{key} is not in {settings.v1_objects_bucket}")
    found.revision, found.operation = change.revision, change.operation
    found.synced_revision = synced_revision(runtime, key, runtime.objects_epoch.current())
    state_before = runtime.state.get(key)
    letter = runtime.dead_letters.get(task_id_for(key, change.revision))
    if letter is not None:
        found.dead_letter = asdict(letter)
    record = _record(runtime, key, kind, change.operation)
    if record is not None:
        found.record = redact(record)

    report = RunReport(key=key, revision=change.revision, operation=change.operation)
    outcome, _ = run_sync(runtime, report, force=True)

    found.warnings = list(report.warnings)
    found.mappings_read = dict(dry.mappings.reads)
    found.writes = [asdict(write) for write in dry.writes.all()]
    found.mappings_written = kv_written(dry, settings.v1_mappings_bucket)
    found.state_written = states_written(dry, settings.sync_state_bucket)
    found.identity = _identity(runtime, dry.v2_calls, record, change.operation)
    _verdict(dry, found, report, outcome)
    if outcome is Outcome.DELETED and not report.reason:
        _note_refusals(found, state_before.outcome, state_before.revision)
    _note_durable_state(found, state_before.outcome, state_before.revision)
    _note_pending(found, state_before.pending, runtime.settings.sync_retry_max)
    _note_synced_marker(found)
    return found


def _record(runtime: Runtime, key: str, kind: ObjectKind, operation: str) -> dict[str, Any] | None:
    """The V1 record the run reads (for display; None for a hard delete or a bad value)."""
    if operation != "PUT":
        return None
    entry = runtime.nats.kv_get(runtime.settings.v1_objects_bucket, key)
    if entry is None:
        return None
    try:
        return read_value(
            bytes(entry.value or b""), kind.reference_columns, check_key_id(key)
        ).record
    except SyncError:
        return None  # the run dead-letters it: the outcome says why


def _verdict(dry: DryRun, found: Explanation, report: RunReport, outcome: Outcome) -> None:
    """Fill the outcome, the V2 side and the notes from the run's ``report``."""
    kind, _ = kind_for_key(report.key)
    assert kind is not None
    writes = [call for call in dry.v2_calls if call.method != "GET"]
    posts = [call for call in writes if call.method == "POST"]
    puts = [call for call in writes if call.method == "PUT" and not is_settings(call)]
    found.body = report.body if report.body is not None else (posts[-1].body if posts else None)
    verdict = VERDICTS[outcome]
    if outcome in (Outcome.UPDATED, Outcome.UNCHANGED, Outcome.DELETED):
        found.v2_uid = own_uid(report)
        found.v2_current = _current(dry.v2_calls, found.v2_uid)
    if outcome is Outcome.CREATED:
        found.notes.append(
            "a 409 (the object exists in V2 without a mapping) would make the task adopt it"
        )
        ends_as(found, verdict, "no_mapping")
    elif outcome is Outcome.UPDATED:
        found.write = puts[-1].body if puts else None
        if found.write is not None:
            changes = field_changes(found.v2_current or {}, found.write, kind.read_only)
            found.changes = [asdict(change) for change in changes]
        reason = f"{len(found.changes)} field(s) differ"
        if _note_settings(found, dry.v2_calls):
            reason += f", {len(found.settings_changes)} setting(s)"
        ends_as(found, verdict, reason)
    elif outcome is Outcome.UNCHANGED:
        ends_as(found, verdict, "v2_up_to_date")
    elif outcome is Outcome.DELETED:
        how = "soft_delete" if report.operation == "PUT" else report.operation
        ends_as(found, verdict, report.reason or how)
    elif outcome is Outcome.RETRYING and report.reason == KEY_LOCKED_REASON:
        ends_as(found, verdict, KEY_LOCKED_REASON)
        found.notes.append("a worker is syncing this key right now: explain it again shortly")
    elif outcome in (Outcome.RETRYING, Outcome.PARKED):
        note_waiting(
            dry, found, report, outcome, "is mapped: the run that writes it enqueues this key"
        )
    elif verdict == Verdict.DEAD_LETTER:
        ends_as(found, verdict, report.error_kind, report.error_message)
    else:
        ends_as(found, verdict, report.reason)
        if report.reason == "tombstoned":
            found.notes.append("deleted in V2 on purpose: `requeue --undelete` re-creates it")


def is_settings(call: V2Call) -> bool:
    """Whether ``call`` is on an object's settings resource (``…/{uid}/settings``)."""
    return call.path.split("?", 1)[0].rstrip("/").endswith(SETTINGS_PATH_SUFFIX)


def _note_settings(found: Explanation, calls: list[V2Call]) -> bool:
    """Fill the settings PUT the run would make and its changes; False when it makes none."""
    puts = [call for call in calls if call.method == "PUT" and is_settings(call)]
    if not puts or puts[-1].body is None:
        return False
    found.settings_write = puts[-1].body
    gets = [c for c in calls if c.method == "GET" and is_settings(c) and c.body is not None]
    current = gets[-1].body if gets and gets[-1].body is not None else {}
    found.settings_current = current
    changes = settings_changes(current, found.settings_write)
    found.settings_changes = [asdict(change) for change in changes]
    return True


def own_uid(report: RunReport) -> str | None:
    """The V2 uid of the run's own object (a member's, else a committee's, else a project's)."""
    return report.member_uid or report.committee_uid or report.project_uid


def _current(calls: list[V2Call], uid: str | None) -> dict[str, Any] | None:
    """The V2 object ``uid`` as the run's last successful GET of it found it."""
    if uid is None:
        return None
    item = "/" + quote(uid, safe="")
    gets = [c for c in calls if c.method == "GET" and c.path.endswith(item) and c.body]
    return gets[-1].body if gets else None


def kv_written(dry: DryRun, bucket: str) -> dict[str, str]:
    """The writes into ``bucket``, key -> the value written last (a removal says so)."""
    written: dict[str, str] = {}
    for write in dry.writes.all():
        if write.target == f"kv:{bucket}":
            written[write.key] = write.value if write.value is not None else f"({write.action})"
    return written


def states_written(dry: DryRun, bucket: str) -> dict[str, Any]:
    """The sync state entries the run would leave changed (the lease's comings and goings
    that cancel out are left out)."""
    changed: dict[str, Any] = {}
    for key, after in dry.nats.overlay(bucket).items():
        before = dry.nats.stored(bucket, key)
        if after.value == before:
            continue
        changed[key] = None if after.value is None else _decoded(after.value)
    return changed


def _decoded(value: bytes) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value.decode("utf-8", "replace")


def _identity(
    runtime: Runtime, calls: list[V2Call], record: dict[str, Any] | None, operation: str | None
) -> dict[str, Any] | None:
    """The identity of the run's V2 calls and where it came from (None: no V2 call)."""
    if not calls:
        return None
    deleting = operation != "PUT" or (record is not None and is_soft_delete(record))
    source_user = deleting_user(record) if deleting else (record or {}).get("lastmodifiedbyid")
    return describe_identity(runtime, calls[0].identity, source_user)


def _note_refusals(found: Explanation, outcome: str | None, revision: int) -> None:
    """A delete V2 may refuse: only sending it tells; say what is known of earlier tries."""
    refused_before = (found.dead_letter or {}).get("error_kind") == DELETE_REFUSED_KIND or (
        outcome == DELETE_REFUSED_KIND and revision == found.revision
    )
    if refused_before:
        letter = found.dead_letter or {}
        found.notes.append(
            "V2 refused this delete before"
            + (f" ({letter['error_message']})" if letter.get("error_message") else "")
            + ": it will refuse again until the object can be deleted in V2; the task then "
            "ends as delete_refused (a dead letter) and keeps the mappings"
        )
    else:
        found.notes.append(
            "V2 may refuse a delete (a 400): a dry run cannot know without sending it; "
            "a refusal is a dead letter delete_refused and the mappings stay"
        )


def _note_pending(found: Explanation, pending: PendingRun | None, retry_max: int) -> None:
    """What the sync state says of an unfinished run of this revision."""
    if pending is None or pending.revision != found.revision:
        return
    if pending.state is RunState.RETRY:
        found.notes.append(
            f"the task is retrying this revision: {pending.attempt} of its tries spent "
            f"(of {retry_max + 1}); the run shown goes on from there"
        )
    elif pending.state is RunState.PARKED:
        found.notes.append(f"the task is parked on {pending.parent_key} (the sync state)")


def _note_durable_state(found: Explanation, outcome: str | None, revision: int) -> None:
    """A task without ``force`` stops at a revision the durable state has settled."""
    if found.revision is None or outcome is None or revision < found.revision:
        return
    if (found.synced_revision or -1) >= found.revision:
        return  # the synced marker's note says it
    found.notes.append(
        f"the sync state has revision {revision} as {outcome}: a task queued by the bridge "
        "stops there; `requeue` / `dlq requeue` force the run shown here"
    )


def describe_identity(
    runtime: Runtime, identity: Identity, last_modified_by: Any
) -> dict[str, Any]:
    """The identity's claims and header, and where the user directory got it from."""
    value = last_modified_by.strip() if isinstance(last_modified_by, str) else ""
    if not value:
        source = "no lastmodifiedbyid: the service's own identity"
    elif value.endswith(MACHINE_SUFFIX):
        source = "machine client, used as it is"
    elif not PLATFORM_ID_PATTERN.fullmatch(value):
        source = "lastmodifiedbyid is not a platform id: the service's own identity"
    else:
        cached, fresh = runtime.users.cached(value)
        if cached is None:
            source = f"V1 user {value}: from the user service (explain does not cache it)"
        else:
            age = "fresh" if fresh else "stale, a worker would refresh it"
            source = f"V1 user {value}: from the cache ({age})"
            if cached.error:
                source += f", lookup failed earlier ({cached.error})"
    return {
        "principal": identity.principal,
        "sub": identity.sub,
        "email": identity.email,
        "on_behalf_of": identity.on_behalf_of,
        "source": source,
    }


def redact(record: dict[str, Any]) -> dict[str, Any]:
    """The V1 record with any credential-like column's value hidden."""
    return {
        name: REDACTED if SECRET_COLUMN.search(name) and value else value
        for name, value in record.items()
    }


def note_waiting(
    dry: DryRun, found: Explanation, report: RunReport, outcome: Outcome, released_when: str
) -> None:
    """The verdict and note of a run that retries on its budget or parks for its parent.

    ``released_when``: how a parked run of this direction goes on ("is mapped: …").
    """
    ends_as(found, VERDICTS[outcome], report.error_kind, report.error_message)
    settings = dry.runtime.settings
    if outcome is Outcome.RETRYING:
        found.notes.append(
            f"transient: retried with backoff (this is try {report.attempt + 1} of "
            f"{settings.sync_retry_max + 1}), dead-lettered as {report.error_kind} if it persists"
        )
        return
    parent = report.pending.parent_key if report.pending is not None else None
    found.notes.append(
        f"parked until {parent} {released_when}; dead-lettered as {report.error_kind} "
        f"after SYNC_PARENT_WAIT={settings.sync_parent_wait:g}s"
    )


def ends_as(
    found: Explanation, outcome: str, reason: str | None, message: str | None = None
) -> Explanation:
    found.outcome, found.reason, found.message = outcome, reason, message
    return found


def _note_synced_marker(found: Explanation) -> None:
    """A task without ``force`` (the bridge's) stops early at a synced revision."""
    if found.revision is not None and (found.synced_revision or -1) >= found.revision:
        found.notes.append(
            f"revision {found.revision} is marked synced: a task queued by the bridge ends as "
            "unchanged without calling V2; `requeue` / `dlq requeue` force the run shown here"
        )
