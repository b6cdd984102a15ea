"""The harness starts real servers: prove it with real round trips."""

from __future__ import annotations

import os
from pathlib import Path

import redis

from sandbox.servers import NatsServer, ValkeyServer
from sync_core.nats_client import SyncNats


def _process_name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_nats_kv_round_trip_on_a_real_server(nats_server: NatsServer, sync_nats: SyncNats) -> None:
    assert nats_server.process is not None
    assert _process_name(nats_server.process.pid) == "nats-server"
    revision = sync_nats.kv_put("v1-objects", "salesforce-project__c.a1", b'{"sfid":"a1"}')
    entry = sync_nats.kv_get("v1-objects", "salesforce-project__c.a1")
    assert entry is not None
    assert entry.value == b'{"sfid":"a1"}'
    assert entry.revision == revision


def test_objects_bucket_keeps_history_20(sync_nats: SyncNats) -> None:
    status = sync_nats.run(sync_nats.kv("v1-objects").status())
    assert status.history == 20
    assert sync_nats.kv_get("v1-mappings", "missing") is None


def test_valkey_answers_ping_and_list_commands(
    redis_server: ValkeyServer, redis_client: redis.Redis
) -> None:
    assert redis_server.process is not None
    assert _process_name(redis_server.process.pid).startswith("valkey-server")
    assert redis_client.ping() is True
    redis_client.lpush("celery", b"a", b"b")
    assert redis_client.llen("celery") == 2


def test_servers_stop_and_restart_on_the_same_port(tmp_path: Path) -> None:
    server = ValkeyServer(tmp_path / "v")
    server.start()
    pid = server.process.pid if server.process else 0
    port = server.port
    server.stop()
    assert not os.path.exists(f"/proc/{pid}") or _process_name(pid) != "valkey-server"
    server.start()
    try:
        assert server.port == port
        assert redis.Redis.from_url(server.url).ping() is True
    finally:
        server.stop()
