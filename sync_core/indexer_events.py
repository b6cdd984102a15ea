"""The V2 indexer's committee events, parsed and checked: a value or a clear error.

The indexer publishes ``lfx.{object_type}.{action}`` with the envelope of
``reverse-sync.md``::

    {"document_id": "committee:<uid>", "object_id": "<uid>", "object_type": "committee",
     "action": "created" | "updated" | "deleted", "timestamp": "<RFC 3339>",
     "body": {"parent_refs": [...], "created_by_principals": [...], ..., "data": {...}}}

``parse_v2_event`` never raises: bad input of any shape comes back as an
``EventRejected`` naming what is wrong (so the run can log, count and
dead-letter it and move on). A delete's ``data`` may be empty: only
``object_id`` is certain; a create or an update must carry the object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from sync_core.value_repr import short_repr

# Principals lists of the envelope body, by the action that fills them.
PRINCIPALS_FIELDS = ("created_by_principals", "updated_by_principals", "deleted_by_principals")
SUBJECT_PREFIX = "lfx"
# The longest id this service accepts in an event (a UUID is 36; V2 uids are UUIDs).
OBJECT_ID_MAX_CHARS = 200

EnumT = TypeVar("EnumT", bound=StrEnum)


class V2ObjectType(StrEnum):
    """The V2 object types whose events flow back to V1."""

    COMMITTEE = "committee"
    COMMITTEE_MEMBER = "committee_member"


class V2Action(StrEnum):
    """What happened to the object."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True)
class V2Event:
    """One checked indexer event.

    ``data`` is the V2 object as the service returned it (empty for most
    deletes); ``principals`` are the ``*_by_principals`` of the action (who
    caused the change); ``timestamp`` is timezone-aware.
    """

    object_type: V2ObjectType
    action: V2Action
    object_id: str
    document_id: str
    timestamp: datetime
    data: dict[str, Any]
    parent_refs: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        """``lfx.{object_type}.{action}``, the subject the indexer publishes it on."""
        return f"{SUBJECT_PREFIX}.{self.object_type}.{self.action}"


@dataclass(frozen=True)
class EventRejected:
    """Why an event cannot be used. ``kind`` is a stable label, ``message`` for people."""

    kind: str
    message: str
    object_id: str | None = field(default=None)

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def parse_v2_event(
    payload: bytes | str | Any, subject: str | None = None
) -> V2Event | EventRejected:
    """The event of ``payload`` (JSON bytes, text or an already decoded object).

    With ``subject`` the envelope's type and action must agree with it.
    Never raises: see the module docstring.
    """
    try:
        return _parse(payload, subject)
    except _Rejection as rejection:
        return rejection.value
    except RecursionError:
        return EventRejected("undecodable", "the event is nested too deeply")


class _Rejection(Exception):
    def __init__(self, kind: str, message: str, object_id: str | None = None) -> None:
        super().__init__(message)
        self.value = EventRejected(kind, message, object_id)


def _parse(payload: Any, subject: str | None) -> V2Event:
    envelope = _decoded(payload)
    object_id = envelope.get("object_id")
    if not isinstance(object_id, str) or not object_id.strip():
        raise _Rejection("missing_field", f"object_id is {short_repr(object_id)}, not an id")
    object_id = object_id.strip()
    if len(object_id) > OBJECT_ID_MAX_CHARS or any(c.isspace() for c in object_id):
        raise _Rejection("bad_field", f"object_id {short_repr(object_id)} is not an id")
    object_type = _enum_field(envelope, "object_type", V2ObjectType, object_id)
    action = _enum_field(envelope, "action", V2Action, object_id)
    document_id = envelope.get("document_id")
    if document_id != f"{object_type}:{object_id}":
        raise _Rejection(
            "bad_field",
            f"document_id {short_repr(document_id)} is not {object_type}:{object_id}",
            object_id,
        )
    timestamp = _timestamp(envelope.get("timestamp"), object_id)
    body = envelope.get("body")
    if not isinstance(body, Mapping):
        raise _Rejection("missing_field", f"body is {short_repr(body)}, not an object", object_id)
    data = body.get("data")
    if data is None and action is V2Action.DELETED:
        data = {}
    if not isinstance(data, Mapping):
        raise _Rejection("bad_field", f"body.data is {short_repr(data)}, not an object", object_id)
    if action is not V2Action.DELETED and not data:
        raise _Rejection("missing_field", f"a {action} event carries no body.data", object_id)
    uid = data.get("uid")
    if uid is not None and uid != object_id:
        raise _Rejection(
            "bad_field", f"body.data.uid {short_repr(uid)} is not the object_id", object_id
        )
    if subject is not None and subject != f"{SUBJECT_PREFIX}.{object_type}.{action}":
        raise _Rejection(
            "subject_mismatch",
            f"a {object_type} {action} event arrived on {short_repr(subject)}",
            object_id,
        )
    return V2Event(
        object_type=object_type,
        action=action,
        object_id=object_id,
        document_id=document_id,
        timestamp=timestamp,
        data=dict(data),
        parent_refs=_strings(body.get("parent_refs"), "parent_refs", object_id),
        principals=_strings(body.get(f"{action}_by_principals"), "principals", object_id),
    )


def _decoded(payload: Any) -> Mapping[str, Any]:
    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise _Rejection("undecodable", "the event is not UTF-8") from None
    if isinstance(payload, str):
        if not payload.strip():
            raise _Rejection("undecodable", "the event is empty")
        try:
            payload = json.loads(payload)
        except ValueError:
            raise _Rejection("undecodable", "the event is not JSON") from None
    if not isinstance(payload, Mapping):
        raise _Rejection("not_an_object", f"the event is {short_repr(payload)}, not an object")
    return payload


def _enum_field(envelope: Mapping[str, Any], name: str, kind: type[EnumT], object_id: str) -> EnumT:
    value = envelope.get(name)
    members = {member.value: member for member in kind}
    if isinstance(value, str) and value in members:
        return members[value]
    raise _Rejection(
        "bad_field", f"{name} is {short_repr(value)}, not one of {', '.join(members)}", object_id
    )


def _timestamp(value: Any, object_id: str) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    raise _Rejection(
        "bad_field", f"timestamp {short_repr(value)} is not an RFC 3339 time", object_id
    )


def _strings(value: Any, name: str, object_id: str) -> tuple[str, ...]:
    """A list of strings (absent or null: empty); anything else is rejected."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Rejection(
            "bad_field", f"{name} is {short_repr(value)}, not a list of strings", object_id
        )
    return tuple(value)
