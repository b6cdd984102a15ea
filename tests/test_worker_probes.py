"""A real worker's own probes: alive through a valkey outage, dead when its consumer is wedged.

The worker serves ``/livez`` and ``/readyz`` beside ``/metrics``
(``tasks.worker.probes``), from its own state (``tasks.worker.health``), not
through the broker. Short thresholds come from the environment
(``WORKER_LIVENESS_STALE_SECONDS``), so the probe's failure window is seconds.

A stuck task slot is real too: V2 holds its answer to the only slot's run.

The wedge is a real one: a ``task_received`` handler, loaded into the worker
through a ``sitecustomize`` module on its ``PYTHONPATH``, blocks the consumer's
event loop (Celery runs that signal in the loop) once a flag file exists.
"""

from __future__ import annotations

import json
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.servers import NatsServer, ValkeyServer
from sandbox.service import Sandbox
from sync_core.nats_client import SyncNats
from tests.worker_process import (
    AUTH0_CLIENT,
    KID,
    WorkerProcess,
    publish_tasks,
    worker_environment,
)

DEADLINE = 45.0
STALE_AFTER = 2.0
# How long the outage is watched: several times the liveness threshold, and
# longer than a probe's failure window at these timings (3 probes x 1 s).
OUTAGE_WATCH = 4 * STALE_AFTER
PROBE_TIMEOUT = 2.0
POLL = 0.2
WEDGE_HOLD_SECONDS = 120
STALL_AFTER = 2.0
V2_HOLD_SECONDS = 30.0

pytestmark = pytest.mark.slow

WEDGE_MODULE = textwrap.dedent(
    """
    # Test-only: loaded by the worker under test through PYTHONPATH.
    import os
    import threading

    from celery import signals

    _FLAG = os.environ["V1SYNC_TEST_WEDGE_FLAG"]


    @signals.task_received.connect(weak=False)
    def _wedge_the_consumer(**_):
        if os.path.exists(_FLAG):
            threading.Event().wait({hold})
    """
).format(hold=WEDGE_HOLD_SECONDS)


@pytest.fixture
def sandbox(buckets: NatsServer, heimdall_key, auth0_key) -> Iterator[Sandbox]:  # type: ignore[no-untyped-def]
    with Sandbox(
        heimdall_keys={KID: heimdall_key.public_key()},
        auth0_clients={AUTH0_CLIENT: auth0_key.public_key()},
        nats_url=buckets.url,
    ) as running:
        yield running


def probe(port: str, path: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one probe; (0, {}) when nothing answers in time."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


def start_worker(env: dict[str, str], tmp_path: Path) -> WorkerProcess:
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "2")
    worker.start()
    port = env["WORKER_METRICS_PORT"]
    worker.wait_for(lambda: probe(port, "/readyz")[0] == 200, DEADLINE, "ready probe")
    return worker


def short_timings(env: dict[str, str]) -> dict[str, str]:
    return {**env, "WORKER_LIVENESS_STALE_SECONDS": str(STALE_AFTER)}


def test_worker_stays_alive_but_unready_while_valkey_is_down(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    sandbox: Sandbox,
    rsa_pems: dict[str, str],
    tmp_path: Path,
) -> None:
    env = short_timings(worker_environment(sandbox, buckets.url, redis_server.url, rsa_pems))
    port = env["WORKER_METRICS_PORT"]
    worker = start_worker(env, tmp_path)
    try:
        status, body = probe(port, "/livez")
        assert status == 200, body
        assert body["checks"]["consumer"] == "consuming"

        redis_server.stop()
        worker.wait_for(lambda: probe(port, "/readyz")[0] == 503, DEADLINE, "unready probe")
        # Watched for several liveness thresholds: every probe must say alive.
        answers = []
        watch_until = time.monotonic() + OUTAGE_WATCH
        while time.monotonic() < watch_until:
            answers.append(probe(port, "/livez"))
            assert worker.exit_code is None
            time.sleep(POLL)
        assert answers
        assert [status for status, _ in answers] == [200] * len(answers), answers
        assert {body["checks"]["consumer"] for _, body in answers} == {"connecting"}
        status, body = probe(port, "/readyz")
        assert (status, body["checks"]["broker"]) == (503, False)

        redis_server.start()
        worker.wait_for(lambda: probe(port, "/readyz")[0] == 200, DEADLINE, "ready again")
        assert probe(port, "/livez")[0] == 200
        # /metrics still answers on the same port, with the per-process series.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        assert "process_resident_memory_bytes" in text
        assert "v1sync_build_info{" in text
    finally:
        worker.stop()


def test_worker_reports_dead_when_its_consumer_is_wedged(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    sandbox: Sandbox,
    rsa_pems: dict[str, str],
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(WEDGE_MODULE)
    flag = tmp_path / "wedge"
    env = short_timings(worker_environment(sandbox, buckets.url, redis_server.url, rsa_pems))
    env["PYTHONPATH"] = str(site)
    env["V1SYNC_TEST_WEDGE_FLAG"] = str(flag)
    port = env["WORKER_METRICS_PORT"]
    worker = start_worker(env, tmp_path)
    try:
        # Alive and beating for longer than the threshold before the wedge.
        watch_until = time.monotonic() + 2 * STALE_AFTER
        while time.monotonic() < watch_until:
            assert probe(port, "/livez")[0] == 200
            time.sleep(POLL)

        flag.touch()
        publish_tasks(env, [("salesforce-project__c.a09WEDGE00000000001", 1)])
        worker.wait_for(lambda: probe(port, "/livez")[0] == 503, DEADLINE, "dead probe")
        status, body = probe(port, "/livez")
        assert status == 503
        assert body["checks"]["loop"] is False
        assert body["checks"]["heartbeat_age_seconds"] > STALE_AFTER
        assert probe(port, "/readyz")[0] == 503
        assert worker.exit_code is None  # the process lives: only the probe can tell
    finally:
        worker.kill()


def test_worker_reports_dead_when_every_slot_holds_the_same_run_too_long(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    sandbox: Sandbox,
    sync_nats: SyncNats,
    rsa_pems: dict[str, str],
    tmp_path: Path,
) -> None:
    # One slot, and V2 answers that run only after a long while: the slot is stuck.
    env = worker_environment(sandbox, buckets.url, redis_server.url, rsa_pems)
    env.update(
        {
            "WORKER_SLOT_STALL_SECONDS": str(STALL_AFTER),
            "HTTP_TIMEOUT": str(V2_HOLD_SECONDS * 2),
        }
    )
    port = env["WORKER_METRICS_PORT"]
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "1")
    worker.start()
    try:
        worker.wait_for(lambda: probe(port, "/readyz")[0] == 200, DEADLINE, "ready probe")
        sandbox.inject_fault("*", "/projects", status=None, delay=V2_HOLD_SECONDS, times=1)
        key = "salesforce-project__c.a09STL000000000001"
        record = {
            "sfid": "a09STL000000000001",
            "name": "Stalled",
            "slug__c": "stalled",
            "project_status__c": "Active",
            "lastmodifiedbyid": "v1_sync_helper@clients",
        }
        revision = sync_nats.kv_put("v1-objects", key, json.dumps(record).encode())
        publish_tasks(env, [(key, revision)])
        worker.wait_for(lambda: probe(port, "/livez")[0] == 503, DEADLINE, "dead probe")
        status, body = probe(port, "/livez")
        assert status == 503
        assert body["checks"]["slots"] is False
        assert body["checks"]["loop"] is True  # the event loop itself still turns
        assert body["checks"]["slots_stalled_seconds"] > STALL_AFTER
    finally:
        worker.kill()
