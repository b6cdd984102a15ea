"""The V1 key codec: which object type a ``v1-objects`` key names, and its record id.

Keys are ``<schema>-<table>.<id>``. Both the bridge and the operator commands need
this, so it sits in the shared core; it does no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

KEY_SEPARATOR = "."


class ObjectType(enum.StrEnum):
    """The V1 object types this service syncs (or will sync)."""

    PROJECT = "project"
    COMMITTEE = "committee"
    COMMITTEE_MEMBER = "committee_member"


KEY_PREFIXES: Mapping[str, ObjectType] = {
    "salesforce-project__c": ObjectType.PROJECT,
    "platform-collaboration__c": ObjectType.COMMITTEE,
    "platform-community__c": ObjectType.COMMITTEE_MEMBER,
}


def parse_key(key: str) -> tuple[ObjectType | None, str]:
    """Split a ``v1-objects`` key into its object type and record id.

    Everything after the first ``.`` is the id (ids may contain dots). A prefix we
    do not sync, a key without a ``.``, or a key with an empty id gives
    ``(None, id)``: the caller skips it quietly.
    """
    prefix, separator, record_id = key.partition(KEY_SEPARATOR)
    if not separator or not record_id:
        return None, record_id
    return KEY_PREFIXES.get(prefix), record_id
