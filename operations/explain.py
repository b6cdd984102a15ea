"""``explain KEY``: what a sync of one key would do, without doing it.

A dry run through the task's own code: the decisions of ``tasks.run.decisions``,
the ``ObjectKind`` of the key's type (mapping, parent resolution, mappings),
the user directory and the V2 client. Nothing is written anywhere:

- the mappings go through ``DryRunMappings``, which records what is read and
  keeps what the kind would write instead of writing it;
- the user directory runs with ``cache_writes=False`` (cache read only, no
  lock, a missing user fetched and not cached);
- V2 sees only GETs (the current object, a parent's ``public``), with a token
  minted for the identity the task would use; Redis is only read (the synced
  marker, the key's dead letter).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from operations.current_keys import lookup_change
from sync_core.broker import task_id_for
from sync_core.keys import ObjectType, parse_key
from sync_core.nats_client import SyncNats
from sync_core.settings import WorkerSettings
from tasks.clients.auth0 import token_source_from_settings
from tasks.clients.identity import MACHINE_SUFFIX, Identity
from tasks.clients.organizations import organization_directory_from_settings
from tasks.clients.query_service import query_service
from tasks.clients.tokens import minter_from_settings
from tasks.clients.users import PLATFORM_ID_PATTERN, user_directory_from_settings
from tasks.clients.v2 import committee_service, project_service
from tasks.errors import DELETE_BUDGET_EXCEEDED_KIND, SyncError
from tasks.mapping.merge import field_changes
from tasks.mapping.record_ids import check_key_id
from tasks.run.decisions import delete_skip, read_value, should_retry, skip_for_key
from tasks.run.deletes import DeleteBudget, delete_identity, deleting_user
from tasks.run.report import OTHER_OBJECT_TYPE, RunReport
from tasks.run.runtime import Runtime, redis_client_for
from tasks.run.sync import DELETE_OPERATIONS, KINDS, synced_revision
from tasks.run.upsert import ALREADY_GONE_REASON, Desired, ObjectKind, planned_update
from tasks.stores.dead_letters import DeadLetterStore
from tasks.stores.id_mappings import MappingStore
from tasks.stores.sync_state import StateStore

NATS_CLIENT_NAME = "v1-sync-helper-explain"
# What a create's mappings point at before V2 has answered with the uid.
NEW_UID = "<uid from the create answer>"
REDACTED = "<redacted>"
HTTP_NOT_FOUND = 404
# V1 tables hold no credentials; should a column ever look like one, it is not shown.
SECRET_COLUMN = re.compile(r"password|secret|token|api_?key|private_?key", re.IGNORECASE)


class Verdict:
    """The outcomes ``explain`` reports (what the task's run would end in)."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    DELETE = "delete"
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"
    SKIP = "skip"


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
    synced_revision: int | None = None
    dead_letter: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DryRunMappings(MappingStore):
    """The mapping store of a dry run: reads are recorded, writes are kept, not sent."""

    def __init__(self, nats: SyncNats, bucket: str) -> None:
        super().__init__(nats, bucket)
        self.reads: dict[str, str | None] = {}
        self.writes: dict[str, str] = {}

    def read(self, key: str) -> str | None:
        value = super().read(key)
        self.reads[key] = value
        return value

    def clear_tombstone(self, key: str) -> bool:
        cleared = self.is_tombstoned(key)
        if cleared:
            self.writes[key] = "(tombstone removed)"
        return cleared

    def put(self, key: str, value: str) -> None:
        self.writes[key] = value

    def put_many(self, values: dict[str, str]) -> None:
        self.writes.update(values)


def open_dry_runtime(settings: WorkerSettings) -> Runtime:
    """A worker ``Runtime`` that cannot write: dry-run mappings, read-only caches.

    The state store and dead letters are only read by ``explain_key``.
    """
    nats = SyncNats(settings.nats_url, NATS_CLIENT_NAME)
    try:
        redis_client = redis_client_for(settings.redis_url)
        minter = minter_from_settings(settings)
        auth0 = token_source_from_settings(settings)
        return Runtime(
            settings=settings,
            nats=nats,
            redis=redis_client,
            minter=minter,
            projects=project_service(settings, minter),
            committees=committee_service(settings, minter),
            query=query_service(settings, minter),
            users=user_directory_from_settings(settings, nats, auth0, cache_writes=False),
            organizations=organization_directory_from_settings(
                settings, nats, auth0, cache_writes=False
            ),
            mappings=DryRunMappings(nats, settings.v1_mappings_bucket),
            dead_letters=DeadLetterStore(nats, settings.sync_state_bucket),
            state=StateStore(nats, settings.sync_state_bucket),
        )
    except BaseException:
        nats.close()
        raise


class UnknownKey(LookupError):
    """The key was never in ``v1-objects``."""


def explain_key(runtime: Runtime, key: str) -> Explanation:
    """What a task for the key's current revision would do (``UnknownKey`` if there is none)."""
    assert isinstance(runtime.mappings, DryRunMappings), "explain needs a dry-run runtime"
    found = Explanation(key=key)
    object_type, _ = parse_key(key)
    if object_type is not None:
        found.object_type = object_type.value
    skip = skip_for_key(object_type, runtime.committees is not None)
    if skip is not None:
        return _ends(found, Verdict.SKIP, skip.reason)
    assert object_type is not None
    bucket = runtime.nats.kv(runtime.settings.v1_objects_bucket)
    change = runtime.nats.run(lookup_change(bucket, key))
    if change is None:
        raise UnknownKey(f"{key} is not in {runtime.settings.v1_objects_bucket}")
    found.revision, found.operation = change.revision, change.operation
    found.synced_revision = synced_revision(runtime, key, runtime.objects_epoch.current())
    letter = runtime.dead_letters.get(task_id_for(key, change.revision))
    if letter is not None:
        found.dead_letter = asdict(letter)
    report = RunReport(key=key, revision=change.revision, operation=change.operation)
    report.object_type = object_type.value
    try:
        _explain_change(runtime, found, report, KINDS[object_type])
    except SyncError as error:
        found.warnings = list(report.warnings)
        retry_max = runtime.settings.sync_retry_max
        if should_retry(error, 0, retry_max):
            _ends(found, Verdict.RETRY, error.kind, error.message)
            found.notes.append(
                f"transient: retried with backoff, dead-lettered as {error.kind} "
                f"after {retry_max} retries if it persists"
            )
        else:
            _ends(found, Verdict.DEAD_LETTER, error.kind, error.message)
    found.mappings_read = dict(runtime.mappings.reads)
    found.mappings_written = dict(runtime.mappings.writes)
    _note_synced_marker(found)
    return found


def _explain_change(
    runtime: Runtime, found: Explanation, report: RunReport, kind: ObjectKind
) -> None:
    """The task's steps after the freshness checks, reading only (raises ``SyncError``)."""
    if report.operation in DELETE_OPERATIONS:
        _explain_delete(runtime, found, report, kind, None)
        return
    entry = runtime.nats.kv_get(runtime.settings.v1_objects_bucket, report.key)
    reading = read_value(
        bytes(entry.value or b"") if entry is not None else b"",
        ObjectType(report.object_type),
        check_key_id(report.key),
    )
    if reading.skip is not None:
        _ends(found, Verdict.SKIP, reading.skip.reason)
        return
    record = reading.record or {}
    found.record = redact(record)
    if reading.soft_delete:
        _explain_delete(runtime, found, report, kind, record)
        return
    _, sfid = parse_key(report.key)
    if runtime.mappings.is_tombstoned(kind.sfid_prefix + sfid):
        _ends(found, Verdict.SKIP, "tombstoned")
        found.notes.append("deleted in V2 on purpose: `requeue --undelete` re-creates it")
        return
    last_modified_by = record.get("lastmodifiedbyid")
    identity = runtime.identity_for(last_modified_by)
    found.identity = describe_identity(runtime, identity, last_modified_by)
    desired = kind.desired(runtime, record, identity, report)
    found.warnings = list(report.warnings)
    found.body = desired.body
    service = kind.service(runtime, desired)
    uid = kind.mapped_uid(runtime, desired)
    if uid is None:
        kind.record_mappings(runtime, desired, NEW_UID)
        found.notes.append(
            "a 409 (the object exists in V2 without a mapping) would make the task adopt it"
        )
        _ends(found, Verdict.CREATE, "no_mapping")
        return
    found.v2_uid = uid
    current = service.get(uid, identity)
    found.v2_current = current.record
    write = planned_update(current.record, desired.body, kind.read_only)
    if write is None:
        _ends(found, Verdict.UNCHANGED, "v2_up_to_date")
        return
    found.write = write
    found.changes = [asdict(c) for c in field_changes(current.record, write, kind.read_only)]
    kind.record_mappings(runtime, desired, uid)
    _ends(found, Verdict.UPDATE, f"{len(found.changes)} field(s) differ")


def _explain_delete(
    runtime: Runtime,
    found: Explanation,
    report: RunReport,
    kind: ObjectKind,
    record: dict[str, Any] | None,
) -> None:
    """A hard (``record`` None) or soft delete: the decisions of ``tasks.run.deletes``."""
    _, sfid = parse_key(report.key)
    forward = kind.sfid_prefix + sfid
    tombstoned = runtime.mappings.is_tombstoned(forward)
    uid = None if tombstoned else runtime.mappings.get(forward)
    skip = delete_skip(tombstoned, uid is not None, runtime.settings.sync_deletes)
    if skip is not None:
        _ends(found, Verdict.SKIP, skip.reason)
        return
    assert uid is not None
    found.v2_uid = uid
    identity = delete_identity(runtime, record)
    found.identity = describe_identity(runtime, identity, deleting_user(record))
    budget = DeleteBudget(runtime.redis, runtime.settings.sync_delete_budget)
    if budget.used() >= budget.budget:
        _ends(found, Verdict.DEAD_LETTER, DELETE_BUDGET_EXCEEDED_KIND)
        found.notes.append("the hour's delete budget looks spent; `dlq requeue` releases it")
        return
    service = kind.service(runtime, Desired(sfid=sfid, body={}))
    try:
        found.v2_current = service.get(uid, identity).record
    except SyncError as error:
        if error.status != HTTP_NOT_FOUND:
            raise
        _ends(found, Verdict.DELETE, ALREADY_GONE_REASON)  # the task tombstones it all the same
        runtime.mappings.tombstone(kind.tombstone_keys(sfid, uid))
        return
    runtime.mappings.tombstone(kind.tombstone_keys(sfid, uid))
    _ends(found, Verdict.DELETE, "soft_delete" if record is not None else report.operation)


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


def _ends(
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
