"""The Celery app of the sync workers: ``celery -A tasks.worker.app`` (or ``-A tasks``).

Configured from the environment at import with light settings only (the
broker, the queue, the retry policy): importing the app needs no signing keys,
so ``celery -A tasks.worker.app inspect ping`` works anywhere. A worker loads the full
``WorkerSettings`` when it starts and exits 2 on bad configuration (see
``tasks.worker.process``).

No result backend: outcomes go to logs, Prometheus and Redis counters, and
Flower follows tasks through events.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from celery.app import trace

from sync_core.broker import (
    TASK_HARD_TIME_LIMIT,
    TASK_SOFT_TIME_LIMIT,
    broker_transport_options,
)
from sync_core.redis_connection import celery_broker_config
from sync_core.settings import CommonSettings, RetrySettings, load_settings
from tasks.worker.health import HealthStep
from tasks.worker.patches import broker_transport, kombu_redis_fix
from tasks.worker.patches.event_batching import EventBatching

APP_NAME = "v1-sync-helper"
TASK_MODULES = ["tasks.worker.task"]


class AppSettings(CommonSettings, RetrySettings):
    """What the app needs at import: broker, queue, retry policy (no secrets)."""


APP_SETTINGS = load_settings(AppSettings)

# Without it a Redis restart under held tasks ends the worker (see the module).
kombu_redis_fix.apply()
# One reused Redis client for kombu's acks, index updates and Flower events.
broker_transport.apply()

app = Celery(APP_NAME, include=TASK_MODULES)
app.conf.update(
    # Plain, TLS or Sentinel (master name, sentinels' password) from the settings.
    **celery_broker_config(
        APP_SETTINGS.redis_target, broker_transport_options(APP_SETTINGS.sync_retry_backoff_max)
    ),
    # A broker restart or failover is waited out, however long it takes: the
    # worker reconnects (backoff up to 30 s) instead of exiting after 100 tries.
    broker_connection_retry=True,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    task_default_queue=APP_SETTINGS.celery_queue,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    # A killed worker's task runs again; a slot holds one message at a time.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # A failed run (a dead letter: ``DeadLettered``) is acked, never redelivered.
    task_acks_on_failure_or_timeout=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=TASK_SOFT_TIME_LIMIT,
    task_time_limit=TASK_HARD_TIME_LIMIT,
    # Flower shows queued, started, retried, succeeded and failed tasks.
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_track_started=True,
    # Logs are ours (JSON): see ``_json_logging``.
    worker_hijack_root_logger=False,
    enable_utc=True,
)
# Task events for Flower leave in batches on a timer (see tasks.worker.patches.event_batching).
app.steps["consumer"].add(EventBatching)
# Acks leave Redis with the next delivery's script (see tasks.worker.patches.broker_transport).
app.steps["consumer"].add(broker_transport.AckBatching)
# The worker's own liveness and readiness, answered on /livez and /readyz (see tasks.worker_health).
app.steps["consumer"].add(HealthStep)


CELERY_TRACE_LOGGER = "celery.app.trace"
CELERY_RECEIVED_LOGGER = "celery.worker.strategy"


class _NoTracebackInData(logging.Filter):
    """Drop the traceback Celery's trace logger puts into its ``data`` extra.

    Celery passes the whole failure context as ``extra={"data": ...}``, the
    formatted traceback included, even for an expected error (``throws``) that
    it logs without one; our JSON lines emit every extra. A traceback belongs
    in a line only when the record carries ``exc_info`` (unexpected errors).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        data = record.__dict__.get("data")
        if isinstance(data, dict) and "traceback" in data and not record.exc_info:
            record.data = {name: value for name, value in data.items() if name != "traceback"}
        return True


class _NoSuccessLine(logging.Filter):
    """Drop Celery's per-task "succeeded in" INFO line: the run's outcome line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg is not trace.LOG_SUCCESS


@signals.setup_logging.connect
def _json_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Worker logs, Celery's own included, as one JSON object a line."""
    from sync_core.logs import configure_logging

    configure_logging(APP_SETTINGS.debug)
    # Python warnings (e.g. Celery's "running as root") become JSON log lines too.
    logging.captureWarnings(True)
    trace_log = logging.getLogger(CELERY_TRACE_LOGGER)
    if not any(isinstance(f, _NoTracebackInData) for f in trace_log.filters):
        trace_log.addFilter(_NoTracebackInData())
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else loglevel
    if loglevel and isinstance(level, int):
        logging.getLogger().setLevel(level)
    if not APP_SETTINGS.debug and logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # One INFO line per run, ours: Celery's "received" and "succeeded" lines
        # repeat it (task id = key@revision) at a few percent of the worker's CPU.
        # Failures and retries keep Celery's lines; DEBUG brings all of them back.
        logging.getLogger(CELERY_RECEIVED_LOGGER).setLevel(logging.WARNING)
        if not any(isinstance(f, _NoSuccessLine) for f in trace_log.filters):
            trace_log.addFilter(_NoSuccessLine())
