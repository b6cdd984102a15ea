"""The V1-owned settings of a project, with its staff looked up.

Who the staff are: V1 platform ids and Salesforce user ids.

- ``executive_director__c`` and ``program_manager__c`` hold V1 platform (contact)
  ids: the V1 user directory (``tasks.clients.users``, cached in NATS KV) gives
  the username, e-mail and names.
- ``opportunity_owner__c`` holds a Salesforce user id: its record
  ``salesforce_b2b-User.{id}`` in ``v1-objects`` (JSON or msgpack, read only) has
  ``FirstName``, ``LastName``, ``Email`` and ``FullPhotoUrl``. A deleted or missing
  record means no owner.

Every failure is None (logged): the field is then left as V2 has it, never cleared.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sync_core.keys import is_valid_kv_key
from tasks.errors import InvalidRecord
from tasks.kinds.base import KindReport, KindRuntime
from tasks.mapping.codec import decode_value, is_soft_delete
from tasks.mapping.project_settings import (
    SettingsFields,
    StaffMember,
    complete_settings,
    map_project_settings,
)

log = logging.getLogger(__name__)

SALESFORCE_USER_PREFIX = "salesforce_b2b-User."


def look_up_staff(
    runtime: KindRuntime, fields: SettingsFields, report: KindReport
) -> dict[str, StaffMember | None]:
    """What each staff id of ``fields`` names, by V2 field (None: unknown or failed)."""
    found: dict[str, StaffMember | None] = {}
    for v2_field, platform_id in fields.staff.items():
        found[v2_field] = directory_person(runtime, platform_id)
        if found[v2_field] is None:
            log.warning(
                "staff lookup found nobody: the field stays as V2 has it",
                extra=report.context() | {"field": v2_field, "platform_id": platform_id},
            )
    for v2_field, user_id in fields.owners.items():
        found[v2_field] = salesforce_user(runtime, user_id)
        if found[v2_field] is None:
            log.warning(
                "staff lookup found nobody: the field stays as V2 has it",
                extra=report.context() | {"field": v2_field, "salesforce_user": user_id},
            )
    return found


def directory_person(runtime: KindRuntime, platform_id: str) -> StaffMember | None:
    """The V1 user behind ``platform_id`` from the cached user directory, or None."""
    user = runtime.users.person(platform_id)
    if user is None:
        return None
    return StaffMember(
        email=user.email,
        username=user.username,
        first_name=user.first_name,
        last_name=user.last_name,
    )


def salesforce_user(runtime: KindRuntime, user_id: str) -> StaffMember | None:
    """The ``salesforce_b2b-User.{user_id}`` record of ``v1-objects`` as a person, or None."""
    key = SALESFORCE_USER_PREFIX + user_id
    if not is_valid_kv_key(key):
        return None
    try:
        value = runtime.v1_value(key)
    except Exception:
        log.warning("reading a Salesforce user record failed", extra={"key": key}, exc_info=True)
        return None
    if not value:
        return None
    try:
        record = decode_value(value)
    except InvalidRecord:
        log.warning("a Salesforce user record is undecodable", extra={"key": key})
        return None
    if is_soft_delete(record):
        return None
    return StaffMember(
        email=_text(record, "Email"),
        first_name=_text(record, "FirstName"),
        last_name=_text(record, "LastName"),
        avatar=_text(record, "FullPhotoUrl"),
    )


def _text(record: Mapping[str, Any], column: str) -> str:
    value = record.get(column)
    return value if isinstance(value, str) else ""


def project_settings(
    runtime: KindRuntime, record: dict[str, Any], report: KindReport
) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """The V1-owned settings of a project record with its staff looked up, and warnings.

    None when the record carries no settings column.
    """
    fields = map_project_settings(record)
    if fields is None:
        return None, ()
    return complete_settings(fields, look_up_staff(runtime, fields, report))
