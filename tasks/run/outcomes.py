"""What a sync task run ended in, and the per-minute counts the ``status`` command shows.

Every run ends in exactly one outcome. Besides the log line and the Prometheus
counter (see ``tasks.run.sync``), the outcome is counted in Redis under
``v1sync:outcomes:{unix_minute}`` (a hash: outcome -> count) that expires
after two hours, so any process can read the last hour without scraping
workers.
"""

from __future__ import annotations

import enum
import time

import redis

OUTCOME_KEY_PREFIX = "v1sync:outcomes:"
OUTCOME_TTL_SECONDS = 2 * 3600
SECONDS_PER_MINUTE = 60


class Outcome(enum.StrEnum):
    """How one run of ``sync_kv_entry`` ended."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SUPERSEDED = "superseded"
    SKIPPED = "skipped"
    RETRYING = "retrying"
    # Waiting durably for a parent's mapping; the parent's run enqueues it again.
    PARKED = "parked"
    DEAD_LETTERED = "dead_lettered"
    # The V2 object is gone (deleted now, or found already gone: ``reason`` says which).
    DELETED = "deleted"
    # V2 answered the delete with a refusal: a dead letter of its own kind, mappings kept.
    DELETE_REFUSED = "delete_refused"


# Skip reasons counted on their own in the per-minute counts (``skipped:{reason}``),
# so that ``status`` shows deletes that did not reach V2 apart from other skips.
COUNTED_SKIP_REASONS = frozenset(
    {"tombstoned", "not_in_v2", "not_in_v1", "deletes_disabled", "echo"}
)
# Dead letters whose run ends in an outcome of its own rather than ``dead_lettered``.
DEAD_LETTER_OUTCOMES = {"delete_refused": Outcome.DELETE_REFUSED}


def outcome_label(outcome: Outcome, reason: str | None = None) -> str:
    """The name an outcome is counted under: ``skipped:tombstoned`` for the counted reasons."""
    if outcome is Outcome.SKIPPED and reason in COUNTED_SKIP_REASONS:
        return f"{outcome.value}:{reason}"
    return outcome.value


def dead_letter_outcome(error_kind: str) -> Outcome:
    """The outcome of a run that wrote a dead letter of ``error_kind``."""
    return DEAD_LETTER_OUTCOMES.get(error_kind, Outcome.DEAD_LETTERED)


def ends_in_dead_letter(outcome: Outcome) -> bool:
    """Whether a run with ``outcome`` wrote a dead letter (it ends as a Celery FAILURE)."""
    return outcome is Outcome.DEAD_LETTERED or outcome in DEAD_LETTER_OUTCOMES.values()


def minute_key(now: float) -> str:
    """The Redis hash of the minute ``now`` falls in."""
    return f"{OUTCOME_KEY_PREFIX}{int(now // SECONDS_PER_MINUTE)}"


def count_outcome(client: redis.Redis, outcome: str, now: float | None = None) -> None:
    """Add one ``outcome`` to the current minute's counts."""
    with client.pipeline(transaction=False) as pipe:
        add_outcome(pipe, outcome, now)
        pipe.execute()


def add_outcome(pipe: redis.client.Pipeline, outcome: str, now: float | None = None) -> None:
    """Queue ``count_outcome``'s commands on ``pipe`` (a caller's own round trip)."""
    key = minute_key(time.time() if now is None else now)
    pipe.hincrby(key, outcome, 1)
    pipe.expire(key, OUTCOME_TTL_SECONDS)


def recent_outcomes(
    client: redis.Redis, minutes: int = 60, now: float | None = None
) -> dict[str, int]:
    """Outcome counts summed over the last ``minutes`` minutes (the current one included)."""
    current = int((time.time() if now is None else now) // SECONDS_PER_MINUTE)
    with client.pipeline(transaction=False) as pipe:
        for minute in range(current - minutes + 1, current + 1):
            pipe.hgetall(f"{OUTCOME_KEY_PREFIX}{minute}")
        replies = pipe.execute()
    totals: dict[str, int] = {}
    for reply in replies:
        for name, count in reply.items():
            label = name.decode() if isinstance(name, bytes) else str(name)
            totals[label] = totals.get(label, 0) + int(count)
    return totals
