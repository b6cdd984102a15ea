"""Flower tells the runs apart: a dead letter is FAILURE, a retry RETRY, the rest SUCCESS.

A real ``v1-sync-helper worker`` process (JSON logs to a file), a real
``v1-sync-helper flower`` process following its events, real NATS and valkey,
and the sandbox's fake V2 services.
"""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from sandbox.servers import NatsServer, ValkeyServer, free_port
from sandbox.service import Sandbox
from sync_core.broker import SYNC_TASK_NAME, task_id_for
from sync_core.nats_client import SyncNats
from tasks.worker.app import app
from tests.test_operations_flower import PASSWORD, USER, RunningFlower, running_flower
from tests.test_task_command import REPO, base_env
from tests.test_task_sync import use_broker

KID = "flower-kid"
AUTH0_CLIENT = "flower-client"
MACHINE_USER = "v1_sync_helper@clients"
DEADLINE = 45.0
POLL = 0.1
# Long enough that the retrying task is still waiting when the test looks at it.
RETRY_BACKOFF_SECONDS = "120"


@dataclass
class Pipeline:
    nats: SyncNats
    redis: redis.Redis
    sandbox: Sandbox
    flower: RunningFlower
    worker_log: Path

    def put(self, key: str, value: dict[str, Any] | bytes) -> int:
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        return self.nats.kv_put("v1-objects", key, data)

    def publish(self, key: str, revision: int) -> str:
        """Enqueue the task the way the bridge does; its id."""
        task_id = task_id_for(key, revision)
        app.send_task(SYNC_TASK_NAME, args=[key, revision, "PUT"], task_id=task_id)
        return task_id

    def task(self, task_id: str, state: str, *, or_retried: bool = False) -> dict[str, Any]:
        """Flower's view of ``task_id`` once it is in ``state``.

        ``or_retried``: a task Flower saw retried counts too (the retry's new
        message is RECEIVED by the worker at once, and Flower then shows
        RECEIVED with ``retried`` set).
        """
        deadline = time.monotonic() + DEADLINE
        seen: Any = None
        while time.monotonic() < deadline:
            response = requests.get(
                f"{self.flower.url}/api/task/info/{task_id}", auth=(USER, PASSWORD), timeout=10
            )
            if response.status_code == 200:
                seen = response.json()
                if seen.get("state") == state:
                    return dict(seen)
                if or_retried and seen.get("retried"):
                    return dict(seen)
            time.sleep(POLL)
        pytest.fail(f"{task_id} never reached {state} in Flower; last seen {seen}")

    def log_entries(self) -> list[dict[str, Any]]:
        lines = self.worker_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def project(sfid: str, **changes: Any) -> dict[str, Any]:
    record = {
        "sfid": sfid,
        "name": f"Flower {sfid}",
        "slug__c": sfid.lower(),
        "project_status__c": "Active",
        "lastmodifiedbyid": MACHINE_USER,
    }
    record.update(changes)
    return record


@pytest.fixture
def pipeline(
    buckets: NatsServer, redis_server: ValkeyServer, rsa_pems: dict[str, str], tmp_path: Path
) -> Iterator[Pipeline]:
    heimdall = load_pem_private_key(rsa_pems["heimdall"].encode(), None)
    auth0 = load_pem_private_key(rsa_pems["auth0"].encode(), None)
    assert isinstance(heimdall, RSAPrivateKey)
    assert isinstance(auth0, RSAPrivateKey)
    use_broker(redis_server.url)
    worker_log = tmp_path / "worker.log"
    with (
        Sandbox(
            heimdall_keys={KID: heimdall.public_key()},
            auth0_clients={AUTH0_CLIENT: auth0.public_key()},
            nats_url=buckets.url,
        ) as sandbox,
        running_flower(redis_server.url, tmp_path, basic_auth=f"{USER}:{PASSWORD}") as flower,
        open(worker_log, "wb") as log_file,
    ):
        env = {
            **base_env(),
            **sandbox.env(),
            "NATS_URL": buckets.url,
            "REDIS_URL": redis_server.url,
            "HEIMDALL_PRIVATE_KEY": rsa_pems["heimdall"],
            "HEIMDALL_KEY_ID": KID,
            "AUTH0_TENANT": "test",
            "AUTH0_CLIENT_ID": AUTH0_CLIENT,
            "AUTH0_PRIVATE_KEY": rsa_pems["auth0"],
            "WORKER_METRICS_PORT": str(free_port()),
            "BIND": "127.0.0.1",
            "SYNC_RETRY_MAX": "3",
            "SYNC_RETRY_BACKOFF_BASE": RETRY_BACKOFF_SECONDS,
            "SYNC_RETRY_BACKOFF_MAX": RETRY_BACKOFF_SECONDS,
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "v1_sync_helper", "worker", "--pool", "threads"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            cwd=REPO,
        )
        nats_client = SyncNats(buckets.url, "flower-tests")
        client = redis.Redis.from_url(redis_server.url)
        try:
            yield Pipeline(nats_client, client, sandbox, flower, worker_log)
        finally:
            client.close()
            nats_client.close()
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)


def test_flower_shows_dead_letters_as_failures_and_everything_else_as_it_ended(
    pipeline: Pipeline,
) -> None:
    # A V2 validation error: dead-lettered at once.
    rejected_key = "salesforce-project__c.a09FLOWER000000REJ"
    pipeline.sandbox.inject_fault(
        "POST", "/projects", status=400, times=1, body={"message": "slug is invalid"}
    )
    rejected = pipeline.publish(
        rejected_key, pipeline.put(rejected_key, project("a09FLOWER000000REJ"))
    )
    failed = pipeline.task(rejected, "FAILURE")
    assert failed["exception"].startswith("DeadLettered('v2_validation', ")
    assert "400" in failed["exception"]
    assert "\n" not in failed["exception"]

    synced_key = "salesforce-project__c.a09FLOWER0000000OK"
    synced = pipeline.publish(synced_key, pipeline.put(synced_key, project("a09FLOWER0000000OK")))
    assert pipeline.task(synced, "SUCCESS")["result"] == "'created'"

    skipped_key = "some-other-table__c.a0Xwhatever"
    skipped = pipeline.publish(skipped_key, pipeline.put(skipped_key, {"sfid": "a0Xwhatever"}))
    assert pipeline.task(skipped, "SUCCESS")["result"] == "'skipped'"

    # A child whose parent is not synced parks: SUCCESS with its outcome.
    orphan_key = "salesforce-project__c.a09FLOWER00000ORPH"
    orphan_record = project("a09FLOWER00000ORPH", parent_project__c="a09FLOWER0NOPARENT")
    orphan = pipeline.publish(orphan_key, pipeline.put(orphan_key, orphan_record))
    assert pipeline.task(orphan, "SUCCESS")["result"] == "'parked'"

    # A V2 outage: RETRY (the long backoff keeps it there while the test looks).
    flaky_key = "salesforce-project__c.a09FLOWER000000503"
    pipeline.sandbox.inject_fault("POST", "/projects", status=503, times=1)
    flaky = pipeline.publish(flaky_key, pipeline.put(flaky_key, project("a09FLOWER000000503")))
    retried = pipeline.task(flaky, "RETRY", or_retried=True)
    assert retried["state"] in {"RETRY", "RECEIVED"}
    assert retried["exception"] is None or "DeadLettered" not in retried["exception"]

    # The Failed tab is exactly the dead letter.
    listed = requests.get(
        f"{pipeline.flower.url}/api/tasks",
        params={"state": "FAILURE"},
        auth=(USER, PASSWORD),
        timeout=10,
    ).json()
    assert list(listed) == [rejected]

    # Acked once: not waiting in the queue, not held unacked for redelivery.
    queued = [json.loads(m)["headers"]["id"] for m in pipeline.redis.lrange("celery", 0, -1)]
    assert rejected not in queued
    unacked = [json.loads(v)[0]["headers"]["id"] for v in pipeline.redis.hvals("unacked")]
    assert rejected not in unacked

    # One INFO line from Celery for the dead letter, and no traceback anywhere.
    entries = pipeline.log_entries()
    trace_lines = [e for e in entries if e.get("logger") == "celery.app.trace"]
    failures = [e for e in trace_lines if rejected in e["msg"] and "raised" in e["msg"]]
    assert [e["level"] for e in failures] == ["info"]
    assert "raised expected: DeadLettered('v2_validation'" in failures[0]["msg"]
    assert "traceback" not in failures[0]["data"]
    assert "Traceback" not in pipeline.worker_log.read_text()
    runs = [e["outcome"] for e in entries if e.get("key") == rejected_key and "outcome" in e]
    assert runs == ["dead_lettered"]

    # The failure is re-queued from its page through Flower's API (the fault is spent).
    response = requests.post(
        f"{pipeline.flower.url}/api/task/async-apply/sync_kv_entry",
        auth=(USER, PASSWORD),
        json={
            "args": list(ast.literal_eval(failed["args"])),
            "kwargs": {"force": True},
            "task_id": rejected,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert pipeline.task(rejected, "SUCCESS")["result"] == "'created'"
    # One INFO line per run is ours: Celery's "received" and "succeeded" lines are off.
    entries = pipeline.log_entries()
    outcomes = [
        e for e in entries if e.get("key") == rejected_key and e.get("outcome") == "created"
    ]
    assert len(outcomes) == 1
    celery_lines = [e["msg"] for e in entries if str(e.get("logger", "")).startswith("celery.")]
    assert not [line for line in celery_lines if "succeeded in" in line or "] received" in line]
