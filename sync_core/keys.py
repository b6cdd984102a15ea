"""The V1 key codec: which object type a ``v1-objects`` key names, and its record id.

Keys are ``<schema>-<table>.<id>``. Both the bridge and the operator commands need
this, so it sits in the shared core; it does no I/O. It also holds the rules of
a key NATS KV accepts (``is_valid_kv_key``), which every KV write checks.
"""

from __future__ import annotations

import enum
import re
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


# The key alphabet of NATS KV (nats.go's and nats-py's check), with the subject
# rules a key must also meet: no empty token, so no leading, trailing or double dot.
KV_KEY_PATTERN = re.compile(r"[-/_=.a-zA-Z0-9]+")
# Far below nats-server's 4096-byte control line, which also carries the
# ``$KV.{bucket}.`` prefix, a reply inbox and the sizes.
KV_KEY_MAX_CHARS = 1024
KEY_PREVIEW_CHARS = 60


class InvalidKVKey(ValueError):
    """A key NATS KV would refuse (or that would make the server drop the connection)."""


def is_valid_kv_key(key: object) -> bool:
    """Whether ``key`` is a KV key the server accepts."""
    return (
        isinstance(key, str)
        and 0 < len(key) <= KV_KEY_MAX_CHARS
        and KV_KEY_PATTERN.fullmatch(key) is not None
        and not key.startswith(".")
        and not key.endswith(".")
        and ".." not in key
    )


def check_kv_key(key: str) -> str:
    """``key`` itself, or ``InvalidKVKey`` naming (the start of) it."""
    if not is_valid_kv_key(key):
        preview = key[:KEY_PREVIEW_CHARS] if isinstance(key, str) else type(key).__name__
        length = len(key) if isinstance(key, str) else 0
        raise InvalidKVKey(f"not a valid KV key ({length} characters): {preview!r}")
    return key


# The forward mapping of a record in ``v1-mappings``: ``{object type}.sfid.{id}``.
FORWARD_MAPPING_INFIX = ".sfid."


def forward_mapping_key(object_type: ObjectType, record_id: str) -> str:
    """The ``v1-mappings`` key holding the V2 uid of record ``record_id`` of ``object_type``."""
    return f"{object_type.value}{FORWARD_MAPPING_INFIX}{record_id}"
