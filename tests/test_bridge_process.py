"""``v1-sync-helper bridge`` as a process: probes, SIGTERM mid-batch, NATS restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from nats.js.errors import NotFoundError

from bridge.loop import LoopTuning
from bridge.messages import decode_envelope
from sandbox.servers import NatsServer, ValkeyServer, child_env, free_port
from sync_core.nats_client import SyncNats
from tests.bridge_harness import BackgroundBridge
from tests.test_bridge_loop import (
    QUEUE,
    consumer_info,
    put_many,
    settings_for,
    wait_until,
)

GRACEFUL_STOP_LIMIT = 25.0
BATCH = 200


def _delivered(sync_nats: SyncNats) -> int:
    """The last stream sequence delivered to the consumer (0 before it exists)."""
    try:
        info = consumer_info(sync_nats)
    except NotFoundError:
        return 0
    return info.delivered.stream_seq if info.delivered else 0


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


@pytest.fixture
def bridge_process(
    buckets: NatsServer, redis_server: ValkeyServer
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A bridge subprocess (not yet stopped) and its HTTP port; killed at teardown."""
    port = free_port()
    env = child_env(
        NATS_URL=buckets.url,
        REDIS_URL=redis_server.url,
        PORT=str(port),
        BIND="127.0.0.1",
        BRIDGE_BATCH_SIZE=str(BATCH),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "v1_sync_helper", "bridge"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        assert process.stderr is not None
        process.stderr.close()


def test_sigterm_mid_batch_acks_only_what_is_enqueued(
    sync_nats: SyncNats,
    redis_client: redis.Redis,
    bridge_process: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = bridge_process
    keys = [f"salesforce-project__c.t{i:04d}" for i in range(1000)]
    revisions = put_many(sync_nats, keys)
    # Hold every write: the bridge fetches its first batch, then blocks in LPUSH.
    redis_client.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
    try:
        wait_until(lambda: _status(port, "/livez") == 200, "the bridge to listen")
        wait_until(lambda: _delivered(sync_nats) > 0, "the first batch to be fetched")
        process.send_signal(signal.SIGTERM)
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    stopped_at = time.monotonic()
    assert process.wait(GRACEFUL_STOP_LIMIT) == 0
    assert time.monotonic() - stopped_at < GRACEFUL_STOP_LIMIT

    info = consumer_info(sync_nats)
    assert info.ack_floor is not None
    acked = info.ack_floor.stream_seq
    assert info.num_ack_pending == 0
    assert 0 < acked < len(keys), "the stop must come in the middle of the stream"
    ids = [decode_envelope(raw)["headers"]["id"] for raw in redis_client.lrange(QUEUE, 0, -1)]
    expected = {f"{k}@{r}" for k, r in zip(keys, revisions, strict=True) if r <= acked}
    assert set(ids) == expected
    assert info.num_pending == len(keys) - acked


def test_probes_answer_while_running(
    redis_server: ValkeyServer,
    bridge_process: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = bridge_process
    wait_until(lambda: _status(port, "/readyz") == 200, "ready")
    assert _status(port, "/livez") == 200
    assert _status(port, "/metrics") == 200
    assert _status(port, "/nope") == 404
    redis_server.stop()
    wait_until(lambda: _status(port, "/readyz") == 503, "not ready without the broker")
    assert _status(port, "/livez") == 200
    process.send_signal(signal.SIGINT)
    assert process.wait(GRACEFUL_STOP_LIMIT) == 0


def test_the_bridge_carries_on_after_a_nats_restart(
    buckets: NatsServer, redis_server: ValkeyServer, sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    bridge = BackgroundBridge(
        settings_for(buckets, redis_server), tuning=LoopTuning(batch_size=50)
    ).start()
    try:
        put_many(sync_nats, [f"salesforce-project__c.before{i}" for i in range(20)])
        wait_until(lambda: redis_client.llen(QUEUE) == 20, "tasks before the restart")
        wait_until(lambda: consumer_info(sync_nats).num_ack_pending == 0, "acks before")
        buckets.stop()
        buckets.start()
        wait_until(lambda: sync_nats.nc.is_connected and bridge.ready(), "both reconnected", 30)
        put_many(sync_nats, [f"salesforce-project__c.after{i}" for i in range(20)])
        wait_until(lambda: redis_client.llen(QUEUE) == 40, "tasks after the restart", 30)
        wait_until(lambda: consumer_info(sync_nats).num_ack_pending == 0, "acks after")
        assert consumer_info(sync_nats).num_redelivered == 0
        assert bridge.metrics.resubscribes._value.get() >= 1
    finally:
        bridge.stop()


def test_sigterm_before_nats_is_reachable_exits_cleanly() -> None:
    # nats-py retries a first connection forever; the stop must still win.
    port = free_port()
    env = child_env(
        NATS_URL=f"nats://127.0.0.1:{free_port()}",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        PORT=str(port),
        BIND="127.0.0.1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "v1_sync_helper", "bridge"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _status(port, "/livez") == 200, "the bridge to listen")
        assert _status(port, "/readyz") == 503
        process.send_signal(signal.SIGTERM)
        assert process.wait(GRACEFUL_STOP_LIMIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
