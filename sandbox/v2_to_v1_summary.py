"""The V2 -> V1 lines of ``make run``'s summary, and the worker's count they read.

``V2ToV1Counts`` holds what the direction did in the run: the V2 indexer
events captured, the V1 writes the V1 API fake answered (created, updated,
deleted), the echoes skipped both ways (V2 events of this service's own
writes, from the worker's ``v1sync_v2_to_v1_outcomes``; V1 rows the V1 API
wrote back, skipped by the forward path) and the direction's dead letters.
"""

from __future__ import annotations

import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# The worker's count of V2 -> V1 runs by outcome (tasks.run.metrics.V2_TO_V1_OUTCOMES).
V2_TO_V1_METRIC = "v1sync_v2_to_v1_outcomes"
ECHO_OUTCOME = "skipped:echo"
METRICS_TIMEOUT = 5.0


@dataclass(frozen=True)
class V2ToV1Counts:
    """What the V2 -> V1 direction did in one run (see the module)."""

    stream: str
    captured: int | None
    v1_writes: dict[str, int]
    # None when the worker's metrics could not be read.
    v2_events_skipped_as_echo: int | None
    v1_rows_skipped_as_echo: int
    v1_rows_written_back: int
    dead_letters: int

    def lines(self) -> list[str]:
        """The summary's lines, the first after ``V2 -> V1``, the others below it."""
        if self.captured is None:
            return [f"on, but the bridge has not created stream {self.stream}"]
        v2_echoes = (
            "?" if self.v2_events_skipped_as_echo is None else self.v2_events_skipped_as_echo
        )
        writes = ", ".join(f"{count} {name}" for name, count in self.v1_writes.items())
        return [
            f"on: {self.captured} V2 indexer events captured in {self.stream}",
            f"V1 writes: {writes}",
            f"echoes skipped: {v2_echoes} V2 events (this service's own writes), "
            f"{self.v1_rows_skipped_as_echo}/{self.v1_rows_written_back} V1 rows "
            "the V1 API wrote back (by the forward path)",
            f"dead letters: {self.dead_letters}",
        ]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form ``dev --dump-state`` writes."""
        return asdict(self)


def worker_v2_to_v1_outcomes(metrics_url: str, timeout: float = METRICS_TIMEOUT) -> dict[str, int]:
    """The worker's V2 -> V1 run counts by outcome, summed over object types.

    Empty when the worker does not answer (it is restarting, or gone).
    """
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout) as answer:  # noqa: S310 - loopback
            text = answer.read().decode()
    except OSError:
        return {}
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != V2_TO_V1_METRIC:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                outcome = sample.labels.get("outcome", "")
                counts[outcome] = counts.get(outcome, 0) + int(sample.value)
    return counts
