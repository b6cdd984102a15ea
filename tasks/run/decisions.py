"""The pure decisions of a sync run, shared by the task and ``explain``.

Which keys are skipped, what a KV value asks for, and whether an error is
retried or dead-lettered: the task (``tasks.run.sync``) acts on these answers,
and ``v1-sync-helper explain`` reports them without acting, so the two can
never disagree. Nothing here does I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tasks.errors import SyncError
from tasks.kinds.base import ObjectKind
from tasks.mapping.codec import decode_value, is_empty, is_soft_delete
from tasks.mapping.record_ids import checked_record

DELETES_DISABLED_REASON = "deletes_disabled"
ECHO_REASON = "echo"
# The ``lastmodifiedbyid`` V1 writes for changes made by a machine client.
MACHINE_CLIENT_SUFFIX = "@clients"


@dataclass(frozen=True)
class Skip:
    """The run ends as ``skipped`` for ``reason``, logged at ``log_level``."""

    reason: str
    log_level: int


def skip_for_key(kind: ObjectKind | None, service_available: bool) -> Skip | None:
    """Why a key of ``kind`` (None: not a type we sync) is not synced, or None when it is.

    ``service_available``: the worker has the kind's V2 service (``kind.available``).
    """
    if kind is None:
        return Skip("unknown_prefix", logging.DEBUG)
    if not service_available:
        return Skip(kind.v2.missing_reason, logging.WARNING)
    return None


@dataclass(frozen=True)
class ValueReading:
    """What a PUT's value asks for: a record to sync, a soft delete, or a skip."""

    record: dict[str, Any] | None = None
    soft_delete: bool = False
    skip: Skip | None = None


def read_value(value: bytes, reference_columns: tuple[str, ...], key_id: str) -> ValueReading:
    """Read the value of a key with id ``key_id`` (``reference_columns``: its kind's).

    Raises ``InvalidRecord`` when it cannot be decoded, or when its ids do not
    fit (``tasks.mapping.record_ids.checked_record``: checked before anything acts on
    the record, a soft delete included).
    """
    if is_empty(value):
        return ValueReading(skip=Skip("empty_value", logging.INFO))
    record = checked_record(reference_columns, key_id, decode_value(value))
    return ValueReading(record=record, soft_delete=is_soft_delete(record))


def echo_skip(record: dict[str, Any], auth0_client_id: str) -> Skip | None:
    """``Skip(echo)`` when V1 stored the row for a change this service made, else None.

    The reverse direction writes to V1 as the Auth0 client ``auth0_client_id``;
    V1 then stores ``lastmodifiedbyid`` = ``{AUTH0_CLIENT_ID}@clients`` and the
    loader puts the row back: an echo of a V2 change, not news. Deletes are
    never echoes: the caller asks only for upserts.
    """
    modified_by = record.get("lastmodifiedbyid")
    if (
        isinstance(modified_by, str)
        and modified_by.strip() == auth0_client_id + MACHINE_CLIENT_SUFFIX
    ):
        return Skip(ECHO_REASON, logging.DEBUG)
    return None


def delete_skip(tombstoned: bool, mapped: bool, deletes_enabled: bool) -> Skip | None:
    """Why a delete calls no V2 (``tasks.run.deletes``), or None when it goes ahead.

    ``tombstoned``: the forward mapping holds the tombstone; ``mapped``: it holds a uid.
    """
    if tombstoned:
        return Skip("already_deleted", logging.INFO)
    if not mapped:
        return Skip("not_in_v2", logging.INFO)
    if not deletes_enabled:
        return Skip(DELETES_DISABLED_REASON, logging.WARNING)
    return None


def should_retry(error: SyncError, attempt: int, retry_max: int) -> bool:
    """Whether ``error`` on try ``attempt`` (0 first) is retried rather than dead-lettered."""
    return error.transient and attempt < retry_max
