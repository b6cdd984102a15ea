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

from tasks.clients.identity import Identity
from tasks.clients.v2 import V2Service
from tasks.errors import MissingMapping, PermanentError, SlugConflict, TransientError
from tasks.kinds.parent_cycles import find_parent_problem
from tasks.mapping.projects import PROJECT_READ_ONLY, ProjectFields, default_public, map_project
from tasks.run.report import RunReport
from tasks.run.runtime import Runtime
from tasks.run.settings_resource import project_settings
from tasks.run.upsert import Desired, ObjectKind, log_mapping_warnings, log_more_warnings
from tasks.stores.id_mappings import PROJECT_SFID, PROJECT_UID

log = logging.getLogger(__name__)


class ProjectKind(ObjectKind):
    """Projects in the V2 Project Service."""

    name = "project"
    read_only = PROJECT_READ_ONLY
    sfid_prefix = PROJECT_SFID
    uid_prefix = PROJECT_UID

    def desired(
        self, runtime: Runtime, record: dict[str, Any], identity: Identity, report: RunReport
    ) -> Desired:
        fields = map_project(record)
        report.sfid, report.slug = fields.sfid, fields.slug
        log_mapping_warnings(fields.warnings, report)
        body = project_body(runtime, fields, identity)
        later = resolve_legal_parent(runtime, fields, body)
        settings, settings_warnings = project_settings(runtime, record, report)
        log_more_warnings((*later, *settings_warnings), report)
        return Desired(sfid=fields.sfid, body=body, slug=fields.slug, settings=settings)

    def service(self, runtime: Runtime, desired: Desired) -> V2Service:
        return runtime.projects

    def delete_service(self, runtime: Runtime, uid: str) -> V2Service:
        return runtime.projects

    def mapped_uid(self, runtime: Runtime, desired: Desired) -> str | None:
        return runtime.mappings.project_uid(desired.sfid)

    def record_mappings(self, runtime: Runtime, desired: Desired, uid: str) -> None:
        runtime.mappings.record_project(desired.sfid, desired.slug, uid)

    def adopt_existing(
        self,
        runtime: Runtime,
        desired: Desired,
        identity: Identity,
        report: RunReport,
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
        owner = runtime.mappings.project_sfid(uid)
        if owner is not None and owner != desired.sfid:
            raise PermanentError(
                f"slug {slug!r} belongs to project {uid} of V1 project {owner}",
                kind="slug_taken",
                status=409,
            )
        return uid

    def note_uid(self, report: RunReport, uid: str) -> None:
        report.project_uid = uid

    def check_update(
        self,
        runtime: Runtime,
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
            value = runtime.projects.get(ancestor, identity).record.get("parent_uid")
            return value if isinstance(value, str) and value else None

        problem = find_parent_problem(uid, parent_uid, parent_of, runtime.root_uid())
        if problem is not None:
            raise PermanentError(problem.message, kind=problem.kind)


PROJECTS = ProjectKind()


def resolve_legal_parent(
    runtime: Runtime, fields: ProjectFields, body: dict[str, Any]
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
                f"parent project {fields.parent_sfid} has no V2 uid yet",
                kind="missing_parent",
                parent_key=PROJECT_SFID + fields.parent_sfid,
            )
        body["parent_uid"] = parent_uid
        parent_public = None
        if "public" not in body:
            parent = runtime.projects.get(parent_uid, identity)
            parent_public = parent.record.get("public") is True
    if "public" not in body:
        body["public"] = default_public(body.get("stage"), parent_public)
    return body
