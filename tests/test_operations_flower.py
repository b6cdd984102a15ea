"""``flower``: basic auth by default, open health and metrics, re-queue through its API."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from click.testing import CliRunner

from sandbox.servers import ValkeyServer, child_env, free_port, wait_for_port
from tests.test_operations import QueuedTask, queued_tasks
from v1_sync_helper.cli import main

USER = "ops"
PASSWORD = "s3cret-Flower-pass"
KEY = "salesforce-project__c.a0941000002wBz4AAE"
STOP_TIMEOUT = 15


@dataclass
class RunningFlower:
    url: str
    log: Path
    db: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


@contextmanager
def running_flower(
    redis_url: str, tmp_path: Path, *args: str, basic_auth: str | None
) -> Iterator[RunningFlower]:
    """``v1-sync-helper flower`` as a child process, stopped on exit."""
    port = free_port()
    log = tmp_path / "flower.log"
    db = tmp_path / "flower-state"
    env = child_env(REDIS_URL=redis_url)
    for name in ("FLOWER_BASIC_AUTH", "FLOWER_UNAUTHENTICATED_API"):
        env.pop(name, None)
    if basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = basic_auth
    command = [sys.executable, "-m", "v1_sync_helper", "flower", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--address", "127.0.0.1", "--db", str(db), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    running = RunningFlower(f"http://127.0.0.1:{port}", log, db, process)
    try:
        try:
            wait_for_port(port, timeout=30)
        except TimeoutError:
            pytest.fail(f"flower did not start:\n{log.read_text()}")
        yield running
    finally:
        running.stop()


@pytest.fixture
def flower(redis_server: ValkeyServer, tmp_path: Path) -> Iterator[RunningFlower]:
    with running_flower(redis_server.url, tmp_path, basic_auth=f"{USER}:{PASSWORD}") as flower:
        yield flower


def test_flower_requires_basic_auth_but_health_and_metrics_are_open(
    flower: RunningFlower,
) -> None:
    assert requests.get(f"{flower.url}/", timeout=10).status_code == 401
    assert requests.get(f"{flower.url}/api/workers", timeout=10).status_code == 401
    wrong = requests.get(f"{flower.url}/", auth=(USER, "wrong"), timeout=10)
    assert wrong.status_code == 401

    assert requests.get(f"{flower.url}/", auth=(USER, PASSWORD), timeout=10).status_code == 200
    assert requests.get(f"{flower.url}/healthcheck", timeout=10).status_code == 200
    metrics = requests.get(f"{flower.url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "flower_" in metrics.text

    flower.stop()
    assert PASSWORD not in flower.log.read_text()


def test_requeue_through_flower_api_puts_the_task_in_the_broker(
    flower: RunningFlower, redis_client: redis.Redis
) -> None:
    """The documented manual re-queue: async-apply with the task's own id."""
    response = requests.post(
        f"{flower.url}/api/task/async-apply/sync_kv_entry",
        auth=(USER, PASSWORD),
        json={"args": [KEY, 42, "PUT"], "kwargs": {"force": True}, "task_id": f"{KEY}@42"},
        timeout=10,
    )

    assert response.status_code == 200, response.text
    assert response.json()["task-id"] == f"{KEY}@42"
    assert queued_tasks(redis_client) == [
        QueuedTask("sync_kv_entry", f"{KEY}@42", [KEY, 42, "PUT"])
    ]


def test_flower_keeps_persistent_state_in_the_db_file(flower: RunningFlower) -> None:
    assert requests.get(f"{flower.url}/", auth=(USER, PASSWORD), timeout=10).status_code == 200
    flower.stop()
    assert flower.process.returncode == 0, flower.log.read_text()
    assert list(flower.db.parent.glob(f"{flower.db.name}*")), flower.log.read_text()


def test_flower_no_auth_runs_open_when_asked_explicitly(
    redis_server: ValkeyServer, tmp_path: Path
) -> None:
    with running_flower(redis_server.url, tmp_path, "--no-auth", basic_auth=None) as flower:
        assert requests.get(f"{flower.url}/", timeout=10).status_code == 200
        flower.stop()
        assert "WITHOUT authentication" in flower.log.read_text()


def test_flower_refuses_to_start_without_credentials(redis_server: ValkeyServer) -> None:
    result = CliRunner().invoke(
        main, ["flower"], env={"REDIS_URL": redis_server.url, "FLOWER_BASIC_AUTH": None}
    )

    assert result.exit_code == 2
    assert "FLOWER_BASIC_AUTH is not set" in result.stderr
    assert "--no-auth" in result.stderr


def test_flower_rejects_malformed_credentials_without_echoing_them(
    redis_server: ValkeyServer,
) -> None:
    result = CliRunner().invoke(
        main,
        ["flower"],
        env={"REDIS_URL": redis_server.url, "FLOWER_BASIC_AUTH": "only-a-secret-token"},
    )

    assert result.exit_code == 2
    assert "FLOWER_BASIC_AUTH must be user:password" in result.stderr
    assert "only-a-secret-token" not in result.output
