"""Pieces of the sync task that need no worker: backoff, outcome counters, metrics."""

from __future__ import annotations

import logging
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from sandbox.servers import ValkeyServer
from sync_core.broker import TASK_HARD_TIME_LIMIT, visibility_timeout
from tasks.run.backoff import backoff_cap, lock_wait_countdown, retry_countdown
from tasks.run.metrics import scrape_registry
from tasks.run.outcomes import (
    OUTCOME_KEY_PREFIX,
    OUTCOME_TTL_SECONDS,
    Outcome,
    count_outcome,
    recent_outcomes,
)
from tasks.run.report import RunReport
from tasks.run.sync import SYNCED_PREFIX, cache_outcome, children_parent_key, marked_revision
from tasks.worker.health import WorkerHealth
from tasks.worker.probes import serve_probes


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 2.0), (1, 4.0), (2, 8.0), (7, 256.0), (8, 300.0), (500, 300.0), (-1, 2.0)],
)
def test_backoff_cap_doubles_up_to_the_maximum(attempt: int, expected: float) -> None:
    assert backoff_cap(attempt, 2.0, 300.0) == expected


def test_full_jitter_spans_zero_to_the_cap() -> None:
    assert retry_countdown(3, 2.0, 300.0, draw=lambda: 0.0) == 0.0
    assert retry_countdown(3, 2.0, 300.0, draw=lambda: 0.5) == 8.0
    assert retry_countdown(3, 2.0, 300.0, draw=lambda: 1.0) == 16.0


def test_retry_after_wins_when_longer_but_never_beyond_the_maximum() -> None:
    assert retry_countdown(0, 2.0, 300.0, retry_after=30.0, draw=lambda: 0.5) == 30.0
    assert retry_countdown(5, 2.0, 300.0, retry_after=1.0, draw=lambda: 0.5) == 32.0
    assert retry_countdown(0, 2.0, 300.0, retry_after=10_000.0, draw=lambda: 0.5) == 300.0


def test_every_countdown_plus_hard_limit_stays_below_visibility_timeout() -> None:
    for maximum in (0.2, 300.0, 3600.0):
        worst = retry_countdown(99, 2.0, maximum, retry_after=1e9, draw=lambda: 1.0)
        assert worst + TASK_HARD_TIME_LIMIT < visibility_timeout(maximum)


def test_lock_wait_is_about_a_second() -> None:
    assert lock_wait_countdown(draw=lambda: 0.0) == pytest.approx(0.5)
    assert lock_wait_countdown(draw=lambda: 1.0) == pytest.approx(1.5)


def _report(revision: int, cache_synced: bool, epoch: int = 42) -> RunReport:
    report = RunReport(
        key="salesforce-project__c.a0941000002wBz9AAE",
        revision=revision,
        operation="PUT",
        epoch=epoch,
    )
    report.cache_synced = cache_synced
    return report


def test_the_outcome_count_and_the_synced_marker_share_one_round_trip(
    redis_client: redis.Redis,
) -> None:
    runtime = SimpleNamespace(redis=redis_client)
    cache_outcome(runtime, _report(7, cache_synced=True), Outcome.UPDATED)  # type: ignore[arg-type]
    cache_outcome(runtime, _report(5, cache_synced=True), Outcome.UNCHANGED)  # type: ignore[arg-type]
    cache_outcome(runtime, _report(9, cache_synced=False), Outcome.SUPERSEDED)  # type: ignore[arg-type]
    marker = SYNCED_PREFIX + "salesforce-project__c.a0941000002wBz9AAE"
    assert redis_client.get(marker) == b"42:7"  # never lowered, not set without cache_synced
    assert recent_outcomes(redis_client, 1) == {"updated": 1, "unchanged": 1, "superseded": 1}


def test_the_synced_marker_of_another_bucket_life_is_replaced_and_never_trusted(
    redis_client: redis.Redis,
) -> None:
    """Revisions restart at 1 in a rebuilt ``v1-objects``: a marker is only good in its life."""
    runtime = SimpleNamespace(redis=redis_client)
    marker = SYNCED_PREFIX + "salesforce-project__c.a0941000002wBz9AAE"
    cache_outcome(runtime, _report(500, cache_synced=True, epoch=41), Outcome.UPDATED)  # type: ignore[arg-type]
    assert marked_revision(redis_client.get(marker), 41) == 500
    assert marked_revision(redis_client.get(marker), 42) == -1
    cache_outcome(runtime, _report(3, cache_synced=True, epoch=42), Outcome.UPDATED)  # type: ignore[arg-type]
    assert redis_client.get(marker) == b"42:3"
    redis_client.set(marker, b"900")  # written before epochs: of no known life
    assert marked_revision(redis_client.get(marker), 42) == -1
    cache_outcome(runtime, _report(4, cache_synced=True, epoch=42), Outcome.UPDATED)  # type: ignore[arg-type]
    assert redis_client.get(marker) == b"42:4"


def test_a_broker_without_scripts_still_counts_the_outcome(
    redis_server: ValkeyServer, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.execute_command(
        "ACL", "SETUSER", "noscripts", "on", ">secret", "~*", "&*", "+@all", "-@scripting"
    )
    limited = redis.Redis.from_url(f"redis://noscripts:secret@127.0.0.1:{redis_server.port}/0")
    runtime = SimpleNamespace(redis=limited)
    with caplog.at_level(logging.WARNING):
        cache_outcome(runtime, _report(3, cache_synced=True), Outcome.CREATED)  # type: ignore[arg-type]
    limited.close()
    assert recent_outcomes(redis_client, 1) == {"created": 1}
    assert any("synced revision" in record.getMessage() for record in caplog.records)


def test_outcome_counts_per_minute_expire_and_sum(redis_client: redis.Redis) -> None:
    now = 1_800_000_000.0
    count_outcome(redis_client, "created", now=now - 120)
    count_outcome(redis_client, "created", now=now)
    count_outcome(redis_client, "dead_lettered", now=now)
    count_outcome(redis_client, "created", now=now - 3 * 3600)  # outside the hour
    minute = int(now // 60)
    assert redis_client.hget(f"{OUTCOME_KEY_PREFIX}{minute}", "created") == b"1"
    ttl = redis_client.ttl(f"{OUTCOME_KEY_PREFIX}{minute}")
    assert 0 < ttl <= OUTCOME_TTL_SECONDS
    assert recent_outcomes(redis_client, 60, now=now) == {"created": 2, "dead_lettered": 1}


INCREMENT = """
import sys
from tasks.run.metrics import TASK_OUTCOMES
TASK_OUTCOMES.labels(object_type="project", outcome="created").inc(int(sys.argv[1]))
"""


def test_metrics_sum_over_several_worker_processes(tmp_path: Path) -> None:
    samples = tmp_path / "metrics"
    samples.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(samples), "PATH": "/usr/bin:/bin"}
    for count in (3, 4):
        subprocess.run(
            [sys.executable, "-c", INCREMENT, str(count)],
            env=env,
            check=True,
            timeout=60,
            cwd=Path(__file__).resolve().parent.parent,
        )
    assert len(list(samples.glob("counter_*.db"))) == 2
    server, thread = serve_probes(0, "127.0.0.1", WorkerHealth(), scrape_registry(str(samples)))
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    line = 'v1sync_task_outcomes_total{object_type="project",outcome="created"} 7.0'
    assert line in text
    # The serving process's own series, which the multi-process sum does not have.
    assert "process_resident_memory_bytes " in text
    assert "python_info{" in text
    assert text.count("v1sync_build_info{") == 1


def test_a_stranded_task_comes_back_within_minutes_with_the_defaults() -> None:
    from sync_core.settings import RetrySettings

    assert visibility_timeout(RetrySettings().sync_retry_backoff_max) <= 10 * 60


@pytest.mark.parametrize(
    ("key", "mapped_anew", "expected"),
    [
        ("salesforce-project__c.a0941000002wBz9AAE", True, "project.sfid.a0941000002wBz9AAE"),
        ("salesforce-project__c.a0941000002wBz9AAE", False, None),
        ("platform-collaboration__c.a0941000002wBz9AAE", True, "committee.sfid.a0941000002wBz9AAE"),
        ("platform-community__c.a0941000002wBz9AAE", True, None),
    ],
    ids=["project-created", "project-updated", "committee-created", "member-created"],
)
def test_only_a_run_that_mapped_its_key_anew_looks_for_parked_children(
    key: str, mapped_anew: bool, expected: str | None
) -> None:
    report = RunReport(key=key, revision=1, operation="PUT")
    report.sfid = "a0941000002wBz9AAE"
    report.mapped_anew = mapped_anew
    assert children_parent_key(report) == expected
