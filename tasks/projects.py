"""Sync one V1 project record to the V2 Project Service.

Parent first: ``parent_project__c`` through the mapping ``project.sfid.{parent}``
(missing means the parent is probably still queued: ``MissingMapping``, the
task retries), no parent means ROOT. Then create when the project has no
mapping, else update: GET, lay the V1 values over the V2 record, PUT with
``If-Match`` only when something changed.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.errors import MissingMapping, PermanentError, SlugConflict, StaleRevision, TransientError
from tasks.identity import Identity
from tasks.mapping import PROJECT_READ_ONLY, ProjectFields, default_public, map_project, merge_over
from tasks.mapping import needs_update as differs
from tasks.outcomes import Outcome
from tasks.report import RunReport
from tasks.runtime import Runtime

log = logging.getLogger(__name__)

# PUTs tried within one run when the ETag went stale in between; then the task retries.
STALE_REVISION_ATTEMPTS = 3


def sync_project(
    runtime: Runtime, record: dict[str, Any], identity: Identity, report: RunReport
) -> Outcome:
    """Create or update the V2 project of ``record``; ``created``, ``updated`` or ``unchanged``."""
    fields = map_project(record)
    report.sfid, report.slug = fields.sfid, fields.slug
    log_mapping_warnings(fields.warnings, report)
    body = project_body(runtime, fields, identity)
    uid = runtime.mappings.project_uid(fields.sfid)
    if uid is None:
        try:
            created = runtime.projects.create(body, identity)
        except SlugConflict:
            uid = recover_by_slug(runtime, fields, report)
        else:
            uid = created_uid(created, "project")
            report.project_uid = uid
            runtime.mappings.record_project(fields.sfid, fields.slug, uid)
            return Outcome.CREATED
    report.project_uid = uid
    return update_project(runtime, uid, fields, body, identity, report)


def project_body(runtime: Runtime, fields: ProjectFields, identity: Identity) -> dict[str, Any]:
    """The full V2 body: the mapped fields plus ``parent_uid`` and, when V1 has none, ``public``."""
    body = dict(fields.body)
    if fields.parent_sfid is None:
        body["parent_uid"] = runtime.root_uid()
        parent_public: bool | None = None  # ROOT
    else:
        parent_uid = runtime.mappings.project_uid(fields.parent_sfid)
        if parent_uid is None:
            raise MissingMapping(
                f"parent project {fields.parent_sfid} has no V2 uid yet", kind="missing_parent"
            )
        body["parent_uid"] = parent_uid
        parent_public = None
        if "public" not in body:
            parent = runtime.projects.get(parent_uid, identity)
            parent_public = parent.record.get("public") is True
    if "public" not in body:
        body["public"] = default_public(body.get("stage"), parent_public)
    return body


def recover_by_slug(runtime: Runtime, fields: ProjectFields, report: RunReport) -> str:
    """After a 409 on create: find the existing project by slug and adopt it.

    This is the crash-between-POST-and-mapping case. A project whose uid is
    mapped to another sfid belongs to another V1 project: that is a real slug
    clash, which no retry can fix.
    """
    uid = runtime.slug_to_uid(fields.slug)
    if uid is None:
        raise TransientError(
            f"create answered 409 but slug {fields.slug!r} is unknown to slug_to_uid",
            kind="conflict_unresolved",
            status=409,
        )
    owner = runtime.mappings.project_sfid(uid)
    if owner is not None and owner != fields.sfid:
        raise PermanentError(
            f"slug {fields.slug!r} belongs to project {uid} of V1 project {owner}",
            kind="slug_taken",
            status=409,
        )
    log.info(
        "adopting the existing V2 project of this slug",
        extra=report.context() | {"project_uid": uid},
    )
    runtime.mappings.record_project(fields.sfid, fields.slug, uid)
    return uid


def update_project(
    runtime: Runtime,
    uid: str,
    fields: ProjectFields,
    body: dict[str, Any],
    identity: Identity,
    report: RunReport,
) -> Outcome:
    """GET, merge, and PUT with ``If-Match`` when something changed; refetch on a stale ETag."""
    stale: StaleRevision | None = None
    for _ in range(STALE_REVISION_ATTEMPTS):
        current = runtime.projects.get(uid, identity)
        desired = merge_over(current.record, body, PROJECT_READ_ONLY)
        if not differs(current.record, desired, PROJECT_READ_ONLY):
            return Outcome.UNCHANGED
        try:
            runtime.projects.update(uid, desired, current.etag, identity)
        except StaleRevision as error:
            stale = error
            log.info("stale ETag, refetching", extra=report.context())
            continue
        runtime.mappings.record_project(fields.sfid, fields.slug, uid)
        return Outcome.UPDATED
    assert stale is not None
    raise stale


def created_uid(created: dict[str, Any], what: str) -> str:
    """The ``uid`` of a V2 create answer; a missing one is a bad answer (transient)."""
    uid = created.get("uid")
    if not isinstance(uid, str) or not uid:
        raise TransientError(f"V2 created the {what} but sent no uid", kind="v2_bad_response")
    return uid


def log_mapping_warnings(warnings: tuple[str, ...], report: RunReport) -> None:
    """One WARNING per value the mapping dropped or changed."""
    for warning in warnings:
        log.warning("V1 value dropped or changed", extra=report.context() | {"detail": warning})
