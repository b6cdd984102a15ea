"""V1 committee members (``platform-community__c``) to V2 member bodies: the field table, pure."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.errors import InvalidRecord
from tasks.mapping.record_ids import is_v1_id
from tasks.mapping.values import BodyBuilder, FieldSource, required_id, show

MEMBER_ROLES: frozenset[str] = frozenset(
    {
        "Chair",
        "Developer Seat",
        "TAC/TOC Representative",
        "Director",
        "Lead",
        "None",
        "Secretary",
        "Technical Lead",
        "Treasurer",
        "Vice Chair",
        "LF Staff",
    }
)


MEMBER_VOTING_STATUSES: frozenset[str] = frozenset(
    {"Alternate Voting Rep", "Observer", "Voting Rep", "Emeritus", "None"}
)


MEMBER_APPOINTED_BY: frozenset[str] = frozenset(
    {
        "Community",
        "Membership Entitlement",
        "Vote of End User Member Class",
        "Vote of TSC Committee",
        "Vote of TAC Committee",
        "Vote of Academic Member Class",
        "Vote of Lab Member Class",
        "Vote of Marketing Committee",
        "Vote of Governing Board",
        "Vote of General Member Class",
        "Vote of End User Committee",
        "Vote of TOC Committee",
        "Vote of Gold Member Class",
        "Vote of Silver Member Class",
        "Vote of Strategic Membership Class",
        "None",
    }
)


MEMBER_STATUSES: frozenset[str] = frozenset({"Active", "Inactive"})


DEFAULT_MEMBER_STATUS = "Active"


# What V2 calls "no value" in the member enums: an unknown V1 value becomes it.
MEMBER_ENUM_UNKNOWN = "None"


MEMBER_NAME_MAX_CHARS = 100


MEMBER_JOB_TITLE_MAX_CHARS = 200


ORGANIZATION_NAME_MAX_CHARS = 200


# One "@", a dot in the domain, no blanks: what the V2 member API accepts as an email.
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


MEMBER_READ_ONLY: frozenset[str] = frozenset(
    {"uid", "committee_uid", "committee_name", "committee_category", "created_at", "updated_at"}
)


MEMBER_EMAIL = FieldSource("contactemail__c", "contactemail__c")


MEMBER_COMMITTEE = FieldSource("collaboration_name__c", "collaboration_name__c")


MEMBER_CONTACT = FieldSource("contact_name__c", "contact_name__c")


MEMBER_ACCOUNT = FieldSource("account__c", "account__c")


MEMBER_STATUS = FieldSource("status__c", "status__c")


MEMBER_TEXT_FIELDS = {"job_title": (FieldSource("title", "title"), MEMBER_JOB_TITLE_MAX_CHARS)}


# Enums where V2's "None" stands for a V1 value outside the enum.
MEMBER_ENUM_FIELDS = {
    "appointed_by": (FieldSource("appointed_by__c", "appointed_by__c"), MEMBER_APPOINTED_BY)
}


# Nested objects: V2 field -> {sub-field: (kind, source, enum or None)}.
MEMBER_OBJECT_FIELDS: dict[str, dict[str, tuple[str, FieldSource, frozenset[str] | None]]] = {
    "role": {
        "name": ("enum", FieldSource("role__c", "role__c"), MEMBER_ROLES),
        "start_date": ("date", FieldSource("start_date__c", "start_date__c"), None),
        "end_date": ("date", FieldSource("end_date__c", "end_date__c"), None),
    },
    "voting": {
        "status": (
            "enum",
            FieldSource("voting_status__c", "voting_status__c"),
            MEMBER_VOTING_STATUSES,
        ),
        "start_date": ("date", FieldSource("voting_start_date__c", "voting_start_date__c"), None),
        "end_date": ("date", FieldSource("voting_end_date__c", "voting_end_date__c"), None),
    },
}


# The V1 user's names: V2 field -> the user directory's attribute.
MEMBER_PERSON_FIELDS = {
    "username": "username",
    "first_name": "first_name",
    "last_name": "last_name",
}


@dataclass(frozen=True)
class MemberFields:
    """A V1 committee member mapped to V2, before the user and organization lookups.

    ``committee_sfid`` is resolved by the task; ``contact_id`` and
    ``organization_id`` are what it looks up (``None`` when V1 has none).
    """

    sfid: str
    committee_sfid: str
    contact_id: str | None
    organization_id: str | None
    body: dict[str, Any]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class MemberLookups:
    """What the V1 user and organization services said (``None``: unknown or failed)."""

    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    organization_name: str | None = None


def map_member(record: Mapping[str, Any]) -> MemberFields:
    """Map a V1 ``platform-community__c`` record to the V2 member body.

    The body lacks what the lookups give (``complete_member``). Raises
    ``InvalidRecord`` when the sfid or committee sfid is missing or not an id,
    or the email is blank or not an email address (V2 requires one).
    """
    sfid = required_id(record, "sfid", "committee member")
    committee_sfid = required_id(record, MEMBER_COMMITTEE.documented, f"committee member {sfid}")
    builder = BodyBuilder(record)
    builder.body["email"] = _member_email(record, sfid)
    for v2_field, (source, max_chars) in MEMBER_TEXT_FIELDS.items():
        builder.put_text(v2_field, source, max_chars=max_chars)
    for v2_field, (source, allowed) in MEMBER_ENUM_FIELDS.items():
        builder.put_enum_or(v2_field, source, allowed, MEMBER_ENUM_UNKNOWN)
    builder.body["status"] = _member_status(builder)
    for v2_field, parts in MEMBER_OBJECT_FIELDS.items():
        nested = BodyBuilder(record, warnings=builder.warnings)
        for part, (kind, part_source, part_enum) in parts.items():
            name = f"{v2_field}.{part}"
            if kind == "enum":
                assert part_enum is not None
                nested.put_enum_or(part, part_source, part_enum, MEMBER_ENUM_UNKNOWN, label=name)
            else:
                nested.put_date(part, part_source, label=name)
        if nested.body:
            builder.body[v2_field] = nested.body
    organization_id = optional_id(builder, "organization.id", MEMBER_ACCOUNT)
    if organization_id is not None:
        builder.body["organization"] = {"id": organization_id}
    return MemberFields(
        sfid=sfid,
        committee_sfid=committee_sfid,
        contact_id=optional_id(builder, "username", MEMBER_CONTACT),
        organization_id=organization_id,
        body=builder.body,
        warnings=tuple(builder.warnings),
    )


def complete_member(
    fields: MemberFields, lookups: MemberLookups
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The full member body: ``fields.body`` plus the looked-up names, within V2's limits.

    Returns the body and every warning (the mapping's and the truncations').
    Blank names are left out; ``organization.name`` only goes with an ``organization.id``.
    """
    builder = BodyBuilder({}, body=copy.deepcopy(fields.body), warnings=list(fields.warnings))
    for v2_field, attribute in MEMBER_PERSON_FIELDS.items():
        value = getattr(lookups, attribute)
        if isinstance(value, str) and value.strip():
            builder.body[v2_field] = builder.truncate(
                v2_field, MEMBER_CONTACT.documented, value.strip(), MEMBER_NAME_MAX_CHARS
            )
    name = lookups.organization_name
    if "organization" in builder.body and isinstance(name, str) and name.strip():
        builder.body["organization"]["name"] = builder.truncate(
            "organization.name",
            MEMBER_ACCOUNT.documented,
            name.strip(),
            ORGANIZATION_NAME_MAX_CHARS,
        )
    return builder.body, tuple(builder.warnings)


def normalized_email(email: str) -> str:
    """The form V2's member uniqueness compares: trimmed and lower-cased."""
    return email.strip().lower()


def _member_email(record: Mapping[str, Any], sfid: str) -> str:
    """The trimmed ``contactemail__c``; InvalidRecord when blank or not an address."""
    value = record.get(MEMBER_EMAIL.documented)
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise InvalidRecord(
            f"committee member {sfid}: contactemail__c is blank ({show(value)}); "
            "V2 requires an email"
        )
    if not EMAIL_PATTERN.fullmatch(text):
        raise InvalidRecord(
            f"committee member {sfid}: contactemail__c {show(value)} is not an email address"
        )
    return text


def _member_status(builder: BodyBuilder) -> str:
    """``status__c`` as ``Active``/``Inactive``; absent or unknown is ``Active``."""
    column, value = builder.pick(MEMBER_STATUS)
    if value is None:
        return DEFAULT_MEMBER_STATUS
    member = builder.enum_member("status", column, value, MEMBER_STATUSES)
    if member is None:
        builder.warn(
            "status",
            column,
            f"{show(value)} is not a V2 status; sent as {DEFAULT_MEMBER_STATUS!r}",
        )
        return DEFAULT_MEMBER_STATUS
    return member


def optional_id(builder: BodyBuilder, v2_field: str, source: FieldSource) -> str | None:
    """An id column that may be empty; a value that is not an id is dropped with a warning."""
    column, value = builder.pick(source)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not is_v1_id(value.strip()):
        builder.warn(v2_field, column, f"{show(value)} is not an id; dropped")
        return None
    return value.strip()
