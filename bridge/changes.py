"""What one message of the KV stream means: a key, its revision, an operation.

A KV bucket is a JetStream stream whose subjects are ``$KV.{bucket}.{key}``.
A PUT carries no ``KV-Operation`` header; deletes carry ``DEL`` or ``PURGE``;
servers 2.11+ also write marker messages (header ``Nats-Marker-Reason``) when a
limit or TTL removes a key, which ADR-48 says to read as deletes. The revision
of an entry is the message's stream sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sync_core.kv_listing import (
    KV_OPERATION_HEADER as KV_OPERATION_HEADER,
)
from sync_core.kv_listing import (
    MARKER_REASON_HEADER as MARKER_REASON_HEADER,
)
from sync_core.kv_listing import operation_of as operation_of

SKIP_FOREIGN_SUBJECT = "foreign_subject"
SKIP_EMPTY_KEY = "empty_key"
SKIP_UNKNOWN_OPERATION = "unknown_operation"


@dataclass(frozen=True, slots=True)
class KvChange:
    """One change of one key: the arguments of its ``sync_kv_entry`` task."""

    key: str
    revision: int
    operation: str


@dataclass(frozen=True, slots=True)
class Skip:
    """A stream message that yields no task, and why (a metrics label)."""

    reason: str


def subject_prefix(bucket: str) -> str:
    """The subject prefix of every key of ``bucket``: ``$KV.{bucket}.``."""
    return f"$KV.{bucket}."


def change_of(
    subject: str, headers: Mapping[str, str] | None, sequence: int, prefix: str
) -> KvChange | Skip:
    """Turn one stream message into the change it records, or say why not."""
    if not subject.startswith(prefix):
        return Skip(SKIP_FOREIGN_SUBJECT)
    key = subject[len(prefix) :]
    if not key:
        return Skip(SKIP_EMPTY_KEY)
    operation = operation_of(headers)
    if operation is None:
        return Skip(SKIP_UNKNOWN_OPERATION)
    return KvChange(key, sequence, operation)


class ChangeReader(Protocol):
    """What one stream message means for the loop: a change to enqueue, or a ``Skip``.

    ``stamps_epoch``: whether the tasks carry the epoch of ``v1-objects``.
    """

    stamps_epoch: bool

    def __call__(self, msg: Any) -> KvChange | Skip:
        """The change ``msg`` records."""
        ...


class KvChangeReader:
    """The KV consumer's reader: ``change_of`` on the bucket's subjects."""

    stamps_epoch = True

    def __init__(self, bucket: str) -> None:
        self.prefix = subject_prefix(bucket)

    def __call__(self, msg: Any) -> KvChange | Skip:
        """The key, revision and operation of one KV stream message."""
        return change_of(msg.subject, msg.headers, msg.metadata.sequence.stream, self.prefix)
