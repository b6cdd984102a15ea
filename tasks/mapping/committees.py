"""V1 committees (``platform-collaboration__c``) to V2 committee bodies: the field table, pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync_core.committee_categories import (
    COMBINED_TECHNICAL_CATEGORY,
    COMMITTEE_CATEGORIES,
    TECHNICAL_ADVISORY_CATEGORY,
    TECHNICAL_OVERSIGHT_CATEGORY,
)
from tasks.mapping.values import (
    BodyBuilder,
    FieldSource,
    match_enum,
    required_id,
    required_name,
    show,
)

DEFAULT_COMMITTEE_CATEGORY = "Other"


# A word of the name that makes a combined-category committee the advisory one.
ADVISORY_NAME_WORDS = frozenset({"tac", "advisory"})


NAME_WORD = re.compile(r"[A-Za-z0-9]+")


COMMITTEE_NAME_MAX_CHARS = 100


COMMITTEE_DISPLAY_NAME_MAX_CHARS = 100


COMMITTEE_DESCRIPTION_MAX_CHARS = 2000


COMMITTEE_CHAT_CHANNEL_MAX_CHARS = 500


COMMITTEE_JOIN_MODES: frozenset[str] = frozenset({"open", "invite_only", "application", "closed"})


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
    # The V1-owned fields of the committee's settings resource; None when the record
    # carries no settings column (the settings are then neither read nor written).
    settings: dict[str, Any] | None = None


COMMITTEE_NAME = FieldSource("mailing_list__c", "mailing_list__c")


COMMITTEE_PROJECT = FieldSource("project_name__c", "project_name__c")


COMMITTEE_CATEGORY = FieldSource("type__c", "type__c")


COMMITTEE_DESCRIPTION = FieldSource("description__c", "description__c")


COMMITTEE_DISPLAY_NAME = FieldSource("public_name", "public_name")


COMMITTEE_WEBSITE = FieldSource("committee_website__c", "committee_website__c")


COMMITTEE_MAILING_LIST = FieldSource("mailing_list_email", "mailing_list_email")


COMMITTEE_CHAT_CHANNEL = FieldSource("chat_channel", "chat_channel")


COMMITTEE_JOIN_MODE = FieldSource("join_mode", "join_mode")


# Committee settings (``/committees/{uid}/settings``): V2 field -> V1 column.
COMMITTEE_SETTINGS_BOOL_FIELDS = {
    "business_email_required": FieldSource(
        "business_email_required__c", "business_email_required__c"
    )
}


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
    builder.body["category"] = _committee_category(builder, name)
    builder.put_text(
        "description", COMMITTEE_DESCRIPTION, max_chars=COMMITTEE_DESCRIPTION_MAX_CHARS
    )
    builder.put_text(
        "display_name", COMMITTEE_DISPLAY_NAME, max_chars=COMMITTEE_DISPLAY_NAME_MAX_CHARS
    )
    builder.put_url("website", COMMITTEE_WEBSITE)
    for v2_field, source in COMMITTEE_BOOL_FIELDS.items():
        builder.put_bool(v2_field, source)
    builder.put_email("mailing_list", COMMITTEE_MAILING_LIST)
    builder.put_text(
        "chat_channel",
        COMMITTEE_CHAT_CHANNEL,
        max_chars=COMMITTEE_CHAT_CHANNEL_MAX_CHARS,
        blank_is_absent=True,
    )
    builder.put_enum("join_mode", COMMITTEE_JOIN_MODE, COMMITTEE_JOIN_MODES, blank_is_absent=True)
    return CommitteeFields(
        sfid=sfid,
        project_sfid=project_sfid,
        body=builder.body,
        settings=_committee_settings(record, builder.warnings),
        warnings=tuple(builder.warnings),
    )


def _committee_settings(record: Mapping[str, Any], warnings: list[str]) -> dict[str, Any] | None:
    """The V1-owned committee settings, or None when the record carries no settings column.

    A column that is present but unusable still counts as carried (its warning
    goes to ``warnings``): the settings are then read, and kept as V2 has them.
    """
    if all(
        record.get(source.documented) is None and record.get(source.real) is None
        for source in COMMITTEE_SETTINGS_BOOL_FIELDS.values()
    ):
        return None
    settings = BodyBuilder(record, warnings=warnings)
    for v2_field, source in COMMITTEE_SETTINGS_BOOL_FIELDS.items():
        settings.put_bool(v2_field, source)
    return settings.body


def _committee_category(builder: BodyBuilder, name: str) -> str:
    """``type__c`` as a V2 category; anything else, or nothing, is ``Other``.

    V1's combined TOC/TAC value becomes one of the two by the committee's ``name``
    (``split_technical_category``), with a warning.
    """
    column, value = builder.pick(COMMITTEE_CATEGORY)
    if match_enum(value, frozenset({COMBINED_TECHNICAL_CATEGORY})) is not None:
        category = split_technical_category(name)
        builder.warn("category", column, f"{show(value)} sent as {category!r} (by the name)")
        return category
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


def split_technical_category(name: str) -> str:
    """The half of V1's combined TOC/TAC category a committee called ``name`` belongs to.

    An advisory committee (a word ``TAC`` or ``Advisory`` in the name, any case)
    is the Technical Advisory Committee; any other is the Technical Oversight one.
    """
    words = {word.casefold() for word in NAME_WORD.findall(name)}
    return (
        TECHNICAL_ADVISORY_CATEGORY if words & ADVISORY_NAME_WORDS else TECHNICAL_OVERSIGHT_CATEGORY
    )
