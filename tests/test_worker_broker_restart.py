"""A real worker survives a valkey restart (graceful and SIGKILL) while it holds tasks,
then takes new work; a worker that stops on a broker error exits non-zero.

Holding tasks matters: an idle worker always reconnected; one with unacked
messages (countdown retries, prefetched tasks) died with ``Unrecoverable error:
AttributeError("'NoneType' object has no attribute 'hostname'")`` and exit
code 0 (see ``tasks/worker/patches/kombu_redis_fix.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sandbox.servers import NatsServer, ValkeyServer
from sandbox.service import Sandbox
from sync_core.nats_client import SyncNats
from tests.worker_process import AUTH0_CLIENT, KID, WorkerProcess, publish_tasks, worker_environment

DEADLINE = 45.0
HELD_TASKS = 4
HELD_COUNTDOWN = 600.0

pytestmark = pytest.mark.slow


@pytest.fixture
def sandbox(buckets: NatsServer, heimdall_key, auth0_key) -> Iterator[Sandbox]:  # type: ignore[no-untyped-def]
    with Sandbox(
        heimdall_keys={KID: heimdall_key.public_key()},
        auth0_clients={AUTH0_CLIENT: auth0_key.public_key()},
        nats_url=buckets.url,
    ) as running:
        yield running


def put_project(sync_nats: SyncNats, index: int) -> tuple[str, int]:
    sfid = f"a09RST{index:012d}"
    key = f"salesforce-project__c.{sfid}"
    record = {
        "sfid": sfid,
        "name": f"Restart {index}",
        "slug__c": f"restart{index}",
        "project_status__c": "Active",
        "lastmodifiedbyid": "v1_sync_helper@clients",
    }
    return key, sync_nats.kv_put("v1-objects", key, json.dumps(record).encode())


@pytest.mark.parametrize("hard", [False, True], ids=["graceful", "sigkill"])
def test_worker_survives_a_valkey_restart_while_holding_tasks_then_syncs(
    hard: bool,
    buckets: NatsServer,
    redis_server: ValkeyServer,
    sandbox: Sandbox,
    sync_nats: SyncNats,
    rsa_pems: dict[str, str],
    tmp_path: Path,
) -> None:
    env = worker_environment(sandbox, buckets.url, redis_server.url, rsa_pems)
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "4")
    worker.start()
    try:
        worker.wait_for(lambda: worker.log_count("ready.") >= 1, DEADLINE, "ready line")
        # Countdown tasks sit in the worker as unacked deliveries: the state that killed it.
        held = [put_project(sync_nats, index) for index in range(HELD_TASKS)]
        publish_tasks(env, held, countdown=HELD_COUNTDOWN)
        # Received: each delivery is in kombu's unacked hash until its countdown ends.
        broker = redis.Redis.from_url(redis_server.url)
        try:
            worker.wait_for(lambda: broker.hlen("unacked") >= HELD_TASKS, DEADLINE, "receipt")
        finally:
            broker.close()
        connected = worker.log_count("Connected to redis")

        lost = worker.log_count("Connection to broker lost")
        if hard:
            redis_server.kill()
        else:
            redis_server.stop()
        # Start again only once the worker saw the loss: the crash came from its
        # clean-up while the broker was away, not from a lucky fast restart.
        worker.wait_for(
            lambda: worker.log_count("Connection to broker lost") > lost, DEADLINE, "loss seen"
        )
        redis_server.start()

        worker.wait_for(
            lambda: worker.log_count("Connected to redis") > connected, DEADLINE, "reconnection"
        )
        fresh = put_project(sync_nats, 99)
        publish_tasks(env, [fresh])
        worker.wait_for(lambda: sandbox.count("POST", "/projects") >= 1, DEADLINE, "a new sync")
        assert sync_nats.kv_get("v1-mappings", f"project.sfid.{fresh[0].split('.', 1)[1]}")
        assert worker.exit_code is None
        assert "Unrecoverable error" not in worker.log_text()
    finally:
        worker.stop()


def test_worker_exits_non_zero_on_an_unrecoverable_broker_error(
    buckets: NatsServer, sandbox: Sandbox, rsa_pems: dict[str, str], tmp_path: Path
) -> None:
    # A broker that refuses the command the worker consumes with (an ACL without
    # BRPOP, as a locked-down managed Redis may have): no reconnect can help, the
    # worker stops, and its exit code must tell its supervisor.
    refusing = ValkeyServer(
        tmp_path / "refusing",
        extra_args=("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-brpop"),
    )
    refusing.start()
    env = worker_environment(sandbox, buckets.url, refusing.url, rsa_pems)
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "2")
    worker.start()
    try:
        code = worker.wait_exit(DEADLINE)
    finally:
        worker.stop()
        refusing.stop()
    assert code != 0, worker.log_text()[-3000:]
    assert "Unrecoverable error" in worker.log_text()


def test_the_fix_turns_a_detached_transport_into_a_connection_error(
    redis_server: ValkeyServer,
) -> None:
    from kombu import Connection

    import tasks.worker.app  # noqa: F401 - applies the fix at import
    from tasks.worker.patches import kombu_redis_fix

    assert kombu_redis_fix.is_applied()
    connection = Connection(redis_server.url)
    channel = connection.default_channel
    connection.collect()  # what Celery does after a connection loss
    with pytest.raises(connection.connection_errors) as caught:
        channel._connparams()
    assert kombu_redis_fix.DETACHED_MESSAGE in str(caught.value)
