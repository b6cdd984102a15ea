"""``v1-sync-helper worker``: a Celery worker for ``sync_kv_entry`` with measured defaults.

The defaults come from ``bench/worker_pool.py`` (2 shared cores, every task a
real project create against the sandbox, which answers each POST after 50 ms
or 150 ms as the real services take tens of milliseconds):

============  =========  ==========  ==========
pool          50 ms V2   150 ms V2   RSS
============  =========  ==========  ==========
solo          17/s       -           87 MiB
threads x8    117/s      -           89 MiB
threads x16   150/s      99/s        90 MiB
threads x32   159/s      175/s       92 MiB
threads x64   137/s      204/s       95 MiB
prefork x4    55/s       -           389 MiB
prefork x8    95/s       -           688 MiB
============  =========  ==========  ==========

The task waits on V2 most of its time and costs 8-10 ms of worker CPU per
synced object end to end on this shared machine (``make bench-e2e``; 8, 16,
32 or 64 threads cost the same per object): one process with 32 threads
keeps enough calls in flight for V2 latencies up to ~150 ms at a fraction of
prefork's memory; beyond one core, run more worker processes (pods).
``--pool prefork`` stays available.

The command validates the configuration first (exit 2 on a bad one), logs
JSON, serves ``/metrics`` on ``WORKER_METRICS_PORT`` from the main process
(summing every pool process through ``PROMETHEUS_MULTIPROC_DIR``), with the
``/livez`` and ``/readyz`` probes on the same port (``tasks.worker_probes``),
then hands over to Celery.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

import click

DEFAULT_POOL = "threads"
DEFAULT_CONCURRENCY = 32
POOLS = ("threads", "prefork", "solo")
NODE_NAME = "v1-sync-helper@%h"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROC_DIR_PREFIX = "v1sync-metrics-"

log = logging.getLogger(__name__)


def worker_argv(pool: str, concurrency: int, loglevel: str, queue: str) -> list[str]:
    """The ``celery worker`` arguments of our worker."""
    return [
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        f"--queues={queue}",
        f"--hostname={NODE_NAME}",
        # Flower follows events; gossip and mingle only add broker chatter here.
        "--without-gossip",
        "--without-mingle",
    ]


@click.command("worker")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Task slots (threads, or processes with --pool prefork).",
)
@click.option(
    "--pool",
    "-P",
    type=click.Choice(POOLS),
    default=DEFAULT_POOL,
    show_default=True,
    help="Celery execution pool.",
)
@click.option(
    "--loglevel",
    "-l",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
def worker_command(concurrency: int, pool: str, loglevel: str) -> None:
    """Run a Celery worker for the sync tasks (needs the full worker configuration)."""
    from sync_core.logs import configure_logging
    from sync_core.settings import WorkerSettings, load_settings

    settings = load_settings(WorkerSettings)
    configure_logging(settings.debug or loglevel.upper() == "DEBUG")
    logging.captureWarnings(True)

    metrics_dir = prepare_multiprocess_dir()
    from tasks.run.metrics import scrape_registry
    from tasks.worker.app import app
    from tasks.worker.health import HEALTH
    from tasks.worker.probes import serve_probes

    HEALTH.configure(settings.worker_liveness_stale_seconds, settings.worker_slot_stall_seconds)
    server, _ = serve_probes(
        settings.worker_metrics_port, settings.bind_host, HEALTH, scrape_registry(metrics_dir)
    )
    try:
        code = run_worker(
            app, worker_argv(pool, concurrency, loglevel.upper(), settings.celery_queue)
        )
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if code:
        log.error("the worker stopped on an error", extra={"exit_code": code})
        raise SystemExit(code)


def run_worker(app: Any, argv: list[str]) -> int:
    """Run ``celery worker`` in this process and return its exit code.

    ``app.worker_main`` (and ``app.start``) drop the code: Celery logs
    ``Unrecoverable error`` and stops with ``EX_FAILURE``, the process still
    exits 0, and a supervisor that restarts failed processes only leaves it
    dead. The code comes back from the click group in non-standalone mode.
    """
    from celery.bin.celery import celery as celery_group

    celery_group.params[0].default = app
    try:
        code = celery_group.main(args=argv, standalone_mode=False)
    finally:
        celery_group.params[0].default = None
    return code if isinstance(code, int) else 0


def prepare_multiprocess_dir() -> str:
    """A fresh directory for the pool processes' metric samples, set in the environment.

    ``prometheus_client`` picks single- or multi-process mode when it is
    imported, and prefork children inherit the parent's modules: this must run
    before anything imports it.
    """
    if "prometheus_client" in sys.modules and not os.environ.get(MULTIPROC_ENV):
        log.warning("prometheus_client was imported early: metrics cover one process only")
    path = tempfile.mkdtemp(prefix=MULTIPROC_DIR_PREFIX)
    os.environ[MULTIPROC_ENV] = path
    return path
