"""The one create/update path every V2 object type goes through.

A type plugs in as an ``ObjectKind`` (``tasks.kinds``): how to map its V1 record
to the full V2 body (``desired``), which V2 collection holds it, how its
mappings are read and written, and how a 409 on create is resolved. ``upsert``
then does the same thing for all of them, the Kubernetes-controller way
(observe, compare, act):

- the object moved (a member to another committee: ``kind.moved_from``): it is
  deleted where it was (its old reverse mapping tombstoned), then created anew;
- no mapping: ``POST``; a 409 means the object exists (usually a create whose
  answer was lost): the kind finds and adopts it, then it is updated like any
  other;
- a mapping: ``GET`` with its ETag, lay the V1 values over the V2 record (V2-only
  fields kept), ``PUT`` with ``If-Match`` only when something changed; a stale
  ETag refetches, up to ``STALE_REVISION_ATTEMPTS`` times in one run;
- settings (``Desired.settings``, records with a settings column only): inside
  the create's POST, or after the base's update the same GET/merge/PUT on the
  object's settings resource (``tasks.run.settings_resource``).

The mappings are written after the V2 write that needs them, so a run killed
in between leaves V2 ahead of the mappings, never the reverse: the next run's
409 (or its GET) repairs it.

``delete_object`` is the one delete path: mapped uid -> ``GET`` for the ETag ->
``DELETE`` with ``If-Match``. 204 and 404 (already gone) both end ``deleted``
and tombstone the forward and reverse mappings (``!del``); a stale ETag
refetches; a 400 that is not a stale ETag is V2 refusing the delete
(``DeleteRefused``: a dead letter, mappings kept). The tombstones are written
after the V2 delete, so a run killed in between deletes again and finds 404.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tasks.clients.identity import Identity
from tasks.clients.v2 import V2Service
from tasks.errors import DeleteRefused, PermanentError, SlugConflict, StaleRevision, TransientError
from tasks.kinds.base import Desired, ObjectKind
from tasks.mapping.merge import merge_over, needs_update
from tasks.run.outcomes import Outcome
from tasks.run.report import RunReport
from tasks.run.runtime import Runtime
from tasks.run.settings_resource import create_body, sync_settings

log = logging.getLogger(__name__)

# PUTs tried within one run when the ETag went stale in between; then the task retries.
STALE_REVISION_ATTEMPTS = 3
ALREADY_GONE_REASON = "already_gone"
NOT_FOUND_STATUS = 404
REFUSED_STATUS = 400


def sync_record(
    runtime: Runtime,
    kind: ObjectKind,
    record: dict[str, Any],
    identity: Identity,
    report: RunReport,
) -> Outcome:
    """Map ``record`` and bring its V2 object in line: ``created``, ``updated`` or ``unchanged``."""
    desired = kind.desired(runtime, record, identity, report)
    report.body = desired.body
    return upsert(runtime, kind, desired, identity, report)


def upsert(
    runtime: Runtime, kind: ObjectKind, desired: Desired, identity: Identity, report: RunReport
) -> Outcome:
    """Create the object when it has no mapping, else update it (see the module doc)."""
    moved = kind.moved_from(runtime, desired)
    if moved is not None:
        log.info(
            "the object moves: deleting it where it was",
            extra=report.context() | dict(moved.context),
        )
        # Gone already is fine: the forward mapping is rewritten by the create below.
        _delete_with_etag(moved.service, moved.uid, identity, report)
        runtime.mappings.tombstone([kind.uid_prefix + moved.uid])
    service = kind.service(runtime, desired)
    uid = kind.mapped_uid(runtime, desired)
    if uid is None:
        body = create_body(desired.body, desired.settings)
        try:
            created = service.create(body, identity)
        except SlugConflict as conflict:
            uid = kind.adopt_existing(runtime, desired, identity, report, conflict)
            kind.note_uid(report, uid)
            log.info("adopting the existing V2 object", extra=report.context())
            kind.record_mappings(runtime, desired, uid)
        else:
            uid = created_uid(created, kind.name)
            report.written = as_stored(created, body)
            kind.note_uid(report, uid)
            kind.record_mappings(runtime, desired, uid)
            return Outcome.CREATED
    kind.note_uid(report, uid)
    outcome = update_existing(runtime, kind, service, uid, desired, identity, report)
    if desired.settings is not None and sync_settings(
        service, uid, desired.settings, identity, report
    ):
        return Outcome.UPDATED
    return outcome


def update_existing(
    runtime: Runtime,
    kind: ObjectKind,
    service: V2Service,
    uid: str,
    desired: Desired,
    identity: Identity,
    report: RunReport,
) -> Outcome:
    """GET, merge, and PUT with ``If-Match`` when something changed; refetch on a stale ETag."""
    stale: StaleRevision | None = None
    for _ in range(STALE_REVISION_ATTEMPTS):
        current = service.get(uid, identity)
        merged = planned_update(current.record, desired.body, kind.read_only)
        if merged is None:
            return Outcome.UNCHANGED
        kind.check_update(runtime, uid, current.record, merged, identity)
        try:
            answer = service.update(uid, merged, current.etag, identity)
        except StaleRevision as error:
            stale = error
            log.info("stale ETag, refetching", extra=report.context())
            continue
        report.written = as_stored(answer, merged)
        kind.record_mappings(runtime, desired, uid)
        return Outcome.UPDATED
    assert stale is not None
    raise stale


def planned_update(
    current: dict[str, Any], body: dict[str, Any], read_only: frozenset[str]
) -> dict[str, Any] | None:
    """The PUT body that lays ``body`` over the ``current`` V2 record, or None when unchanged."""
    merged = merge_over(current, body, read_only)
    return merged if needs_update(current, merged, read_only) else None


def delete_object(
    runtime: Runtime,
    kind: ObjectKind,
    sfid: str,
    identity: Identity,
    report: RunReport,
) -> Outcome:
    """Delete the V2 object mapped to ``sfid`` (see the module doc); ``deleted``.

    The caller checks first that a mapping exists (``not_in_v2`` otherwise).
    ``report.reason`` becomes ``already_gone`` when V2 no longer had it. Raises
    ``DeleteRefused`` when V2 refuses, ``StaleRevision`` after
    ``STALE_REVISION_ATTEMPTS`` stale ETags, and the usual ``SyncError`` for the rest.
    """
    place = kind.locate(runtime, sfid)
    if place is None:
        raise PermanentError(f"{kind.name} {sfid} has no V2 uid to delete", kind="not_in_v2")
    uid = place.uid
    kind.note_uid(report, uid)
    if _delete_with_etag(place.service, uid, identity, report):
        report.reason = ALREADY_GONE_REASON
        log.info("V2 object was already gone", extra=report.context())
    runtime.mappings.tombstone(kind.tombstone_keys(sfid, uid))
    return Outcome.DELETED


def _delete_with_etag(service: V2Service, uid: str, identity: Identity, report: RunReport) -> bool:
    """GET the ETag and DELETE with ``If-Match``; True when the object was already gone."""
    stale: StaleRevision | None = None
    for _ in range(STALE_REVISION_ATTEMPTS):
        try:
            current = service.get(uid, identity)
            service.delete(uid, current.etag, identity)
        except StaleRevision as error:
            stale = error
            log.info("stale ETag on delete, refetching", extra=report.context())
            continue
        except PermanentError as error:
            if error.status == NOT_FOUND_STATUS:
                return True
            if error.status == REFUSED_STATUS:
                raise DeleteRefused(
                    f"V2 refused to delete {service.service} {uid}: "
                    f"{v2_message(error.body_excerpt)}",
                    status=error.status,
                    body_excerpt=error.body_excerpt,
                ) from None
            raise
        return False
    assert stale is not None
    raise stale


def v2_message(body: str | None) -> str:
    """The ``message`` of a V2 error body, or the body itself when it is not JSON."""
    if not body:
        return "(no message)"
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return body.strip()


def as_stored(answer: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """What V2 holds after a write: its answer, or what was sent when it answered nothing.

    V2 fills in values of its own (defaults, normalized text) that its indexer
    event carries; the V2 -> V1 echo guard compares that event with this.
    """
    return answer if answer else sent


def created_uid(created: dict[str, Any], what: str) -> str:
    """The ``uid`` of a V2 create answer; a missing one is a bad answer (transient)."""
    uid = created.get("uid")
    if not isinstance(uid, str) or not uid:
        raise TransientError(f"V2 created the {what} but sent no uid", kind="v2_bad_response")
    return uid
