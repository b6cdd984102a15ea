"""V1 projects (``salesforce-project__c``) to V2 project bodies: the field table, pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.errors import InvalidRecord
from tasks.mapping.record_ids import ID_SHAPES, is_v1_id
from tasks.mapping.values import (
    SLUG_MAX_CHARS,
    SLUG_PATTERN,
    BodyBuilder,
    FieldSource,
    required_id,
    required_name,
    show,
    type_label,
)

PROJECT_STAGES: frozenset[str] = frozenset(
    {
        "Formation - Exploratory",
        "Formation - Engaged",
        "Active",
        "Archived",
        "Formation - On Hold",
        "Formation - Disengaged",
        "Formation - Confidential",
        "Prospect",
    }
)


LEGAL_ENTITY_TYPES: frozenset[str] = frozenset(
    {
        "Subproject",
        "Incorporated Entity",
        "Series LLC",
        "Unofficial Subproject",
        "Internal Allocation",
        "None",
    }
)


PROJECT_CATEGORIES: frozenset[str] = frozenset(
    {
        "Active",
        "Adopted",
        "Archived",
        "At-Large",
        "Early Adoption",
        "Emeritus",
        "Graduated",
        "Growth",
        "Idle",
        "Impact",
        "Incubating",
        "Kanister",
        "Mature",
        "Pre-LFESS",
        "Sandbox",
        "SIG",
        "Standards",
        "TAC",
        "Working Group",
        "TAG",
        "NONE",
    }
)


# What a V1 admin category outside the V2 enum becomes (the reference's rule).
UNKNOWN_PROJECT_CATEGORY = "NONE"


FUNDING_VALUES: frozenset[str] = frozenset({"Funded", "Unfunded", "Supported by Parent Project"})


FUNDING_MODELS: frozenset[str] = frozenset({"Crowdfunding", "Membership", "Alternate Funding"})


# V1 keeps a multi-select picklist as one string, its values joined by ";".
PICKLIST_SEPARATOR = ";"


ACTIVE_STAGE = "Active"


# V2 refuses this stage without an ``entity_dissolution_date``.
ARCHIVED_STAGE = "Archived"


PROJECT_READ_ONLY: frozenset[str] = frozenset({"uid", "created_at", "updated_at"})


@dataclass(frozen=True)
class ProjectFields:
    """A V1 project mapped to V2: the body lacks only ``parent_uid`` (the task resolves it)."""

    sfid: str
    slug: str
    parent_sfid: str | None
    body: dict[str, Any]
    warnings: tuple[str, ...]
    # The legal parent's sfid (``parent_entity_relationship__c``): the task resolves
    # it into ``legal_parent_uid``. None when V1 names none.
    legal_parent_sfid: str | None = None


PROJECT_NAME = FieldSource("name", "name")


PROJECT_SLUG = FieldSource("slug__c", "slug__c")


PROJECT_DESCRIPTION = FieldSource("description__c", "description__c")


PROJECT_PUBLIC = FieldSource("public__c", "public__c")


PROJECT_PARENT = FieldSource("parent_project__c", "parent_project__c")


PROJECT_LEGAL_PARENT = FieldSource("parent_entity_relationship__c", "parent_entity_relationship__c")


PROJECT_CATEGORY = FieldSource("admin_category__c", "admin_category__c")


PROJECT_FUNDING_MODEL = FieldSource("model__c", "model__c")


PROJECT_TEXT_FIELDS = {
    "legal_entity_name": FieldSource("legal_entity_name__c", "project_entity_name__c")
}


PROJECT_DATE_FIELDS = {
    "formation_date": FieldSource("formation_date__c", "start_date__c"),
    "entity_dissolution_date": FieldSource(
        "project_entity_dissolution_date__c", "project_entity_dissolution_date__c"
    ),
}


PROJECT_ENUM_FIELDS = {
    "legal_entity_type": (FieldSource("legal_entity_type__c", "category__c"), LEGAL_ENTITY_TYPES),
    "stage": (FieldSource("stage__c", "project_status__c"), PROJECT_STAGES),
    "funding": (FieldSource("funding__c", "funding__c"), FUNDING_VALUES),
}


# Enum fields of the second release: empty and ``nil`` mean absent (no warning), as
# the reference's rule for the added columns says; the first release's keep theirs.
NEW_ENUM_FIELDS = frozenset({"funding"})


PROJECT_URL_FIELDS = {
    "logo_url": FieldSource("logo_url__c", "project_logo__c"),
    "repository_url": FieldSource("repository_url__c", "repositoryurl__c"),
    "website_url": FieldSource("website_url__c", "website__c"),
    "charter_url": FieldSource("charter_url__c", "charterurl__c"),
    "entity_formation_document_url": FieldSource(
        "project_entity_formation_document__c", "project_entity_formation_document__c"
    ),
}


PROJECT_BOOL_FIELDS = {
    "autojoin_enabled": FieldSource("autojoin_enabled__c", "auto_join_enabled__c")
}


def map_project(record: Mapping[str, Any]) -> ProjectFields:
    """Map a V1 project record to the V2 project body (all but ``parent_uid``).

    ``public`` is in the body only when the record carries ``public__c``; otherwise
    the task decides with ``default_public``. Raises ``InvalidRecord`` when the sfid,
    name or slug is missing or unusable, or the parent sfid is not an id.
    """
    sfid = required_id(record, "sfid", "project")
    builder = BodyBuilder(record)
    builder.body["name"] = required_name(builder, "name", PROJECT_NAME, "project", sfid)
    slug = _project_slug(record, sfid)
    builder.body["slug"] = slug
    builder.body["description"] = _project_description(builder)
    builder.put_bool("public", PROJECT_PUBLIC)
    for v2_field, source in PROJECT_TEXT_FIELDS.items():
        builder.put_text(v2_field, source)
    for v2_field, source in PROJECT_DATE_FIELDS.items():
        builder.put_date(v2_field, source)
    for v2_field, (source, allowed) in PROJECT_ENUM_FIELDS.items():
        builder.put_enum(v2_field, source, allowed, blank_is_absent=v2_field in NEW_ENUM_FIELDS)
    for v2_field, source in PROJECT_URL_FIELDS.items():
        builder.put_url(v2_field, source)
    for v2_field, source in PROJECT_BOOL_FIELDS.items():
        builder.put_bool(v2_field, source)
    builder.put_enum_or(
        "category",
        PROJECT_CATEGORY,
        PROJECT_CATEGORIES,
        UNKNOWN_PROJECT_CATEGORY,
        blank_is_absent=True,
    )
    _put_funding_model(builder)
    _check_archived_stage(builder)
    legal_parent_sfid = _legal_parent_sfid(builder, sfid)
    return ProjectFields(
        sfid=sfid,
        slug=slug,
        parent_sfid=_parent_sfid(record, sfid),
        body=builder.body,
        warnings=tuple(builder.warnings),
        legal_parent_sfid=legal_parent_sfid,
    )


def default_public(stage: str | None, parent_public: bool | None) -> bool:
    """Whether a project without ``public__c`` is public in V2.

    True only when its stage is ``Active`` and its parent is ROOT (``parent_public``
    None) or a public project.
    """
    return stage == ACTIVE_STAGE and (parent_public is None or parent_public is True)


def _project_slug(record: Mapping[str, Any], sfid: str) -> str:
    """The V1 slug trimmed and lower-cased; InvalidRecord when V2 would reject it."""
    value = record.get(PROJECT_SLUG.documented)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecord(f"project {sfid}: slug__c missing or not a string ({show(value)})")
    slug = value.strip().lower()
    if len(slug) > SLUG_MAX_CHARS:
        raise InvalidRecord(
            f"project {sfid}: slug__c is {len(slug)} characters, more than {SLUG_MAX_CHARS}"
        )
    if not SLUG_PATTERN.fullmatch(slug):
        raise InvalidRecord(
            f"project {sfid}: slug__c {show(value)} does not match {SLUG_PATTERN.pattern}"
        )
    return slug


def _project_description(builder: BodyBuilder) -> str:
    """The description, ``""`` when null (V2 requires the field)."""
    column, value = builder.pick(PROJECT_DESCRIPTION)
    if value is None:
        return ""
    if not isinstance(value, str):
        builder.warn("description", column, f"{type_label(value)} is not a string; sent as ''")
        return ""
    return value


def _put_funding_model(builder: BodyBuilder) -> None:
    """``model__c`` split on ``;`` into V2 funding models; a part outside the enum is dropped.

    Parts are trimmed and matched loosely; duplicates go. A column with no usable
    part leaves the field out (V2 keeps its own).
    """
    column, value = builder.pick(PROJECT_FUNDING_MODEL)
    if value is None:
        return
    if not isinstance(value, str):
        builder.warn("funding_model", column, f"{type_label(value)} is not a string; dropped")
        return
    models: list[str] = []
    for part in value.split(PICKLIST_SEPARATOR):
        if not part.strip() or part.strip().casefold() == "nil":
            continue
        model = builder.enum_member("funding_model", column, part.strip(), FUNDING_MODELS)
        if model is None:
            builder.warn(
                "funding_model", column, f"{show(part.strip())} is not a V2 funding model; dropped"
            )
        elif model not in models:
            models.append(model)
    if models:
        builder.body["funding_model"] = models


def _check_archived_stage(builder: BodyBuilder) -> None:
    """Drop ``stage: Archived`` (warning) when there is no ``entity_dissolution_date``.

    V2 refuses the whole body otherwise; without the stage the rest still syncs
    and V2 keeps its own stage.
    """
    if (
        builder.body.get("stage") == ARCHIVED_STAGE
        and "entity_dissolution_date" not in builder.body
    ):
        column, _ = builder.pick(PROJECT_ENUM_FIELDS["stage"][0])
        builder.warn(
            "stage", column, "'Archived' needs an entity_dissolution_date V1 lacks; dropped"
        )
        del builder.body["stage"]


def _legal_parent_sfid(builder: BodyBuilder, sfid: str) -> str | None:
    """The legal parent's sfid; not an id, or the project itself, is dropped (warning)."""
    column, value = builder.pick(PROJECT_LEGAL_PARENT)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not is_v1_id(value.strip()):
        builder.warn("legal_parent_uid", column, f"{show(value)} is not {ID_SHAPES}; dropped")
        return None
    if value.strip() == sfid:
        builder.warn("legal_parent_uid", column, "is the project itself; dropped")
        return None
    return value.strip()


def _parent_sfid(record: Mapping[str, Any], sfid: str) -> str | None:
    """The parent's sfid, or None for a project that goes under ROOT."""
    value = record.get(PROJECT_PARENT.documented)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not is_v1_id(value.strip()):
        raise InvalidRecord(f"project {sfid}: parent_project__c {show(value)} is not {ID_SHAPES}")
    value = value.strip()
    if value == sfid:
        raise InvalidRecord(f"project {sfid}: parent_project__c is the project itself")
    return value
