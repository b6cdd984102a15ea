"""V1 committees as an ``ObjectKind`` of the shared create/update path.

``project_name__c`` holds the project's sfid: its V2 uid comes from the
mapping ``project.sfid.{sfid}`` (missing: ``MissingMapping``). The committee
service is optional (``COMMITTEE_SERVICE_URL``); without it the task skips
committees before they get here.
"""

from __future__ import annotations

from typing import Any

from tasks.errors import MissingMapping, SlugConflict
from tasks.identity import Identity
from tasks.mapping import COMMITTEE_READ_ONLY, map_committee
from tasks.mapping_store import PROJECT_SFID
from tasks.objects import Desired, ObjectKind, log_mapping_warnings
from tasks.report import RunReport
from tasks.runtime import Runtime
from tasks.v2client import V2Service


class CommitteeKind(ObjectKind):
    """Committees in the V2 Committee Service."""

    name = "committee"
    read_only = COMMITTEE_READ_ONLY

    def desired(
        self, runtime: Runtime, record: dict[str, Any], identity: Identity, report: RunReport
    ) -> Desired:
        fields = map_committee(record)
        report.sfid = fields.sfid
        log_mapping_warnings(fields.warnings, report)
        project_uid = runtime.mappings.project_uid(fields.project_sfid)
        if project_uid is None:
            raise MissingMapping(
                f"project {fields.project_sfid} of the committee has no V2 uid yet",
                kind="missing_project",
                parent_key=PROJECT_SFID + fields.project_sfid,
            )
        report.project_uid = project_uid
        return Desired(sfid=fields.sfid, body={**fields.body, "project_uid": project_uid})

    def service(self, runtime: Runtime, desired: Desired) -> V2Service:
        assert runtime.committees is not None  # the task skips committees without the service
        return runtime.committees

    def mapped_uid(self, runtime: Runtime, desired: Desired) -> str | None:
        return runtime.mappings.committee_uid(desired.sfid)

    def record_mappings(self, runtime: Runtime, desired: Desired, uid: str) -> None:
        runtime.mappings.record_committee(desired.sfid, uid)

    def adopt_existing(
        self,
        runtime: Runtime,
        desired: Desired,
        identity: Identity,
        report: RunReport,
        conflict: SlugConflict,
    ) -> str:
        """No way yet to find the committee behind a 409: the conflict is a dead letter."""
        raise conflict

    def note_uid(self, report: RunReport, uid: str) -> None:
        report.committee_uid = uid


COMMITTEES = CommitteeKind()
