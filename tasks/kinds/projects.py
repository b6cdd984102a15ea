"""V1 projects as an ``ObjectKind`` of the shared create/update path.

Parent first: ``parent_project__c`` through the mapping ``project.sfid.{parent}``
(missing means the parent is probably still queued: ``MissingMapping``), no
parent means ROOT. The legal parent (``parent_entity_relationship__c``) is
resolved the same way (missing: parked, ``missing_legal_parent``; tombstoned:
left out with a warning). Records with a settings column carry the V1-owned
project settings too (``tasks.run.settings_resource``: staff looked up, sent
inside the create or laid over the settings resource after the base).
A 409 on create (the slug exists) adopts the project that
``slug_to_uid`` names, unless it belongs to another V1 project. An update that
moves a project under itself or one of its descendants in V2 is refused
(``parent_cycle``, see ``tasks.kinds.parent_cycles``).
"""

from __future__ import annotations

import logging
from typing import Any

from sync_core.keys import PROJECT_KEYS
from tasks.clients.identity import Identity
from tasks.clients.v2 import V2ServiceSpec
from tasks.errors import MissingMapping, PermanentError, SlugConflict, TransientError
from tasks.kinds.base import (
    Desired,
    KindReport,
    KindRuntime,
    ObjectKind,
    log_mapping_warnings,
    log_more_warnings,
)
from tasks.kinds.parent_cycles import find_parent_problem
from tasks.kinds.staff_lookups import project_settings
from tasks.mapping.projects import PROJECT_READ_ONLY, ProjectFields, default_public, map_project
from tasks.stores.id_mappings import PROJECT_SFID, PROJECT_UID

log = logging.getLogger(__name__)

PROJECT_AUDIENCE = "lfx-v2-project-service"

# PROJECT_SERVICE_URL is required: a worker always has the project service.
PROJECT_SERVICE = V2ServiceSpec(
    name="project",
    collection="projects",
    audience=PROJECT_AUDIENCE,
    url_setting="project_service_url",
    missing_reason="no_project_service",
)


class ProjectKind(ObjectKind):
    """Projects in the V2 Project Service."""

    keys = PROJECT_KEYS
    v2 = PROJECT_SERVICE
    read_only = PROJECT_READ_ONLY
    reference_columns = ("parent_project__c",)
    sfid_prefix = PROJECT_SFID
    uid_prefix = PROJECT_UID
    uid_field = "project_uid"

    def desired(
        self, runtime: KindRuntime, record: dict[str, Any], identity: Identity, report: KindReport
    ) -> Desired:
        fields = map_project(record)
        report.sfid, report.slug = fields.sfid, fields.slug
        log_mapping_warnings(fields.warnings, report)
        body = project_body(runtime, fields, identity)
        later = resolve_legal_parent(runtime, fields, body)
        settings, settings_warnings = project_settings(runtime, record, report)
        log_more_warnings((*later, *settings_warnings), report)
        return Desired(sfid=fields.sfid, body=body, slug=fields.slug, settings=settings)

    def mapped_uid(self, runtime: KindRuntime, desired: Desired) -> str | None:
        return runtime.mappings.project_uid(desired.sfid)

    def record_mappings(self, runtime: KindRuntime, desired: Desired, uid: str) -> None:
        runtime.mappings.record_project(desired.sfid, desired.slug, uid)

    def adopt_existing(
        self,
        runtime: KindRuntime,
        desired: Desired,
        identity: Identity,
        report: KindReport,
        conflict: SlugConflict,
    ) -> str:
        """The project ``slug_to_uid`` names for the slug, unless another V1 project owns it.

        This is the crash-between-POST-and-mapping case. A project whose uid is
        mapped to another sfid belongs to another V1 project: a real slug clash,
        which no retry can fix.
        """
        slug = desired.slug or ""
        uid = runtime.slug_to_uid(slug)
        if uid is None:
            raise TransientError(
                f"create answered 409 but slug {slug!r} is unknown to slug_to_uid",
                kind="conflict_unresolved",
                status=409,
            )
        owner = self.sfid_of(runtime, uid)
        if owner is not None and owner != desired.sfid:
            raise PermanentError(
                f"slug {slug!r} belongs to project {uid} of V1 project {owner}",
                kind="slug_taken",
                status=409,
            )
        return uid

    def check_update(
        self,
        runtime: KindRuntime,
        uid: str,
        current: dict[str, Any],
        merged: dict[str, Any],
        identity: Identity,
    ) -> None:
        """A new parent must not be the project itself or below it in V2 (``parent_cycle``).

        Walks only when the parent changes: an unchanged parent sends nothing new.
        """
        parent_uid = merged.get("parent_uid")
        if not isinstance(parent_uid, str) or parent_uid == current.get("parent_uid"):
            return

        def parent_of(ancestor: str) -> str | None:
            value = self.top_service(runtime).get(ancestor, identity).record.get("parent_uid")
            return value if isinstance(value, str) and value else None

        problem = find_parent_problem(uid, parent_uid, parent_of, runtime.root_uid())
        if problem is not None:
            raise PermanentError(problem.message, kind=problem.kind)


PROJECTS = ProjectKind()


def resolve_legal_parent(
    runtime: KindRuntime, fields: ProjectFields, body: dict[str, Any]
) -> tuple[str, ...]:
    """Put ``legal_parent_uid`` into ``body``, resolved like ``parent_uid``; its warnings.

    A legal parent without a mapping parks the project (``MissingMapping``
    ``missing_legal_parent``), as a missing parent does; one deleted on purpose
    (a tombstoned mapping) is left out with a warning, so V2 keeps its own.
    """
    legal_sfid = fields.legal_parent_sfid
    if legal_sfid is None:
        return ()
    key = PROJECT_SFID + legal_sfid
    if runtime.mappings.is_tombstoned(key):
        return (
            f"legal_parent_uid (from parent_entity_relationship__c): project {legal_sfid} "
            "was deleted from V2; dropped",
        )
    uid = runtime.mappings.project_uid(legal_sfid)
    if uid is None:
        raise MissingMapping(
            f"legal parent project {legal_sfid} has no V2 uid yet",
            kind="missing_legal_parent",
            parent_key=key,
        )
    body["legal_parent_uid"] = uid
    return ()


def project_body(runtime: KindRuntime, fields: ProjectFields, identity: Identity) -> dict[str, Any]:
    """The full V2 body: the mapped fields plus ``parent_uid`` and, when V1 has none, ``public``."""
    body = dict(fields.body)
    if fields.parent_sfid is None:
        body["parent_uid"] = runtime.root_uid()
        parent_public: bool | None = None  # ROOT
    else:
        parent_uid = runtime.mappings.project_uid(fields.parent_sfid)
        if parent_uid is None:
            raise MissingMapping(
                f"parent project {fields.parent_sfid} has no V2 uid yet",
                kind="missing_parent",
                parent_key=PROJECT_SFID + fields.parent_sfid,
            )
        body["parent_uid"] = parent_uid
        parent_public = None
        if "public" not in body:
            parent = PROJECTS.top_service(runtime).get(parent_uid, identity)
            parent_public = parent.record.get("public") is True
    if "public" not in body:
        body["public"] = default_public(body.get("stage"), parent_public)
    return body
