"""A Sentinel failover with real valkey processes: master, replica, one sentinel.

The master is SIGKILLed; once the sentinel has promoted the replica, a bridge
publish (the bridge's own redis-py client and encoder) and a worker task
(kombu's Sentinel transport, and the task's own Redis client) still go
through, without restarting anything. TLS is covered by the unit tests in
``test_redis_connection.py``: the embedded valkey is built without TLS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.changes import KvChange
from bridge.messages import TaskMessageEncoder, producer_app
from bridge.publisher import BrokerPublisher, broker_client, database_of
from sandbox.servers import NatsServer, SentinelServer, ValkeyServer
from sandbox.service import Sandbox
from sync_core.broker import broker_transport_options
from sync_core.nats_client import SyncNats
from sync_core.redis_connection import RedisTarget
from tests.worker_process import AUTH0_CLIENT, KID, WorkerProcess, worker_environment

MASTER_NAME = "syncmaster"
DEADLINE = 45.0
QUEUE = "celery"

pytestmark = pytest.mark.slow


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.1)


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[tuple[ValkeyServer, ValkeyServer, SentinelServer]]:
    master = ValkeyServer(tmp_path / "master")
    master.start()
    replica = ValkeyServer(
        tmp_path / "replica", extra_args=("--replicaof", "127.0.0.1", str(master.port))
    )
    sentinel = SentinelServer(tmp_path / "sentinel", master.port, MASTER_NAME)
    try:
        replica.start()
        sentinel.start()
        replica_client = redis.Redis(port=replica.port, socket_timeout=2)
        sentinel_client = redis.Redis(port=sentinel.port, socket_timeout=2)
        wait_until(
            lambda: replica_client.info("replication")["master_link_status"] == "up",
            DEADLINE,
            "replication link",
        )
        wait_until(
            lambda: sentinel_client.sentinel_slaves(MASTER_NAME), DEADLINE, "replica discovery"
        )
        replica_client.close()
        sentinel_client.close()
        yield master, replica, sentinel
    finally:
        for server in (sentinel, replica, master):
            server.stop()


def master_port(sentinel: SentinelServer) -> int:
    client = redis.Redis(port=sentinel.port, socket_timeout=2)
    try:
        _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)
    finally:
        client.close()


def put_project(sync_nats: SyncNats, index: int) -> KvChange:
    sfid = f"a09SNT{index:012d}"
    key = f"salesforce-project__c.{sfid}"
    record = {
        "sfid": sfid,
        "name": f"Failover {index}",
        "slug__c": f"failover{index}",
        "project_status__c": "Active",
        "lastmodifiedbyid": "v1_sync_helper@clients",
    }
    return KvChange(key, sync_nats.kv_put("v1-objects", key, json.dumps(record).encode()), "PUT")


def push_until_accepted(
    publisher: BrokerPublisher, encoder: TaskMessageEncoder, change: KvChange
) -> None:
    """What the bridge does with a failed push: try again (here with a deadline)."""
    wait_until(
        lambda: publisher.push(encoder.encode([change])) is not None, DEADLINE, "accepted push"
    )


def test_bridge_publish_and_worker_task_go_through_a_sentinel_failover(
    sentinel_group: tuple[ValkeyServer, ValkeyServer, SentinelServer],
    buckets: NatsServer,
    sync_nats: SyncNats,
    rsa_pems: dict[str, str],
    heimdall_key,  # type: ignore[no-untyped-def]
    auth0_key,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    master, replica, sentinel = sentinel_group
    target = RedisTarget(sentinel.url, sentinel_master=MASTER_NAME)
    options = broker_transport_options()
    client = broker_client(target, options)
    publisher = BrokerPublisher(client)
    app = producer_app(target, QUEUE, options)
    encoder = TaskMessageEncoder(app, QUEUE, database_of(client))
    with Sandbox(
        heimdall_keys={KID: heimdall_key.public_key()},
        auth0_clients={AUTH0_CLIENT: auth0_key.public_key()},
        nats_url=buckets.url,
    ) as sandbox:
        env = worker_environment(sandbox, buckets.url, sentinel.url, rsa_pems)
        env["REDIS_SENTINEL_MASTER"] = MASTER_NAME
        worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "4")
        worker.start()
        try:
            push_until_accepted(publisher, encoder, put_project(sync_nats, 1))
            worker.wait_for(lambda: sandbox.count("POST", "/projects") >= 1, DEADLINE, "sync")
            assert master_port(sentinel) == master.port

            master.kill()
            wait_until(lambda: master_port(sentinel) == replica.port, DEADLINE, "promotion")

            push_until_accepted(publisher, encoder, put_project(sync_nats, 2))
            assert publisher.depth(QUEUE) >= 0  # the bridge's client now talks to the new master
            worker.wait_for(
                lambda: sandbox.count("POST", "/projects") >= 2, DEADLINE, "sync after failover"
            )
            # The mapping is written after V2 answers the POST the sandbox counted.
            wait_until(
                lambda: (
                    sync_nats.kv_get("v1-mappings", "project.sfid.a09SNT000000000002") is not None
                ),
                DEADLINE,
                "mapping after failover",
            )
            assert worker.exit_code is None
            assert redis.Redis(port=replica.port).info("replication")["role"] == "master"
        finally:
            worker.stop()
            publisher.close()
            app.close()
