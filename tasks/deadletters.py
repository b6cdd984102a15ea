"""Dead letters: tasks that cannot succeed, kept in Redis for people to look at.

One Redis hash, ``v1sync:deadletters``: field = task id (``{key}@{revision}``),
value = a JSON object with ``id``, ``key``, ``revision``, ``operation``,
``error_kind``, ``error_message``, ``status``, ``body_excerpt``, ``attempts``,
``first_failure`` and ``last_failure`` (Unix seconds, floats). The workers
add entries; the operations commands list, show, re-queue and purge them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from sync_core.broker import task_id_for
from tasks.errors import BODY_EXCERPT_CHARS

log = logging.getLogger(__name__)

DEAD_LETTERS_KEY = "v1sync:deadletters"
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
            )
        except (TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"not a dead letter: {type(error).__name__}: {error}") from None


class DeadLetterStore:
    """The dead letters in one Redis database.

    Parameters:
        client: the Redis client (the broker's database is fine).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"DeadLetterStore(key={DEAD_LETTERS_KEY!r})"

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
    ) -> DeadLetter:
        """Store (or refresh) the dead letter of task ``key@revision``.

        An entry that exists already keeps its ``first_failure``.
        """
        task_id = task_id_for(key, revision)
        when = time.time() if now is None else now

        # WATCH so a concurrent add of the same id cannot lose the first failure time.
        with self._client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(DEAD_LETTERS_KEY)
                    previous = pipe.hget(DEAD_LETTERS_KEY, task_id)
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
                        first_failure=_first_failure(previous, when, task_id),
                        last_failure=when,
                    )
                    pipe.multi()
                    pipe.hset(DEAD_LETTERS_KEY, task_id, letter.to_json())
                    pipe.execute()
                    return letter
                except redis.WatchError:
                    continue

    def list(self) -> list[DeadLetter]:
        """Every dead letter, the most recent failure first (malformed entries skipped)."""
        letters = []
        for field, raw in self._client.hgetall(DEAD_LETTERS_KEY).items():
            try:
                letters.append(DeadLetter.from_json(raw))
            except ValueError:
                log.warning("skipping a malformed dead letter", extra={"id": _text(field)})
        letters.sort(key=lambda letter: letter.last_failure, reverse=True)
        return letters

    def get(self, task_id: str) -> DeadLetter | None:
        """The dead letter with id ``task_id``, or None."""
        raw = self._client.hget(DEAD_LETTERS_KEY, task_id)
        return None if raw is None else DeadLetter.from_json(raw)

    def remove(self, task_id: str) -> bool:
        """Delete one dead letter; True when it existed."""
        return bool(self._client.hdel(DEAD_LETTERS_KEY, task_id))

    def purge(self) -> int:
        """Delete every dead letter; the number deleted."""
        with self._client.pipeline() as pipe:
            pipe.hlen(DEAD_LETTERS_KEY)
            pipe.delete(DEAD_LETTERS_KEY)
            count, _ = pipe.execute()
        return int(count)

    def count(self) -> int:
        """How many dead letters there are."""
        return int(self._client.hlen(DEAD_LETTERS_KEY))


def _first_failure(previous: bytes | str | None, now: float, task_id: str) -> float:
    """The earlier of ``now`` and the first failure of an existing entry."""
    if previous is None:
        return now
    try:
        return min(now, DeadLetter.from_json(previous).first_failure)
    except ValueError:
        log.warning("replacing a malformed dead letter", extra={"id": task_id})
        return now


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
