"""What a dry run would have written: ``RecordedWrite`` and the ``WriteLog`` of one run."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecordedWrite:
    """One write the dry run did not make.

    ``target``: ``kv:{bucket}``, ``v2:{service}``, ``redis`` or ``queue``;
    ``action``: the KV operation, the HTTP method, the Redis command, or
    ``enqueue``; ``key``: the KV key, the V2 path, the Redis key or the task
    id; ``value``: what would have been written.
    """

    target: str
    action: str
    key: str
    value: Any = None


class WriteLog:
    """The writes of one dry run, in order (thread-safe: lease renewals record too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writes: list[RecordedWrite] = []

    def add(self, write: RecordedWrite) -> None:
        with self._lock:
            self._writes.append(write)

    def all(self) -> list[RecordedWrite]:
        with self._lock:
            return list(self._writes)

    def clear(self) -> None:
        with self._lock:
            self._writes.clear()
