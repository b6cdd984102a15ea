"""V1 committees as an ``ObjectKind`` of the shared create/update path.

``project_name__c`` holds the project's sfid: its V2 uid comes from the
mapping ``project.sfid.{sfid}`` (missing: ``MissingMapping``). The committee
service is optional (``COMMITTEE_SERVICE_URL``); without it the task skips
committees (and their members) before they get here. A 409 on create (the
name exists in the project) adopts the committee the V2 query service lists
(``tasks.clients.query_service``), unless it belongs to another V1 committee. A record with
``business_email_required__c`` carries the committee settings
(``tasks.run.settings_resource``).
"""

from __future__ import annotations

import logging
from typing import Any

from sync_core.keys import COMMITTEE_KEYS
from tasks.clients.identity import Identity
from tasks.clients.query_service import find_committee
from tasks.clients.v2 import V2ServiceSpec
from tasks.errors import MissingMapping, PermanentError, SlugConflict, TransientError
from tasks.kinds.base import (
    Desired,
    KindReport,
    KindRuntime,
    ObjectKind,
    log_mapping_warnings,
)
from tasks.mapping.committees import COMMITTEE_READ_ONLY, map_committee
from tasks.stores.id_mappings import COMMITTEE_SFID, COMMITTEE_UID, PROJECT_SFID

log = logging.getLogger(__name__)

COMMITTEE_AUDIENCE = "lfx-v2-committee-service"

# COMMITTEE_SERVICE_URL is optional: committees and members are skipped without it.
COMMITTEE_SERVICE = V2ServiceSpec(
    name="committee",
    collection="committees",
    audience=COMMITTEE_AUDIENCE,
    url_setting="committee_service_url",
    missing_reason="no_committee_service",
)


class CommitteeKind(ObjectKind):
    """Committees in the V2 Committee Service."""

    keys = COMMITTEE_KEYS
    v2 = COMMITTEE_SERVICE
    read_only = COMMITTEE_READ_ONLY
    reference_columns = ("project_name__c",)
    sfid_prefix = COMMITTEE_SFID
    uid_prefix = COMMITTEE_UID
    uid_field = "committee_uid"

    def desired(
        self, runtime: KindRuntime, record: dict[str, Any], identity: Identity, report: KindReport
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

    def mapped_uid(self, runtime: KindRuntime, desired: Desired) -> str | None:
        return runtime.mappings.committee_uid(desired.sfid)

    def record_mappings(self, runtime: KindRuntime, desired: Desired, uid: str) -> None:
        runtime.mappings.record_committee(desired.sfid, uid)

    def adopt_existing(
        self,
        runtime: KindRuntime,
        desired: Desired,
        identity: Identity,
        report: KindReport,
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


COMMITTEES = CommitteeKind()


def adopt_committee(
    runtime: KindRuntime, project_uid: str, name: str, identity: Identity, report: KindReport
) -> str:
    """After a 409 on create: the uid of the committee V2 already has, to adopt.

    Without ``QUERY_SERVICE_URL``: a ``PermanentError`` whose message says what
    happened and what to do. Not listed yet: a ``TransientError``, retried with
    backoff while the index catches up.
    """
    if runtime.query is None:
        raise PermanentError(
            f"V2 already has a committee named {name!r} in project {project_uid} (409 on "
            "create, usually a create whose answer was lost), and QUERY_SERVICE_URL is not "
            "set, so its uid cannot be looked up. Set QUERY_SERVICE_URL to the V2 query "
            "service and re-queue this dead letter (dlq requeue), or write the "
            "committee's mapping by hand.",
            kind="committee_conflict",
        )
    uid = find_committee(runtime.query, project_uid, name, identity)
    if uid is None:
        raise TransientError(
            f"V2 answered 409 for committee {name!r} in project {project_uid}, but the "
            "query service does not list it yet (its index is eventually consistent)",
            kind="committee_not_indexed",
        )
    log.info(
        "found the existing committee through the query service",
        extra=report.context() | {"committee_uid": uid},
    )
    return uid
