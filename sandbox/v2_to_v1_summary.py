"""The V2 -> V1 lines of ``make run``'s summary, and the worker's count they read.

``V2ToV1Counts`` holds what the direction did in the run: the V2 indexer
events captured, the V1 writes the V1 API fake answered (created, updated,
deleted), the echoes skipped both ways (V2 events of this service's own
writes: most are settled by the bridge, ``v1sync_bridge_v2_echoes_skipped``,
the others by the worker, ``v1sync_v2_to_v1_outcomes``; V1 rows the V1 API
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
# The bridge's count of the echoes it settled without a task (bridge.v2_echoes).
BRIDGE_ECHO_METRIC = "v1sync_bridge_v2_echoes_skipped"
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
    return _counts_by(metrics_url, V2_TO_V1_METRIC, "outcome", timeout) or {}


def bridge_v2_echoes_skipped(metrics_url: str, timeout: float = METRICS_TIMEOUT) -> int | None:
    """The echoes the bridge settled without a task, summed over object types; None when
    the bridge does not answer."""
    counts = _counts_by(metrics_url, BRIDGE_ECHO_METRIC, "object_type", timeout)
    return None if counts is None else sum(counts.values())


def v2_events_skipped_as_echo(worker: dict[str, int], bridge: int | None) -> int | None:
    """Every V2 event skipped as an echo, by the bridge or by the worker; None when the
    bridge did not answer (it settles most of them)."""
    if bridge is None:
        return None
    return bridge + worker.get(ECHO_OUTCOME, 0)


def _counts_by(metrics_url: str, metric: str, label: str, timeout: float) -> dict[str, int] | None:
    """The ``_total`` samples of counter ``metric`` summed by ``label``; None on no answer."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout) as answer:  # noqa: S310 - loopback
            text = answer.read().decode()
    except OSError:
        return None
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                value = sample.labels.get(label, "")
                counts[value] = counts.get(value, 0) + int(sample.value)
    return counts
