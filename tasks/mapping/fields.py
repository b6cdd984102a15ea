"""V1 records to V2 request bodies: pure functions, no I/O.

The field table is the one in ``reference/v1-records.md``: for each V2 field the
documented V1 name is read first and the real production column is the fallback.
The rules are the V2 write contract (``reference/v2-contract.md``): a value the V2
service would reject (outside an enum, a bad date, a bad URI) is dropped with a
warning so the rest of the object still syncs; a record without what V2 requires
(sfid, name, slug, the committee's project) raises ``InvalidRecord``.

Decisions worth knowing:

- Booleans are taken only when they are real booleans (V1 booleans are). A string
  such as ``"true"`` is dropped with a warning rather than guessed at: a wrong guess
  could make a private project or committee public.
- Null, absent, empty and ``"nil"`` values are left out of the body, so an update
  keeps the V2 value; clearing a field in V1 therefore does not clear it in V2.
- Enum values are matched exactly, then ignoring case and surrounding or repeated
  whitespace (a warning says so).
- A date-time becomes the calendar date as written, without converting its zone:
  V1 renders date-only columns as midnight timestamps.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from tasks.errors import InvalidRecord
from tasks.mapping.record_ids import ID_SHAPES, is_v1_id
from tasks.mapping.value_repr import short_repr, type_name

# --- The V2 write contract -------------------------------------------------------

SLUG_PATTERN = re.compile(r"[a-z][a-z0-9_\-]*[a-z0-9]")
# A slug becomes a NATS KV key (``project.slug.{slug}``) and a NATS request payload;
# V1 slugs are short names. A longer one is an invalid record, never a huge key.
SLUG_MAX_CHARS = 255

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
ACTIVE_STAGE = "Active"

COMMITTEE_NAME_MAX_CHARS = 100
COMMITTEE_DISPLAY_NAME_MAX_CHARS = 100
COMMITTEE_DESCRIPTION_MAX_CHARS = 2000

PROJECT_READ_ONLY: frozenset[str] = frozenset({"uid", "created_at", "updated_at"})
COMMITTEE_READ_ONLY: frozenset[str] = frozenset(
    {"uid", "sso_group_name", "project_name", "total_members", "created_at", "updated_at"}
)

# --- URIs --------------------------------------------------------------------------

URL_SCHEMES = frozenset({"http", "https"})
DEFAULT_URL_SCHEME = "https://"
SCHEME_SEPARATOR = "://"
URL_NULL_MARKERS = frozenset({"", "nil"})
# RFC 3986 characters: unreserved, reserved, and "%" for escapes.
URI_SAFE_CHARS = "-._~:/?#[]@!$&'()*+,;=%"
URI_CHARS_PATTERN = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
BAD_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# A DNS name with at least one dot (V1 URLs point at public sites).
HOSTNAME_PATTERN = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?\.)+"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.?"
)
LOCALHOST = "localhost"

# --- Dates -------------------------------------------------------------------------

# Plain dates and the three date-time shapes V1 writes (with or without a zone,
# "Z" or an offset, "T" or a space, optional fractional seconds).
DATE_SHAPE = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.\d{1,9})?)?"
    r"(?:[Zz]|[+-](?P<offset_hours>\d{2})(?::?(?P<offset_minutes>\d{2}))?)?)?",
    re.ASCII,
)
MAX_HOUR, MAX_MINUTE, MAX_SECOND = 23, 59, 59


# --- Results -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectFields:
    """A V1 project mapped to V2: the body lacks only ``parent_uid`` (the task resolves it)."""

    sfid: str
    slug: str
    parent_sfid: str | None
    body: dict[str, Any]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class CommitteeFields:
    """A V1 committee mapped to V2: the body lacks only ``project_uid``."""

    sfid: str
    project_sfid: str
    body: dict[str, Any]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class FieldSource:
    """Where a V2 field comes from: the documented V1 name, then the real column."""

    documented: str
    real: str


@dataclass
class BodyBuilder:
    """Collects the body fields and a warning for every value dropped or changed."""

    record: Mapping[str, Any]
    body: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def pick(self, source: FieldSource) -> tuple[str, Any]:
        """The column to read and its value: the documented one unless it is null."""
        documented = self.record.get(source.documented)
        if documented is not None or source.documented == source.real:
            return source.documented, documented
        return source.real, self.record.get(source.real)

    def warn(self, v2_field: str, column: str, problem: str) -> None:
        """Record that ``column``'s value for ``v2_field`` was dropped or changed."""
        self.warnings.append(f"{v2_field} (from {column}): {problem}")

    def put_text(self, v2_field: str, source: FieldSource, *, max_chars: int | None = None) -> None:
        """Copy an optional string, truncated to ``max_chars``; other types are dropped."""
        column, value = self.pick(source)
        if value is None:
            return
        if not isinstance(value, str):
            self.warn(v2_field, column, f"{_type_name(value)} is not a string; dropped")
            return
        self.body[v2_field] = self.truncate(v2_field, column, value, max_chars)

    def put_bool(self, v2_field: str, source: FieldSource) -> None:
        """Copy a real boolean; anything else (even ``"true"``) is dropped."""
        column, value = self.pick(source)
        if value is None:
            return
        if not isinstance(value, bool):
            self.warn(v2_field, column, f"{_show(value)} is not a boolean; dropped")
            return
        self.body[v2_field] = value

    def put_enum(self, v2_field: str, source: FieldSource, allowed: frozenset[str]) -> None:
        """Copy a value of a V2 enum; anything outside it is dropped."""
        column, value = self.pick(source)
        if value is None:
            return
        member = self.enum_member(v2_field, column, value, allowed)
        if member is None:
            self.warn(v2_field, column, f"{_show(value)} is not a V2 {v2_field}; dropped")
            return
        self.body[v2_field] = member

    def enum_member(
        self, v2_field: str, column: str, value: Any, allowed: frozenset[str]
    ) -> str | None:
        """``value`` as a member of ``allowed`` (warning when only a loose match), or None."""
        member = match_enum(value, allowed)
        if member is not None and member != value:
            self.warn(v2_field, column, f"{_show(value)} read as {member!r}")
        return member

    def put_enum_or(
        self,
        v2_field: str,
        source: FieldSource,
        allowed: frozenset[str],
        fallback: str,
        *,
        label: str | None = None,
    ) -> None:
        """Copy a value of a V2 enum; anything outside it becomes ``fallback`` (a warning).

        ``label`` names the field in warnings (``role.name``); default ``v2_field``.
        """
        column, value = self.pick(source)
        if value is None:
            return
        shown = label or v2_field
        member = self.enum_member(shown, column, value, allowed)
        if member is None:
            self.warn(shown, column, f"{_show(value)} is not a V2 {shown}; sent as {fallback!r}")
            member = fallback
        self.body[v2_field] = member

    def put_url(self, v2_field: str, source: FieldSource) -> None:
        """Copy a URL after clean-up; one that is still not a valid URI is dropped."""
        column, value = self.pick(source)
        if value is None:
            return
        url, problem = clean_url(value)
        if problem is not None:
            self.warn(v2_field, column, f"{_show(value)} {problem}; dropped")
        elif url is not None and url != value:
            self.warn(v2_field, column, f"{_show(value)} cleaned to {url!r}")
        if url is not None:
            self.body[v2_field] = url

    def put_date(self, v2_field: str, source: FieldSource, *, label: str | None = None) -> None:
        """Copy a date or date-time as ``YYYY-MM-DD``; an unreadable one is dropped.

        ``label`` names the field in warnings (``role.start_date``); default ``v2_field``.
        """
        column, value = self.pick(source)
        if value is None:
            return
        day = to_date(value)
        if day is None:
            self.warn(label or v2_field, column, f"{_show(value)} is not a date; dropped")
            return
        self.body[v2_field] = day

    def truncate(self, v2_field: str, column: str, text: str, max_chars: int | None) -> str:
        """``text`` cut to ``max_chars`` characters, with a warning when it was longer."""
        if max_chars is None or len(text) <= max_chars:
            return text
        self.warn(v2_field, column, f"{len(text)} characters truncated to {max_chars}")
        return text[:max_chars]


# --- Projects ----------------------------------------------------------------------

PROJECT_NAME = FieldSource("name", "name")
PROJECT_SLUG = FieldSource("slug__c", "slug__c")
PROJECT_DESCRIPTION = FieldSource("description__c", "description__c")
PROJECT_PUBLIC = FieldSource("public__c", "public__c")
PROJECT_PARENT = FieldSource("parent_project__c", "parent_project__c")
PROJECT_TEXT_FIELDS = {
    "legal_entity_name": FieldSource("legal_entity_name__c", "project_entity_name__c")
}
PROJECT_DATE_FIELDS = {"formation_date": FieldSource("formation_date__c", "start_date__c")}
PROJECT_ENUM_FIELDS = {
    "legal_entity_type": (FieldSource("legal_entity_type__c", "category__c"), LEGAL_ENTITY_TYPES),
    "stage": (FieldSource("stage__c", "project_status__c"), PROJECT_STAGES),
}
PROJECT_URL_FIELDS = {
    "logo_url": FieldSource("logo_url__c", "project_logo__c"),
    "repository_url": FieldSource("repository_url__c", "repositoryurl__c"),
    "website_url": FieldSource("website_url__c", "website__c"),
    "charter_url": FieldSource("charter_url__c", "charterurl__c"),
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
    sfid = _required_id(record, "sfid", "project")
    builder = BodyBuilder(record)
    builder.body["name"] = _required_name(builder, "name", PROJECT_NAME, "project", sfid)
    slug = _project_slug(record, sfid)
    builder.body["slug"] = slug
    builder.body["description"] = _project_description(builder)
    builder.put_bool("public", PROJECT_PUBLIC)
    for v2_field, source in PROJECT_TEXT_FIELDS.items():
        builder.put_text(v2_field, source)
    for v2_field, source in PROJECT_DATE_FIELDS.items():
        builder.put_date(v2_field, source)
    for v2_field, (source, allowed) in PROJECT_ENUM_FIELDS.items():
        builder.put_enum(v2_field, source, allowed)
    for v2_field, source in PROJECT_URL_FIELDS.items():
        builder.put_url(v2_field, source)
    for v2_field, source in PROJECT_BOOL_FIELDS.items():
        builder.put_bool(v2_field, source)
    return ProjectFields(
        sfid=sfid,
        slug=slug,
        parent_sfid=_parent_sfid(record, sfid),
        body=builder.body,
        warnings=tuple(builder.warnings),
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
        raise InvalidRecord(f"project {sfid}: slug__c missing or not a string ({_show(value)})")
    slug = value.strip().lower()
    if len(slug) > SLUG_MAX_CHARS:
        raise InvalidRecord(
            f"project {sfid}: slug__c is {len(slug)} characters, more than {SLUG_MAX_CHARS}"
        )
    if not SLUG_PATTERN.fullmatch(slug):
        raise InvalidRecord(
            f"project {sfid}: slug__c {_show(value)} does not match {SLUG_PATTERN.pattern}"
        )
    return slug


def _project_description(builder: BodyBuilder) -> str:
    """The description, ``""`` when null (V2 requires the field)."""
    column, value = builder.pick(PROJECT_DESCRIPTION)
    if value is None:
        return ""
    if not isinstance(value, str):
        builder.warn("description", column, f"{_type_name(value)} is not a string; sent as ''")
        return ""
    return value


def _parent_sfid(record: Mapping[str, Any], sfid: str) -> str | None:
    """The parent's sfid, or None for a project that goes under ROOT."""
    value = record.get(PROJECT_PARENT.documented)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not is_v1_id(value.strip()):
        raise InvalidRecord(f"project {sfid}: parent_project__c {_show(value)} is not {ID_SHAPES}")
    value = value.strip()
    if value == sfid:
        raise InvalidRecord(f"project {sfid}: parent_project__c is the project itself")
    return value


# --- Committees --------------------------------------------------------------------

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
    sfid = _required_id(record, "sfid", "committee")
    project_sfid = _required_id(record, COMMITTEE_PROJECT.documented, f"committee {sfid}")
    builder = BodyBuilder(record)
    name = _required_name(builder, "name", COMMITTEE_NAME, "committee", sfid)
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
            f"{_show(value)} is not a V2 category; sent as {DEFAULT_COMMITTEE_CATEGORY!r}",
        )
        return DEFAULT_COMMITTEE_CATEGORY
    return member


# --- Committee members -------------------------------------------------------------

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
    sfid = _required_id(record, "sfid", "committee member")
    committee_sfid = _required_id(record, MEMBER_COMMITTEE.documented, f"committee member {sfid}")
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
    organization_id = _optional_id(builder, "organization.id", MEMBER_ACCOUNT)
    if organization_id is not None:
        builder.body["organization"] = {"id": organization_id}
    return MemberFields(
        sfid=sfid,
        committee_sfid=committee_sfid,
        contact_id=_optional_id(builder, "username", MEMBER_CONTACT),
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
            f"committee member {sfid}: contactemail__c is blank ({_show(value)}); "
            "V2 requires an email"
        )
    if not EMAIL_PATTERN.fullmatch(text):
        raise InvalidRecord(
            f"committee member {sfid}: contactemail__c {_show(value)} is not an email address"
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
            f"{_show(value)} is not a V2 status; sent as {DEFAULT_MEMBER_STATUS!r}",
        )
        return DEFAULT_MEMBER_STATUS
    return member


def _optional_id(builder: BodyBuilder, v2_field: str, source: FieldSource) -> str | None:
    """An id column that may be empty; a value that is not an id is dropped with a warning."""
    column, value = builder.pick(source)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not is_v1_id(value.strip()):
        builder.warn(v2_field, column, f"{_show(value)} is not an id; dropped")
        return None
    return value.strip()


# --- Updates -----------------------------------------------------------------------


def merge_over(
    current: Mapping[str, Any], v1_fields: Mapping[str, Any], read_only: frozenset[str]
) -> dict[str, Any]:
    """The PUT body: the current V2 record without read-only fields, V1 values on top.

    V1 wins for every field it carries (``False`` and ``""`` included); fields only V2
    has are kept, inside nested objects too. Null values are left out: in a full-base
    PUT null and absent mean the same, and the contract's format checks need not see
    a null.
    """
    merged = {key: value for key, value in current.items() if value is not None}
    for key, value in v1_fields.items():
        below = merged.get(key)
        # Nested objects (a member's role, voting, organization) merge the same way.
        merged[key] = (
            merge_over(below, value, frozenset())
            if isinstance(value, Mapping) and isinstance(below, Mapping)
            else value
        )
    return {
        key: value for key, value in merged.items() if key not in read_only and value is not None
    }


def needs_update(
    current: Mapping[str, Any], desired: Mapping[str, Any], read_only: frozenset[str]
) -> bool:
    """Whether PUTting ``desired`` (a full body) would change the ``current`` V2 record.

    Read-only fields and null values are ignored; ``True`` and ``1`` differ.
    """
    return bool(field_changes(current, desired, read_only))


@dataclass(frozen=True)
class FieldChange:
    """One V2 field a write changes: ``before`` / ``after`` None when absent."""

    field: str
    before: Any
    after: Any


def field_changes(
    current: Mapping[str, Any], desired: Mapping[str, Any], read_only: frozenset[str]
) -> tuple[FieldChange, ...]:
    """The writable fields whose value differs between ``current`` and ``desired``, by name."""
    before, after = _writable(current, read_only), _writable(desired, read_only)
    return tuple(
        FieldChange(name, before.get(name), after.get(name))
        for name in sorted(before.keys() | after.keys())
        if not (name in before and name in after and _same(before[name], after[name]))
    )


def _writable(record: Mapping[str, Any], read_only: frozenset[str]) -> dict[str, Any]:
    """``record`` without read-only fields and null values."""
    return {
        key: value for key, value in record.items() if key not in read_only and value is not None
    }


def _same(left: Any, right: Any) -> bool:
    """JSON equality: like ``==`` but a boolean never equals a number."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(
            _same(a, b) for a, b in zip(left, right, strict=True)
        )
    return bool(left == right)


# --- Values ------------------------------------------------------------------------


def match_enum(value: Any, allowed: frozenset[str]) -> str | None:
    """The member of ``allowed`` that ``value`` names, ignoring case and extra spaces."""
    if not isinstance(value, str):
        return None
    if value in allowed:
        return value
    wanted = _enum_key(value)
    return next((member for member in sorted(allowed) if _enum_key(member) == wanted), None)


def _enum_key(text: str) -> str:
    """A spelling of ``text`` that ignores case and whitespace runs."""
    return " ".join(text.split()).casefold()


def to_date(value: Any) -> str | None:
    """``YYYY-MM-DD`` from a date, a date-time or one of V1's date strings, else None.

    A date-time keeps the calendar date it was written with: its zone is not applied.
    """
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str):
        return None
    shape = DATE_SHAPE.fullmatch(value.strip())
    if shape is None or not _valid_clock(shape):
        return None
    try:
        day = date(int(shape["year"]), int(shape["month"]), int(shape["day"]))
    except ValueError:
        return None
    return day.isoformat()


def _valid_clock(shape: re.Match[str]) -> bool:
    """Whether the time and offset parts of a date-time string are in range."""
    limits = (
        ("hour", MAX_HOUR),
        ("minute", MAX_MINUTE),
        ("second", MAX_SECOND),
        ("offset_hours", MAX_HOUR),
        ("offset_minutes", MAX_MINUTE),
    )
    return all(shape[part] is None or int(shape[part]) <= limit for part, limit in limits)


def clean_url(value: Any) -> tuple[str | None, str | None]:
    """Clean a V1 URL: ``(url, None)``, ``(None, None)`` when empty, or ``(None, problem)``.

    Trims it; treats empty and ``nil`` as no value; adds ``https://`` when there is
    no scheme; percent-encodes characters a URI cannot hold (non-ASCII, quotes,
    braces); refuses what still is not an http(s) URI with a host.
    """
    if not isinstance(value, str):
        return None, f"is a {_type_name(value)}, not a URL"
    text = value.strip()
    if text.casefold() in URL_NULL_MARKERS:
        return None, None
    # Not printable also covers lone surrogates, the only text UTF-8 cannot encode.
    if any(char.isspace() or not char.isprintable() for char in text):
        return None, "contains spaces or control characters"
    if SCHEME_SEPARATOR not in text:
        text = ("https:" if text.startswith("//") else DEFAULT_URL_SCHEME) + text
    text = quote(text, safe=URI_SAFE_CHARS)
    if not is_valid_uri(text):
        return None, "is not a valid http(s) URI"
    return text, None


def is_valid_uri(text: str) -> bool:
    """Whether ``text`` is an RFC 3986 http(s) URI with a real host and no spaces.

    Also refused: brackets outside an IPv6 host, bad ``%`` escapes, and user info
    (in a website field that is an e-mail address gone astray).
    """
    if not URI_CHARS_PATTERN.fullmatch(text) or BAD_PERCENT_ESCAPE.search(text):
        return False
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError:
        return False
    has_scheme = parts.scheme.lower() in URL_SCHEMES and text[len(parts.scheme) :].startswith(
        SCHEME_SEPARATOR
    )
    after_host = parts.path + parts.query + parts.fragment
    if not has_scheme or "[" in after_host or "]" in after_host or parts.username is not None:
        return False
    return _valid_host(parts.hostname)


def _valid_host(host: str | None) -> bool:
    """A DNS name with a dot, ``localhost`` or an IP address."""
    if not host:
        return False
    if host == LOCALHOST or HOSTNAME_PATTERN.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --- Record fields -----------------------------------------------------------------


def _required_id(record: Mapping[str, Any], column: str, owner: str) -> str:
    """An id column every record needs; InvalidRecord when missing or not an id."""
    value = record.get(column)
    if not isinstance(value, str) or not is_v1_id(value.strip()):
        raise InvalidRecord(f"{owner}: {column} missing or not {ID_SHAPES} ({_show(value)})")
    return value.strip()


def _required_name(
    builder: BodyBuilder, v2_field: str, source: FieldSource, object_type: str, sfid: str
) -> str:
    """A name V2 requires: trimmed (with a warning), InvalidRecord when blank."""
    column, value = builder.pick(source)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecord(f"{object_type} {sfid}: {column} missing or blank ({_show(value)})")
    name = value.strip()
    if name != value:
        builder.warn(v2_field, column, "surrounding whitespace trimmed")
    return name


def _show(value: Any) -> str:
    """A short repr of a V1 value for a warning or an error message (bounded, never raises)."""
    return short_repr(value)


def _type_name(value: Any) -> str:
    """The name of a value's type, for messages."""
    return type_name(value)
