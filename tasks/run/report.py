"""The record of one task run: what it worked on and how it ended.

The task fills a ``RunReport`` as it learns things (the sfid after mapping,
the uid after the V2 call, the username after the user lookup) and emits it
as the run's single outcome log line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sync_core.sync_state import PendingRun

OTHER_OBJECT_TYPE = "other"


@dataclass
class RunReport:
    """Context of one run of ``sync_kv_entry``; ``fields()`` is its log ``extra``."""

    key: str
    revision: int
    operation: str
    attempt: int = 0
    # The life of ``v1-objects`` ``revision`` belongs to (``sync_core.epochs``):
    # the task's stamp until the run settles it (``check_life``).
    epoch: int | None = None
    object_type: str = OTHER_OBJECT_TYPE
    sfid: str | None = None
    slug: str | None = None
    project_uid: str | None = None
    committee_uid: str | None = None
    member_uid: str | None = None
    # The V2 uid of the object itself, whatever its type (``ObjectKind.note_uid``).
    object_uid: str | None = None
    username: str | None = None
    reason: str | None = None
    error_kind: str | None = None
    error_message: str | None = None
    status: int | None = None
    countdown: float | None = None
    # Set when the run ends parked: what the durable state records.
    pending: PendingRun | None = None
    # The durable state needs no write for this run's outcome.
    settled_already: bool = False
    # Set when the run's revision is to be cached in Redis as synced (with the outcome count).
    cache_synced: bool = False
    # Set when the run wrote its own forward mapping (a new or changed uid): children
    # parked on it are looked for.
    mapped_anew: bool = False
    # What the mapping dropped or changed (logged one line each, not in ``fields()``).
    warnings: tuple[str, ...] = ()
    # The V2 body the mapping produced (``explain`` shows it; not logged).
    body: dict[str, Any] | None = None
    # The body a create or update sent to V2 (its V1-relevant fingerprint is
    # recorded for the V2 -> V1 echo check; not logged).
    written: dict[str, Any] | None = None
    # When the synced V1 value was written into v1-objects (the sync-lag histogram's start).
    written_at: datetime | None = None
    started: float = field(default_factory=time.perf_counter)

    def uid(self) -> str | None:
        """The uid the sync state records: a committee's own (a member's committee's),
        else the project's, else the object's own (a type without those fields)."""
        return self.committee_uid or self.project_uid or self.object_uid

    def context(self) -> dict[str, Any]:
        """The standard log fields known so far (for log lines during the run)."""
        names = (
            "key",
            "operation",
            "sfid",
            "slug",
            "project_uid",
            "committee_uid",
            "member_uid",
            "username",
        )
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def fields(self, outcome: str) -> dict[str, Any]:
        """Every field of the outcome line."""
        extra = self.context()
        extra.update(
            outcome=outcome,
            revision=self.revision,
            object_type=self.object_type,
            attempt=self.attempt,
            duration_ms=round((time.perf_counter() - self.started) * 1000, 1),
        )
        optional = {
            "reason": self.reason,
            "error_kind": self.error_kind,
            "error_message": self.error_message,
            "status": self.status,
            "countdown": None if self.countdown is None else round(self.countdown, 3),
        }
        extra.update({name: value for name, value in optional.items() if value is not None})
        return extra
