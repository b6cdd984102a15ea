"""Sync one V1 committee record to the V2 Committee Service.

``project_name__c`` holds the project's sfid: its V2 uid comes from the
mapping ``project.sfid.{sfid}`` (missing: ``MissingMapping``, the task
retries). Create when ``committee.sfid.{sfid}`` is absent, else update from
the current V2 committee with the V1 values on top.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.errors import MissingMapping, StaleRevision
from tasks.identity import Identity
from tasks.mapping import COMMITTEE_READ_ONLY, map_committee, merge_over
from tasks.mapping import needs_update as differs
from tasks.outcomes import Outcome
from tasks.projects import STALE_REVISION_ATTEMPTS, created_uid, log_mapping_warnings
from tasks.report import RunReport
from tasks.runtime import Runtime
from tasks.v2client import V2Service

log = logging.getLogger(__name__)


def sync_committee(
    runtime: Runtime,
    service: V2Service,
    record: dict[str, Any],
    identity: Identity,
    report: RunReport,
) -> Outcome:
    """Create or update the V2 committee of ``record``: ``created``, ``updated``, ``unchanged``."""
    fields = map_committee(record)
    report.sfid = fields.sfid
    log_mapping_warnings(fields.warnings, report)
    project_uid = runtime.mappings.project_uid(fields.project_sfid)
    if project_uid is None:
        raise MissingMapping(
            f"project {fields.project_sfid} of the committee has no V2 uid yet",
            kind="missing_project",
        )
    report.project_uid = project_uid
    body = {**fields.body, "project_uid": project_uid}
    uid = runtime.mappings.committee_uid(fields.sfid)
    if uid is None:
        # A 409 here has no slug to recover by: SlugConflict is permanent, a dead letter.
        uid = created_uid(service.create(body, identity), "committee")
        report.committee_uid = uid
        runtime.mappings.record_committee(fields.sfid, uid)
        return Outcome.CREATED
    report.committee_uid = uid
    stale: StaleRevision | None = None
    for _ in range(STALE_REVISION_ATTEMPTS):
        current = service.get(uid, identity)
        desired = merge_over(current.record, body, COMMITTEE_READ_ONLY)
        if not differs(current.record, desired, COMMITTEE_READ_ONLY):
            return Outcome.UNCHANGED
        try:
            service.update(uid, desired, current.etag, identity)
        except StaleRevision as error:
            stale = error
            log.info("stale ETag, refetching", extra=report.context())
            continue
        runtime.mappings.record_committee(fields.sfid, uid)
        return Outcome.UPDATED
    assert stale is not None
    raise stale
