"""Dead letters: tasks that cannot succeed, kept in JetStream for people to look at.

They live in the sync state bucket (``SYNC_STATE_BUCKET``, ``v1-sync-state``)
under ``deadletter.{key}``: one letter per V1 key, the latest failure wins (a
newer revision's letter replaces an older one's), so they survive the loss of
Redis. The value is a JSON object with ``id`` (the task id
``{key}@{revision}``), ``key``, ``revision``, ``operation``, ``error_kind``,
``error_message``, ``status``, ``body_excerpt``, ``attempts``,
``first_failure`` and ``last_failure`` (Unix seconds, floats), and ``epoch``:
the life of ``v1-objects`` the revision belongs to (``sync_core.epochs``;
absent in letters written before epochs). Revisions of two lives do not
compare: a letter of another life is replaced, or dropped by a success, whatever
its revision. The workers add
entries and drop a key's letter once a later run of the key succeeds; the
operations commands list, show, re-queue and purge them.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from sync_core.broker import task_id_for
from sync_core.kv_listing import ListingStalled, current_entries
from sync_core.nats_client import SyncNats
from sync_core.sync_state import CAS_ATTEMPTS, DEAD_LETTER_PREFIX, dead_letter_key
from tasks.errors import BODY_EXCERPT_CHARS

log = logging.getLogger(__name__)

# Listing stops when the watcher stays idle this long (it signals the end first).
LIST_IDLE_TIMEOUT = 10.0
LIST_TIMEOUT = 120.0
ERROR_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class DeadLetter:
    """One task that was given up on, and why."""

    id: str
    key: str
    revision: int
    operation: str
    error_kind: str
    error_message: str
    status: int | None
    body_excerpt: str | None
    attempts: int
    first_failure: float
    last_failure: float
    epoch: int | None = None

    def to_json(self) -> str:
        """The stored form (see the module docstring)."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> DeadLetter:
        """Parse the stored form; raises ``ValueError`` when it is not one."""
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(
                id=str(data["id"]),
                key=str(data["key"]),
                revision=int(data["revision"]),
                operation=str(data["operation"]),
                error_kind=str(data["error_kind"]),
                error_message=str(data["error_message"]),
                status=None if data.get("status") is None else int(data["status"]),
                body_excerpt=data.get("body_excerpt"),
                attempts=int(data["attempts"]),
                first_failure=float(data["first_failure"]),
                last_failure=float(data["last_failure"]),
                epoch=None if data.get("epoch") is None else int(data["epoch"]),
            )
        except (TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"not a dead letter: {type(error).__name__}: {error}") from None


# (``list`` is also a method name of the store: the alias keeps annotations unambiguous.)
StoredLetters = list[tuple[DeadLetter, int]]


class DeadLetterStore:
    """The dead letters in the sync state bucket.

    Parameters:
        nats: the process's blocking NATS client.
        bucket: the sync state bucket (``SYNC_STATE_BUCKET``).
    """

    def __init__(self, nats: SyncNats, bucket: str) -> None:
        self._nats = nats
        self.bucket = bucket

    def __repr__(self) -> str:
        return f"DeadLetterStore(bucket={self.bucket!r})"

    @property
    def _kv(self) -> KeyValue:
        return self._nats.kv(self.bucket)

    def add(
        self,
        key: str,
        revision: int,
        operation: str,
        *,
        error_kind: str,
        error_message: str,
        status: int | None = None,
        body_excerpt: str | None = None,
        attempts: int = 1,
        now: float | None = None,
        epoch: int | None = None,
    ) -> DeadLetter:
        """Store (or refresh) the dead letter of task ``key@revision`` of life ``epoch``.

        A letter of the same revision keeps its ``first_failure``; a letter of
        an older revision, or of another life, is replaced; one of a newer
        revision of the same life stays (and is returned).
        """
        task_id = task_id_for(key, revision)
        when = time.time() if now is None else now
        for _ in range(CAS_ATTEMPTS):
            previous, kv_revision = self._read(key)
            same_life = previous is not None and previous.epoch == epoch
            if previous is not None and same_life and previous.revision > revision:
                return previous
            first = when
            if previous is not None and same_life and previous.revision == revision:
                first = min(when, previous.first_failure)
            letter = DeadLetter(
                id=task_id,
                key=key,
                revision=revision,
                operation=operation,
                error_kind=error_kind,
                error_message=error_message[:ERROR_MESSAGE_CHARS],
                status=status,
                body_excerpt=body_excerpt[:BODY_EXCERPT_CHARS] if body_excerpt else None,
                attempts=attempts,
                first_failure=first,
                last_failure=when,
                epoch=epoch,
            )
            if self._write(key, letter, kv_revision):
                return letter
        raise RuntimeError(f"the dead letter of {key} kept changing under the write")

    def list(self) -> list[DeadLetter]:
        """Every dead letter, the most recent failure first (malformed entries skipped)."""
        letters = [letter for letter, _ in self._entries()]
        letters.sort(key=lambda letter: letter.last_failure, reverse=True)
        return letters

    def get(self, task_id: str) -> DeadLetter | None:
        """The dead letter with id ``task_id`` (``key@revision``), or None."""
        key, _, revision = task_id.rpartition("@")
        if not key or not revision.isdigit():
            return None
        letter, _ = self._read(key)
        return letter if letter is not None and letter.id == task_id else None

    def remove(self, task_id: str) -> bool:
        """Delete one dead letter; True when it existed."""
        letter = self.get(task_id)
        if letter is None:
            return False
        return bool(self.remove_unchanged([letter]))

    def remove_unchanged(self, letters: Sequence[DeadLetter]) -> builtins.list[str]:
        """Delete the letters still stored as read; return the ids deleted.

        A letter rewritten since (the re-queued task failed again) stays.
        """
        removed: builtins.list[str] = []
        for letter in letters:
            current, kv_revision = self._read(letter.key)
            if current is None or current != letter:
                continue
            try:
                self._nats.run(self._kv.delete(dead_letter_key(letter.key), last=kv_revision))
            except (KeyWrongLastSequenceError, APIError):
                continue
            removed.append(letter.id)
        return removed

    def remove_settled(self, key: str, revision: int, epoch: int | None = None) -> None:
        """Drop the key's letter when it is for ``revision`` of life ``epoch`` or older, or of
        another life (a later run succeeded)."""
        letter, kv_revision = self._read(key)
        if letter is None or (letter.epoch == epoch and letter.revision > revision):
            return
        try:
            self._nats.run(self._kv.delete(dead_letter_key(key), last=kv_revision))
        except (KeyWrongLastSequenceError, APIError):
            log.debug("dead letter changed before its removal", extra={"key": key})

    def purge(self) -> int:
        """Delete every dead letter; the number deleted."""
        entries = self._entries()
        for letter, _ in entries:
            self._nats.run(self._kv.purge(dead_letter_key(letter.key)))
        return len(entries)

    def count(self) -> int:
        """How many dead letters there are."""
        return len(self._entries())

    # -- storage -----------------------------------------------------------

    def _read(self, key: str) -> tuple[DeadLetter | None, int]:
        """The key's letter and the KV revision to compare against (0: never written)."""
        try:
            entry = self._nats.run(self._kv.get(dead_letter_key(key)))
        except KeyNotFoundError as missing:
            revision = int(missing.entry.revision or 0) if missing.entry is not None else 0
            return None, revision
        try:
            return DeadLetter.from_json(bytes(entry.value or b"")), int(entry.revision or 0)
        except ValueError:
            log.warning("replacing a malformed dead letter", extra={"key": key})
            return None, int(entry.revision or 0)

    def _write(self, key: str, letter: DeadLetter, kv_revision: int) -> bool:
        data = letter.to_json().encode()
        try:
            if kv_revision:
                self._nats.run(self._kv.update(dead_letter_key(key), data, last=kv_revision))
            else:
                self._nats.run(self._kv.create(dead_letter_key(key), data))
        except KeyWrongLastSequenceError:
            return False
        return True

    def _entries(self) -> StoredLetters:
        # The bucket handle first: looking it up inside the coroutine would block its own loop.
        return self._nats.run(self._list(self._kv), timeout=LIST_TIMEOUT)

    async def _list(self, kv: KeyValue) -> StoredLetters:
        # Ends at the last letter, not at nats-py's end marker, which can come before
        # letters already on their way (``sync_core.kv_listing``).
        try:
            entries = await current_entries(
                kv, f"{DEAD_LETTER_PREFIX}>", idle_timeout=LIST_IDLE_TIMEOUT
            )
        except ListingStalled:
            raise TimeoutError("listing the dead letters stalled") from None
        found: StoredLetters = []
        for entry in entries:
            try:
                found.append(
                    (DeadLetter.from_json(bytes(entry.value or b"")), int(entry.revision or 0))
                )
            except ValueError:
                log.warning("skipping a malformed dead letter", extra={"id": entry.key})
        return found
