"""V1 committees (``platform-collaboration__c``) to V2 committee bodies: the field table, pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.mapping.values import BodyBuilder, FieldSource, required_id, required_name, show

COMMITTEE_CATEGORIES: frozenset[str] = frozenset(
    {
        "Ambassador",
        "Board",
        "Code of Conduct",
        "Committers",
        "Expert Group",
        "Finance Committee",
        "Government Advisory Council",
        "Legal Committee",
        "Maintainers",
        "Marketing Committee/Sub Committee",
        "Marketing Mailing List",
        "Marketing Oversight Committee/Marketing Advisory Committee",
        "Other",
        "Product Security",
        "Special Interest Group",
        "Technical Mailing List",
        "Technical Oversight Committee/Technical Advisory Committee",
        "Technical Steering Committee",
        "Working Group",
    }
)


DEFAULT_COMMITTEE_CATEGORY = "Other"


COMMITTEE_NAME_MAX_CHARS = 100


COMMITTEE_DISPLAY_NAME_MAX_CHARS = 100


COMMITTEE_DESCRIPTION_MAX_CHARS = 2000


COMMITTEE_READ_ONLY: frozenset[str] = frozenset(
    {"uid", "sso_group_name", "project_name", "total_members", "created_at", "updated_at"}
)


@dataclass(frozen=True)
class CommitteeFields:
    """A V1 committee mapped to V2: the body lacks only ``project_uid``."""

    sfid: str
    project_sfid: str
    body: dict[str, Any]
    warnings: tuple[str, ...]


COMMITTEE_NAME = FieldSource("mailing_list__c", "mailing_list__c")


COMMITTEE_PROJECT = FieldSource("project_name__c", "project_name__c")


COMMITTEE_CATEGORY = FieldSource("type__c", "type__c")


COMMITTEE_DESCRIPTION = FieldSource("description__c", "description__c")


COMMITTEE_DISPLAY_NAME = FieldSource("public_name", "public_name")


COMMITTEE_WEBSITE = FieldSource("committee_website__c", "committee_website__c")


COMMITTEE_BOOL_FIELDS = {
    "enable_voting": FieldSource("enable_voting__c", "enable_voting__c"),
    "public": FieldSource("public_enabled", "public_enabled"),
    "sso_group_enabled": FieldSource("sso_group_enabled", "sso_group_enabled"),
}


def map_committee(record: Mapping[str, Any]) -> CommitteeFields:
    """Map a V1 committee record to the V2 committee body (all but ``project_uid``).

    Never sends ``is_audit`` or ``sso_group_name`` (V2 owns the latter). Raises
    ``InvalidRecord`` when the sfid, name or project sfid is missing or unusable.
    """
    sfid = required_id(record, "sfid", "committee")
    project_sfid = required_id(record, COMMITTEE_PROJECT.documented, f"committee {sfid}")
    builder = BodyBuilder(record)
    name = required_name(builder, "name", COMMITTEE_NAME, "committee", sfid)
    builder.body["name"] = builder.truncate(
        "name", COMMITTEE_NAME.documented, name, COMMITTEE_NAME_MAX_CHARS
    )
    builder.body["category"] = _committee_category(builder)
    builder.put_text(
        "description", COMMITTEE_DESCRIPTION, max_chars=COMMITTEE_DESCRIPTION_MAX_CHARS
    )
    builder.put_text(
        "display_name", COMMITTEE_DISPLAY_NAME, max_chars=COMMITTEE_DISPLAY_NAME_MAX_CHARS
    )
    builder.put_url("website", COMMITTEE_WEBSITE)
    for v2_field, source in COMMITTEE_BOOL_FIELDS.items():
        builder.put_bool(v2_field, source)
    return CommitteeFields(
        sfid=sfid, project_sfid=project_sfid, body=builder.body, warnings=tuple(builder.warnings)
    )


def _committee_category(builder: BodyBuilder) -> str:
    """``type__c`` as a V2 category; anything else, or nothing, is ``Other``."""
    column, value = builder.pick(COMMITTEE_CATEGORY)
    member = (
        None
        if value is None
        else builder.enum_member("category", column, value, COMMITTEE_CATEGORIES)
    )
    if member is None:
        builder.warn(
            "category",
            column,
            f"{show(value)} is not a V2 category; sent as {DEFAULT_COMMITTEE_CATEGORY!r}",
        )
        return DEFAULT_COMMITTEE_CATEGORY
    return member
