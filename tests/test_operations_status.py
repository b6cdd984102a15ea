"""``status`` against real servers: healthy with a live worker, each unhealthy cause."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner, Result

from bridge.consumer import ConsumerSpec, ensure_consumer
from sandbox.servers import NatsServer, ValkeyServer, free_port
from sync_core.epochs import bucket_epoch, format_epoch
from sync_core.nats_client import SyncNats, connect
from sync_core.sync_state import DEFAULT_STATE_BUCKET, RECONCILER_SWEEP_KEY, SweepSummary
from tasks.run.outcomes import count_outcome
from tasks.stores.dead_letters import DeadLetterStore
from v1_sync_helper.cli import main

CONSUMER = "v1-sync-helper-kv-consumer"
# The test worker listens on its own queue so it never takes the tasks the
# test counts in the sync queue.
WORKER_QUEUE = "status-test-worker"


# Long enough for the in-thread worker's answer to a second ping in a row, which
# can take more than half a second (each status call waits this long in full).
PING_TIMEOUT = "0.5"
SECOND_PING_TIMEOUT = "2"


def run(env: dict[str, str], *args: str, ping_timeout: str = PING_TIMEOUT) -> Result:
    return CliRunner().invoke(main, ["status", "--ping-timeout", ping_timeout, *args], env=env)


async def _create_consumer(url: str) -> None:
    nc = await connect(url, "test-consumer")
    try:
        await ensure_consumer(nc.jetstream(), ConsumerSpec(name=CONSUMER, bucket="v1-objects"))
    finally:
        await nc.close()


@pytest.fixture
def env(buckets: NatsServer, redis_server: ValkeyServer) -> dict[str, str]:
    return {"NATS_URL": buckets.url, "REDIS_URL": redis_server.url}


@pytest.fixture
def consumer(buckets: NatsServer) -> str:
    asyncio.run(_create_consumer(buckets.url))
    return CONSUMER


@pytest.fixture
def worker(redis_server: ValkeyServer) -> Iterator[str]:
    """A real Celery worker thread on the test broker; yields its hostname."""
    app = Celery("status-test", broker=redis_server.url, set_as_current=False)
    app.conf.update(task_default_queue=WORKER_QUEUE, broker_connection_retry_on_startup=True)
    with start_worker(app, perform_ping_check=False, shutdown_timeout=5) as controller:
        yield controller.hostname


def test_status_is_healthy_and_reports_every_count(
    env: dict[str, str],
    consumer: str,
    worker: str,
    sync_nats: SyncNats,
    redis_client: redis.Redis,
) -> None:
    for n in range(3):
        sync_nats.kv_put("v1-objects", f"salesforce-project__c.p{n}", b"{}")
    redis_client.lpush("celery", "m1", "m2")
    DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET).add(
        "k", 1, "PUT", error_kind="validation", error_message="x"
    )
    sweep = SweepSummary(
        at=time.time() - 5, duration=0.25, keys=3, behind=1, reenqueued=1, deferred=0, holder="b"
    )
    sync_nats.kv_put(DEFAULT_STATE_BUCKET, RECONCILER_SWEEP_KEY, sweep.to_bytes())
    now = time.time()
    for outcome, times in (("created", 2), ("updated", 1)):
        for _ in range(times):
            count_outcome(redis_client, outcome, now - 120)
    count_outcome(redis_client, "created", now - 2 * 3600)  # older than an hour: not counted

    result = run(env, "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["healthy"] is True
    assert data["problems"] == []
    assert data["consumer"]["found"] is True
    assert data["consumer"]["num_pending"] == 3
    assert data["consumer"]["num_ack_pending"] == 0
    assert data["consumer"]["num_redelivered"] == 0
    assert data["broker"]["queue_depth"] == 2
    assert data["sync_state"]["dead_letters"] == 1
    assert data["sync_state"]["last_sweep"]["behind"] == 1
    assert data["broker"]["outcomes_last_hour"] == {"created": 2, "updated": 1}
    assert data["workers"] == [worker]


def test_status_shows_the_bucket_life_and_warns_about_older_lives_in_the_state(
    env: dict[str, str], consumer: str, worker: str, sync_nats: SyncNats
) -> None:
    """Warnings, not unhealthy: the reconciler resyncs an older life on its own."""
    epoch = sync_nats.run(bucket_epoch(sync_nats.js, "v1-objects"))

    def sweep_of(sweep_epoch: int, other_life: int, in_bucket: int) -> None:
        sweep = SweepSummary(
            at=time.time(),
            duration=0.1,
            keys=5,
            behind=in_bucket,
            reenqueued=0,
            deferred=0,
            holder="b",
            epoch=sweep_epoch,
            other_life=other_life,
            other_life_in_bucket=in_bucket,
        )
        sync_nats.kv_put(DEFAULT_STATE_BUCKET, RECONCILER_SWEEP_KEY, sweep.to_bytes())

    sweep_of(epoch, 0, 0)
    result = run(env, ping_timeout=SECOND_PING_TIMEOUT)
    assert result.exit_code == 0, result.output
    assert f"v1-objects life   since {format_epoch(epoch)}" in result.stdout
    assert f"state refers to   the life since {format_epoch(epoch)}\n" in result.stdout
    assert "Warning" not in result.stdout

    sweep_of(epoch, 7, 5)
    result = run(env, "--json", ping_timeout=SECOND_PING_TIMEOUT)
    assert result.exit_code == 0, result.output
    (warning,) = json.loads(result.stdout)["warnings"]
    assert "5 sync state entries of keys in v1-objects are of an older life" in warning
    assert (
        "7 entries of an older one: 5 being synced again"
        in run(env, ping_timeout=SECOND_PING_TIMEOUT).stdout
    )

    sweep_of(epoch, 2, 0)  # only keys no longer in the bucket: counted, no warning
    result = run(env, ping_timeout=SECOND_PING_TIMEOUT)
    assert "2 entries of an older one: 0 being synced again" in result.stdout
    assert "Warning" not in result.stdout

    sweep_of(epoch - 1, 0, 0)
    result = run(env, ping_timeout=SECOND_PING_TIMEOUT)
    assert result.exit_code == 0, result.output
    assert "Warning: v1-objects was rebuilt since the last reconciler sweep" in result.stdout
    assert result.stdout.rstrip().endswith("Healthy")


def test_status_human_output(
    env: dict[str, str], consumer: str, worker: str, redis_client: redis.Redis
) -> None:
    result = run(env)

    assert result.exit_code == 0, result.output
    assert "pending           0" in result.stdout
    assert "queue celery      0 waiting" in result.stdout
    assert "dead letters      0" in result.stdout
    assert "last sweep        none yet" in result.stdout
    assert f"Workers online     1 ({worker})" in result.stdout
    assert result.stdout.rstrip().endswith("Healthy")


def test_status_without_workers_or_consumer_is_unhealthy(env: dict[str, str]) -> None:
    result = run(env)

    assert result.exit_code == 1
    assert "UNHEALTHY" in result.stdout
    assert f"consumer '{CONSUMER}' on stream 'KV_v1-objects' does not exist" in result.stdout
    assert "no worker answered a ping within 0.5s" in result.stdout


def test_status_with_the_broker_down_is_unhealthy(buckets: NatsServer, consumer: str) -> None:
    env = {"NATS_URL": buckets.url, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}

    result = run(env, "--json")

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["consumer"]["found"] is True  # what could be read is still shown
    assert data["broker"]["up"] is False
    assert any("cannot reach the broker" in problem for problem in data["problems"])


def test_status_with_nats_down_is_unhealthy(redis_server: ValkeyServer, worker: str) -> None:
    env = {"NATS_URL": f"nats://127.0.0.1:{free_port()}", "REDIS_URL": redis_server.url}

    result = run(env)

    assert result.exit_code == 1
    assert "cannot connect to NATS" in result.stdout
    assert "Traceback" not in result.output
    assert f"Workers online     1 ({worker})" in result.stdout
