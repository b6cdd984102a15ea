"""V2 committee and member objects to V1 API bodies (the reverse direction), pure.

The V1 API (``reverse-sync.md``) takes PascalCase bodies; a PATCH leaves an
absent key unchanged, so a body carries only the keys V2 has a value for.
Every function here is total: any ``data`` (the ``body.data`` of an indexer
event, or the record V2 answered a forward write with) gives a body, with a
warning for each value dropped; nothing raises.

``v1_fingerprint`` is the "V1-relevant content" of an object: a digest of
the body V1 would get, normalized, so that two V2 states V1 cannot tell apart
have the same fingerprint. The echo guard compares the fingerprint of an
event's ``data`` with the one of what the forward path last wrote (V2's
answer to that write, which includes what V2 filled in itself).
"""

from __future__ import annotations

import hashlib
import json
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
from sync_core.indexer_events import V2Action, V2Event, V2ObjectType
from sync_core.v1_values import SALESFORCE_ID_PATTERN, to_date
from sync_core.value_repr import short_repr

# V1 has one category for the two V2 technical ones; the other V2 categories
# are the same words in V1 (``reference/reverse-sync.md``).
V1_COMBINED_TECHNICAL_CATEGORY = COMBINED_TECHNICAL_CATEGORY
V2_TECHNICAL_CATEGORIES = frozenset({TECHNICAL_OVERSIGHT_CATEGORY, TECHNICAL_ADVISORY_CATEGORY})
V1_COMMITTEE_CATEGORIES: frozenset[str] = (COMMITTEE_CATEGORIES - V2_TECHNICAL_CATEGORIES) | {
    V1_COMBINED_TECHNICAL_CATEGORY
}

# V2 committee field -> V1 body key, text values sent as they are (trimmed).
COMMITTEE_TEXT_KEYS = {
    "name": "Name",
    "description": "Description",
    "website": "CommitteeWebsite",
    "mailing_list": "MailingList",
    "chat_channel": "ChatChannel",
    "join_mode": "JoinMode",
    "sso_group_name": "SSOGroupName",
}
COMMITTEE_CATEGORY_KEY = "Category"
COMMITTEE_REQUIRED_ON_CREATE = ("Name",)

# V2 member field -> V1 body key, text values.
MEMBER_TEXT_KEYS = {
    "email": "Email",
    "first_name": "FirstName",
    "last_name": "LastName",
    "job_title": "Title",
    "status": "Status",
    "appointed_by": "AppointedBy",
}
# V2 member object -> {its field: (V1 body key, is a date)}: sent flat.
MEMBER_OBJECT_KEYS: dict[str, dict[str, tuple[str, bool]]] = {
    "role": {
        "name": ("Role", False),
        "start_date": ("RoleStartDate", True),
        "end_date": ("RoleEndDate", True),
    },
    "voting": {
        "status": ("VotingStatus", False),
        "start_date": ("VotingStartDate", True),
        "end_date": ("VotingEndDate", True),
    },
}
MEMBER_CONTACT_KEY = "MemberID"
MEMBER_ORGANIZATION_KEY = "OrganizationID"
MEMBER_EMAIL_KEY = "Email"
MEMBER_REQUIRED_ON_CREATE = ("Email",)
# Not a V1 body key: the member's V2 committee, part of its fingerprint only.
MEMBER_COMMITTEE_FINGERPRINT_KEY = "committee_uid"

# Every key a V1 body may carry, per object: what the V1 API accepts.
V1_COMMITTEE_KEYS = frozenset({*COMMITTEE_TEXT_KEYS.values(), COMMITTEE_CATEGORY_KEY})
V1_MEMBER_KEYS = frozenset(
    {
        *MEMBER_TEXT_KEYS.values(),
        *(key for fields in MEMBER_OBJECT_KEYS.values() for key, _ in fields.values()),
        MEMBER_CONTACT_KEY,
        MEMBER_ORGANIZATION_KEY,
    }
)
FINGERPRINT_VERSION = "v1"
# The keys V1 holds as e-mail addresses (mailing_list_email, contactemail__c).
EMAIL_KEYS = frozenset({"MailingList", MEMBER_EMAIL_KEY})
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(frozen=True)
class V1Body:
    """A V1 API body and the values V2 had that it leaves out (why, one per line)."""

    body: dict[str, Any]
    warnings: tuple[str, ...]
    required_on_create: tuple[str, ...]

    @property
    def missing_for_create(self) -> tuple[str, ...]:
        """The keys a POST needs that this body lacks (empty: it can be created)."""
        return tuple(key for key in self.required_on_create if key not in self.body)


def v1_category(category: Any) -> str | None:
    """V1's category for a V2 one: TOC and TAC become V1's combined value; None if unknown."""
    if not isinstance(category, str):
        return None
    text = " ".join(category.split())
    if text in V2_TECHNICAL_CATEGORIES:
        return V1_COMBINED_TECHNICAL_CATEGORY
    return text if text in V1_COMMITTEE_CATEGORIES else None


def v1_committee_body(data: Mapping[str, Any]) -> V1Body:
    """The V1 committee body of a V2 committee (``Name`` … ``SSOGroupName``)."""
    out = _BodyOut()
    for field, key in COMMITTEE_TEXT_KEYS.items():
        out.put_text(key, field, data.get(field))
    category = data.get("category")
    if category is not None:
        translated = v1_category(category)
        if translated is None:
            out.warn("category", f"{short_repr(category)} is not a V1 category; left out")
        else:
            out.body[COMMITTEE_CATEGORY_KEY] = translated
    return V1Body(out.body, tuple(out.warnings), COMMITTEE_REQUIRED_ON_CREATE)


def v1_member_body(data: Mapping[str, Any], contact_id: str | None = None) -> V1Body:
    """The V1 member body of a V2 member.

    ``contact_id`` is the person's V1 contact id when known (from the
    mappings): it goes in as ``MemberID``. V2's ``role`` and ``voting``
    objects become the flat ``Role``/``VotingStatus`` keys and their dates;
    ``organization.id`` is sent when it is a V1 account sfid (18 characters).
    """
    out = _BodyOut()
    for field, key in MEMBER_TEXT_KEYS.items():
        out.put_text(key, field, data.get(field))
    for name, fields in MEMBER_OBJECT_KEYS.items():
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            out.warn(name, f"{short_repr(value)} is not an object; left out")
            continue
        for sub_field, (key, is_date) in fields.items():
            where = f"{name}.{sub_field}"
            if is_date:
                out.put_date(key, where, value.get(sub_field))
            else:
                out.put_text(key, where, value.get(sub_field))
    organization = data.get("organization")
    if isinstance(organization, Mapping):
        out.put_account_id(organization.get("id"))
    elif organization is not None:
        out.warn("organization", f"{short_repr(organization)} is not an object; left out")
    if contact_id is not None:
        if isinstance(contact_id, str) and SALESFORCE_ID_PATTERN.fullmatch(contact_id.strip()):
            out.body[MEMBER_CONTACT_KEY] = contact_id.strip()
        else:
            out.warn("contact_id", f"{short_repr(contact_id)} is not a V1 contact id; left out")
    return V1Body(out.body, tuple(out.warnings), MEMBER_REQUIRED_ON_CREATE)


def v1_fingerprint(body: Mapping[str, Any]) -> str:
    """A digest of what V1 would store from ``body``: equal bodies, equal digests.

    Keys and their order do not matter beyond their values; e-mail case and
    whitespace runs do not count (V1 and V2 compare them that way).
    """
    canonical = {key: _canonical(key, value) for key, value in body.items() if value is not None}
    text = json.dumps([FINGERPRINT_VERSION, canonical], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def committee_fingerprint(data: Mapping[str, Any]) -> str:
    """The V1-relevant content of a V2 committee (see ``v1_fingerprint``)."""
    return v1_fingerprint(v1_committee_body(data).body)


def member_fingerprint(data: Mapping[str, Any]) -> str:
    """The V1-relevant content of a V2 member (see ``v1_fingerprint``).

    The contact id is not content: it is how V1 names the member. Its
    committee is: a member moved to another committee is never an echo.
    """
    body = v1_member_body(data).body
    return v1_fingerprint({**body, MEMBER_COMMITTEE_FINGERPRINT_KEY: data.get("committee_uid")})


def written_fingerprint(object_type: str, data: Mapping[str, Any] | None) -> str | None:
    """The V1-relevant fingerprint of a V2 committee or member body the forward path
    wrote; None for other types (their V2 events do not flow back to V1)."""
    if data is None:
        return None
    if object_type == V2ObjectType.COMMITTEE:
        return committee_fingerprint(data)
    if object_type == V2ObjectType.COMMITTEE_MEMBER:
        return member_fingerprint(data)
    return None


def event_fingerprint(event: V2Event) -> str | None:
    """The V1-relevant content of a create or update event; None for a delete.

    A delete has no content to compare (and is never an echo to skip by content).
    """
    if event.action is V2Action.DELETED:
        return None
    if event.object_type is V2ObjectType.COMMITTEE:
        return committee_fingerprint(event.data)
    return member_fingerprint(event.data)


def _canonical(key: str, value: Any) -> Any:
    if isinstance(value, str):
        text = " ".join(value.split())
        return text.casefold() if key == MEMBER_EMAIL_KEY else text
    return value


class _BodyOut:
    """The body being built and its warnings."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {}
        self.warnings: list[str] = []

    def warn(self, field: str, message: str) -> None:
        self.warnings.append(f"{field}: {message}")

    def put_text(self, key: str, field: str, value: Any) -> None:
        """A trimmed non-empty string; null and blank are left out (V1 keeps its value)."""
        if value is None:
            return
        if not isinstance(value, str):
            self.warn(field, f"{short_repr(value)} is not text; left out")
            return
        text = value.strip()
        if not text:
            return
        if key in EMAIL_KEYS and not EMAIL_SHAPE.fullmatch(text):
            self.warn(field, f"{short_repr(value)} is not an e-mail address; left out")
            return
        self.body[key] = text

    def put_date(self, key: str, field: str, value: Any) -> None:
        """``YYYY-MM-DD`` from a date or date-time string; other values are left out."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return
        day = to_date(value)
        if day is None:
            self.warn(field, f"{short_repr(value)} is not a date; left out")
            return
        self.body[key] = day

    def put_account_id(self, value: Any) -> None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return
        if isinstance(value, str) and SALESFORCE_ID_PATTERN.fullmatch(value.strip()):
            self.body[MEMBER_ORGANIZATION_KEY] = value.strip()
        else:
            self.warn("organization.id", f"{short_repr(value)} is not a V1 account id; left out")
