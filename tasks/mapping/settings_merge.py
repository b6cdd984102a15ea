"""Laying V1-owned settings over a V2 settings resource (project or committee), pure.

The settings PUT replaces the whole resource, so the body starts from the
current V2 settings: read-only fields out (``uid``, timestamps, each user's
``invite``), every field V1 does not own kept as is (``writers``, ``auditors``,
``meeting_coordinators``, ``member_visibility``…), the V1 values on top.

User objects are compared by the person, not field by field: V2 rewrites
``name``, ``avatar`` and ``username`` from its own directory on every write, so a
V1 user who is the same person as V2's (``same_user``) keeps V2's object and
changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.mapping.merge import FieldChange, field_changes
from tasks.mapping.project_settings import same_user

SETTINGS_READ_ONLY: frozenset[str] = frozenset({"uid", "created_at", "updated_at"})


# Read-only inside each user object of a settings resource.
USER_READ_ONLY: frozenset[str] = frozenset({"invite"})


def writable_settings(current: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` as a PUT body would carry it: no read-only fields, no nulls."""
    return {
        key: _without_user_read_only(value)
        for key, value in current.items()
        if key not in SETTINGS_READ_ONLY and value is not None
    }


def settings_body(current: Mapping[str, Any], v1_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The full settings PUT body: the writable ``current`` with the V1 values on top."""
    body = writable_settings(current)
    for key, value in v1_settings.items():
        if value is None:
            continue
        below = body.get(key)
        body[key] = below if _is_user(value) and same_user(below, value) else value
    return body


def settings_changes(
    current: Mapping[str, Any], v1_settings: Mapping[str, Any]
) -> tuple[FieldChange, ...]:
    """The settings fields a PUT of ``settings_body`` would change (for ``explain`` too)."""
    return field_changes(
        writable_settings(current), settings_body(current, v1_settings), SETTINGS_READ_ONLY
    )


def planned_settings(
    current: Mapping[str, Any], v1_settings: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The settings PUT body, or None when V2 already has what V1 owns."""
    if not settings_changes(current, v1_settings):
        return None
    return settings_body(current, v1_settings)


def _is_user(value: Any) -> bool:
    return isinstance(value, Mapping) and "email" in value


def _without_user_read_only(value: Any) -> Any:
    """A user object (or a list of them) without its read-only fields."""
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k not in USER_READ_ONLY}
    if isinstance(value, list):
        return [_without_user_read_only(item) for item in value]
    return value
