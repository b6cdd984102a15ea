"""V1 committees as an ``ObjectKind`` of the shared create/update path.

``project_name__c`` holds the project's sfid: its V2 uid comes from the
mapping ``project.sfid.{sfid}`` (missing: ``MissingMapping``). The committee
service is optional (``COMMITTEE_SERVICE_URL``); without it the task skips
committees before they get here. A record with ``business_email_required__c``
carries the committee settings (``tasks.run.settings_resource``).
"""

from __future__ import annotations

from typing import Any

from tasks.clients.identity import Identity
from tasks.clients.query_service import adopt_committee
from tasks.clients.v2 import V2Service
from tasks.errors import MissingMapping, PermanentError, SlugConflict
from tasks.mapping.committees import COMMITTEE_READ_ONLY, map_committee
from tasks.run.report import RunReport
from tasks.run.runtime import Runtime
from tasks.run.upsert import Desired, ObjectKind, log_mapping_warnings
from tasks.stores.id_mappings import COMMITTEE_SFID, COMMITTEE_UID, PROJECT_SFID


class CommitteeKind(ObjectKind):
    """Committees in the V2 Committee Service."""

    name = "committee"
    read_only = COMMITTEE_READ_ONLY
    sfid_prefix = COMMITTEE_SFID
    uid_prefix = COMMITTEE_UID

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
        return Desired(
            sfid=fields.sfid,
            body={**fields.body, "project_uid": project_uid},
            settings=fields.settings,
        )

    def service(self, runtime: Runtime, desired: Desired) -> V2Service:
        return self.delete_service(runtime, desired.sfid)

    def delete_service(self, runtime: Runtime, uid: str) -> V2Service:
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
        """The committee of that name in the project (query service), unless another V1 one owns it.

        A committee whose uid is mapped to another sfid belongs to another V1
        committee of the same name in the project: a real clash, no retry fixes it.
        """
        name = desired.body["name"]
        uid = adopt_committee(runtime, desired.body["project_uid"], name, identity, report)
        owner = runtime.mappings.committee_sfid(uid)
        if owner is not None and owner != desired.sfid:
            raise PermanentError(
                f"committee {name!r} of project {desired.body['project_uid']} is V2 committee "
                f"{uid}, already synced from V1 committee {owner}",
                kind="committee_name_taken",
                status=409,
            )
        return uid

    def note_uid(self, report: RunReport, uid: str) -> None:
        report.committee_uid = uid


COMMITTEES = CommitteeKind()
