"""Body validation of the fake V2 services, per ``v2-contract.md``.

Each body is checked against a table of field rules: required fields, types,
enums, ``YYYY-MM-DD`` dates, URIs, UUIDs, the slug pattern and lengths. Unknown
and read-only fields are refused, as are wrong types. Every problem of a body
is reported in one 400 message. JSON ``null`` on an optional field means
"absent" (Go decodes it into a nil pointer); on a required field it is missing.

Existence checks (``parent_uid``, ``project_uid``) need the store and live there.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sandbox.api_error import ApiError

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9_\-]*[a-z0-9]$")
UUID_PATTERN = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SCHEME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

PROJECT_STAGES = (
    "Formation - Exploratory",
    "Formation - Engaged",
    "Active",
    "Archived",
    "Formation - On Hold",
    "Formation - Disengaged",
    "Formation - Confidential",
    "Prospect",
)
LEGAL_ENTITY_TYPES = (
    "Subproject",
    "Incorporated Entity",
    "Series LLC",
    "Unofficial Subproject",
    "Internal Allocation",
    "None",
)
PROJECT_CATEGORIES = (
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
)
COMMITTEE_CATEGORIES = (
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
    "Newsletter",
    "Other",
    "Product Security",
    "Special Interest Group",
    "Technical Advisory Committee",
    "Technical Mailing List",
    "Technical Oversight Committee",
    "Technical Steering Committee",
    "Working Group",
)
MEMBER_ROLES = (
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
)
MEMBER_APPOINTED_BY = (
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
)
MEMBER_STATUSES = ("Active", "Inactive")
# The project service deletes only projects whose funding model is exactly ["Crowdfunding"].
FUNDING_MODELS = ("Crowdfunding", "Membership", "Alternate Funding")
FUNDING = ("Funded", "Unfunded", "Supported by Parent Project")
JOIN_MODES = ("open", "invite_only", "application", "closed")
# The project service refuses this stage without an entity_dissolution_date.
ARCHIVED_STAGE = "Archived"
VOTING_STATUSES = ("Alternate Voting Rep", "Observer", "Voting Rep", "Emeritus", "None")

COMMITTEE_NAME_MAX = 100
COMMITTEE_DESCRIPTION_MAX = 2000
CHAT_CHANNEL_MAX = 500
MEMBER_NAME_MAX = 100
MEMBER_TITLE_MAX = 200
ORGANIZATION_NAME_MAX = 200

# Fields the services compute; a client that echoes them back gets a 400.
READ_ONLY_FIELDS = frozenset(
    {
        "uid",
        "created_at",
        "updated_at",
        "sso_group_name",
        "project_name",
        "total_members",
        "committee_uid",
        "committee_name",
        "committee_category",
    }
)


def is_uuid(value: object) -> bool:
    """A canonical, dashed UUID string."""
    return isinstance(value, str) and bool(UUID_PATTERN.match(value))


def is_date(value: object) -> bool:
    """A real calendar date written ``YYYY-MM-DD``."""
    if not isinstance(value, str) or not DATE_PATTERN.match(value):
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def is_uri(value: object) -> bool:
    """What Go's ``url.ParseRequestURI`` accepts, minus its leniency on blanks.

    An absolute URI (``scheme:rest``; ``http``/``https`` need a host) or an
    absolute path. Whitespace and control characters are never valid.
    """
    if not isinstance(value, str) or not value:
        return False
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return False
    if value.startswith("/"):
        return True
    scheme, sep, rest = value.partition(":")
    if not sep or not rest or not SCHEME_PATTERN.match(scheme):
        return False
    if scheme.lower() in ("http", "https"):
        try:
            host = urlsplit(value).hostname
        except ValueError:
            return False
        return bool(host)
    return True


def is_email(value: object) -> bool:
    """A plausible e-mail address (one ``@``, a dot in the domain, no blanks)."""
    return isinstance(value, str) and bool(EMAIL_PATTERN.match(value))


@dataclass(frozen=True)
class FieldRule:
    """How one body field is checked.

    ``kind``: string, bool, uuid, date, uri, email, object, string_list (``enum``
    then applies to each item).
    """

    kind: str
    required: bool = False
    max_length: int | None = None
    enum: tuple[str, ...] | None = None
    pattern: re.Pattern[str] | None = None
    fields: Mapping[str, FieldRule] | None = None  # for kind "object"


def is_email_or_empty(value: object) -> bool:
    """``""`` or an e-mail address (a settings user object's ``email``)."""
    return value == "" or is_email(value)


def is_uri_or_empty(value: object) -> bool:
    """``""`` or a URI (a settings user object's ``avatar``)."""
    return value == "" or is_uri(value)


_KIND_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "email_or_empty": (is_email_or_empty, "must be empty or an e-mail address"),
    "uri_or_empty": (is_uri_or_empty, "must be empty or a URI"),
    "user": (lambda v: isinstance(v, dict), "must be a user object"),
    "user_list": (
        lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
        "must be a list of user objects",
    ),
    "string": (lambda v: isinstance(v, str), "must be a string"),
    "bool": (lambda v: isinstance(v, bool), "must be a boolean"),
    "uuid": (is_uuid, "must be a UUID"),
    "date": (is_date, "must be a date in the format YYYY-MM-DD"),
    "uri": (is_uri, "must be a URI"),
    "email": (is_email, "must be an e-mail address"),
    "object": (lambda v: isinstance(v, dict), "must be an object"),
    "string_list": (
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "must be a list of strings",
    ),
}

PROJECT_RULES: dict[str, FieldRule] = {
    "name": FieldRule("string", required=True),
    "slug": FieldRule("string", required=True, pattern=SLUG_PATTERN),
    "description": FieldRule("string", required=True),
    "parent_uid": FieldRule("uuid", required=True),
    "legal_parent_uid": FieldRule("uuid"),
    "legal_entity_name": FieldRule("string"),
    "mission_statement": FieldRule("string"),
    "public": FieldRule("bool"),
    "is_foundation": FieldRule("bool"),
    "autojoin_enabled": FieldRule("bool"),
    "formation_date": FieldRule("date"),
    "entity_dissolution_date": FieldRule("date"),
    "announcement_date": FieldRule("date"),
    "logo_url": FieldRule("uri"),
    "repository_url": FieldRule("uri"),
    "website_url": FieldRule("uri"),
    "charter_url": FieldRule("uri"),
    "entity_formation_document_url": FieldRule("uri"),
    "stage": FieldRule("string", enum=PROJECT_STAGES),
    "legal_entity_type": FieldRule("string", enum=LEGAL_ENTITY_TYPES),
    "category": FieldRule("string", enum=PROJECT_CATEGORIES),
    "funding_model": FieldRule("string_list", enum=FUNDING_MODELS),
    "funding": FieldRule("string", enum=FUNDING),
}

COMMITTEE_RULES: dict[str, FieldRule] = {
    "name": FieldRule("string", required=True, max_length=COMMITTEE_NAME_MAX),
    "category": FieldRule("string", required=True, enum=COMMITTEE_CATEGORIES),
    "project_uid": FieldRule("uuid", required=True),
    "display_name": FieldRule("string", max_length=COMMITTEE_NAME_MAX),
    "description": FieldRule("string", max_length=COMMITTEE_DESCRIPTION_MAX),
    "parent_uid": FieldRule("uuid"),
    "enable_voting": FieldRule("bool"),
    "public": FieldRule("bool"),
    "sso_group_enabled": FieldRule("bool"),
    "requires_review": FieldRule("bool"),
    "business_email_required": FieldRule("bool"),
    "website": FieldRule("uri"),
    "mailing_list": FieldRule("email"),
    "chat_channel": FieldRule("string", max_length=CHAT_CHANNEL_MAX),
    "join_mode": FieldRule("string", enum=JOIN_MODES),
}

_ROLE_RULES = {
    "name": FieldRule("string", enum=MEMBER_ROLES),
    "start_date": FieldRule("date"),
    "end_date": FieldRule("date"),
}
_VOTING_RULES = {
    "status": FieldRule("string", enum=VOTING_STATUSES),
    "start_date": FieldRule("date"),
    "end_date": FieldRule("date"),
}
_ORGANIZATION_RULES = {
    "id": FieldRule("string"),
    "name": FieldRule("string", max_length=ORGANIZATION_NAME_MAX),
    "website": FieldRule("uri"),
}

MEMBER_RULES: dict[str, FieldRule] = {
    "email": FieldRule("email", required=True),
    "username": FieldRule("string", max_length=MEMBER_NAME_MAX),
    "first_name": FieldRule("string", max_length=MEMBER_NAME_MAX),
    "last_name": FieldRule("string", max_length=MEMBER_NAME_MAX),
    "job_title": FieldRule("string", max_length=MEMBER_TITLE_MAX),
    "linkedin_profile": FieldRule("uri"),
    "appointed_by": FieldRule("string", enum=MEMBER_APPOINTED_BY),
    "status": FieldRule("string", enum=MEMBER_STATUSES),
    "role": FieldRule("object", fields=_ROLE_RULES),
    "voting": FieldRule("object", fields=_VOTING_RULES),
    "organization": FieldRule("object", fields=_ORGANIZATION_RULES),
}


def _check_value(name: str, value: Any, rule: FieldRule, problems: list[str]) -> Any:
    check, complaint = _KIND_CHECKS[rule.kind]
    if not check(value):
        problems.append(f"{name} {complaint}")
        return None
    if rule.kind == "user":
        return _check_fields(
            value, USER_RULES, problems, prefix=f"{name}.", read_only=USER_READ_ONLY
        )
    if rule.kind == "user_list":
        return [
            _check_fields(
                item, USER_RULES, problems, prefix=f"{name}[{index}].", read_only=USER_READ_ONLY
            )
            for index, item in enumerate(value)
        ]
    if rule.kind == "object" and rule.fields is not None:
        return _check_fields(value, rule.fields, problems, prefix=f"{name}.", read_only=())
    if rule.max_length is not None and len(value) > rule.max_length:
        problems.append(f"{name} must be at most {rule.max_length} characters")
    if rule.kind == "string_list":
        if rule.enum is not None and any(item not in rule.enum for item in value):
            problems.append(f"{name} items must be among {list(rule.enum)}")
        return value
    if rule.enum is not None and value not in rule.enum:
        problems.append(f"{name} must be one of {list(rule.enum)}")
    if rule.pattern is not None and not rule.pattern.match(value):
        problems.append(f"{name} must match the pattern {rule.pattern.pattern!r}")
    return value


# A user object of a settings resource: the server rewrites name, username and
# avatar from its directory by e-mail; ``invite`` is the server's own.
USER_RULES: dict[str, FieldRule] = {
    "name": FieldRule("string"),
    "email": FieldRule("email_or_empty"),
    "username": FieldRule("string"),
    "avatar": FieldRule("uri_or_empty"),
}
USER_READ_ONLY = ("invite",)
MEMBER_VISIBILITIES = ("hidden", "basic_profile")

PROJECT_SETTINGS_RULES: dict[str, FieldRule] = {
    "mission_statement": FieldRule("string"),
    "announcement_date": FieldRule("date"),
    "executive_director": FieldRule("user"),
    "program_manager": FieldRule("user"),
    "opportunity_owner": FieldRule("user"),
    "writers": FieldRule("user_list"),
    "auditors": FieldRule("user_list"),
    "meeting_coordinators": FieldRule("user_list"),
}

COMMITTEE_SETTINGS_RULES: dict[str, FieldRule] = {
    "business_email_required": FieldRule("bool", required=True),
    "member_visibility": FieldRule("string", enum=MEMBER_VISIBILITIES),
    "show_meeting_attendees": FieldRule("bool"),
    "last_reviewed_at": FieldRule("string"),
    "last_reviewed_by": FieldRule("string"),
    "writers": FieldRule("user_list"),
    "auditors": FieldRule("user_list"),
}


def _check_fields(
    body: Mapping[str, Any],
    rules: Mapping[str, FieldRule],
    problems: list[str],
    *,
    prefix: str = "",
    read_only: frozenset[str] | tuple[str, ...] = READ_ONLY_FIELDS,
) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for name in sorted(body):
        if name in read_only:
            problems.append(f"{prefix}{name} is read-only and must not be sent")
        elif name not in rules:
            problems.append(f"{prefix}{name} is not a known field")
    for name, rule in rules.items():
        value = body.get(name)
        if value is None:
            if rule.required:
                problems.append(f"{prefix}{name} is missing but required")
            continue
        checked = _check_value(prefix + name, value, rule, problems)
        if checked is not None:
            clean[name] = checked
    return clean


def validate_body(body: object, rules: Mapping[str, FieldRule]) -> dict[str, Any]:
    """Return the body without ``null`` fields, or raise a 400 listing every problem."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    problems: list[str] = []
    clean = _check_fields(body, rules, problems)
    if problems:
        raise ApiError(400, "invalid request body: " + "; ".join(problems))
    return clean


def validate_project(body: object) -> dict[str, Any]:
    """A project create/update body (the full base), checked field by field.

    ``stage: Archived`` needs an ``entity_dissolution_date`` (400 otherwise).
    """
    clean = validate_body(body, PROJECT_RULES)
    if clean.get("stage") == ARCHIVED_STAGE and "entity_dissolution_date" not in clean:
        raise ApiError(400, "invalid request body: stage Archived requires entity_dissolution_date")
    return clean


def validate_committee(body: object) -> dict[str, Any]:
    """A committee create/update body, checked field by field."""
    return validate_body(body, COMMITTEE_RULES)


def validate_project_settings(body: object) -> dict[str, Any]:
    """A project settings PUT body (the full resource)."""
    return validate_body(body, PROJECT_SETTINGS_RULES)


def validate_committee_settings(body: object) -> dict[str, Any]:
    """A committee settings PUT body (the full resource; ``business_email_required`` required)."""
    return validate_body(body, COMMITTEE_SETTINGS_RULES)


def validate_member(body: object) -> dict[str, Any]:
    """A committee member create/update body, checked field by field."""
    return validate_body(body, MEMBER_RULES)
