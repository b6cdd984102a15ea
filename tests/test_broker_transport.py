"""kombu's Redis ack bookkeeping as scripts, and deferred acks (real valkey)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from sandbox.servers import ValkeyServer
from tasks.worker.patches import broker_transport

QUEUE = "transport-test"
UNACKED, INDEX = "unacked", "unacked_index"


@pytest.fixture
def connection(redis_server: ValkeyServer) -> Iterator[Connection]:
    broker_transport.apply()
    with Connection(redis_server.url) as conn:
        yield conn
    broker_transport.defer_acks(False)
    broker_transport.flush_deferred_acks()


def entries(client: redis.Redis) -> tuple[int, int]:
    """How many messages kombu holds as delivered and unacked (hash, index)."""
    return client.hlen(UNACKED), client.zcard(INDEX)


def test_a_delivery_is_recorded_and_an_ack_removes_it(
    connection: Connection, redis_client: redis.Redis
) -> None:
    queue = connection.SimpleQueue(QUEUE)
    queue.put({"n": 1})
    message = queue.get(timeout=5)
    assert entries(redis_client) == (1, 1)
    stored = redis_client.hget(UNACKED, message.delivery_tag)
    assert stored is not None
    raw, _exchange, routing_key = json.loads(stored)
    assert routing_key == QUEUE
    assert raw["properties"]["delivery_tag"] == message.delivery_tag
    message.ack()
    assert entries(redis_client) == (0, 0)
    queue.close()


def test_deferred_acks_leave_with_the_next_delivery_or_the_flush(
    connection: Connection, redis_client: redis.Redis
) -> None:
    broker_transport.defer_acks(True)
    queue = connection.SimpleQueue(QUEUE)
    for n in range(3):
        queue.put({"n": n})
    first = queue.get(timeout=5)
    first.ack()
    # Acked for kombu, still in Redis until the next script.
    assert entries(redis_client) == (1, 1)
    second = queue.get(timeout=5)
    # The second delivery's script recorded it and removed the first.
    assert entries(redis_client) == (1, 1)
    assert redis_client.hget(UNACKED, first.delivery_tag) is None
    assert redis_client.hget(UNACKED, second.delivery_tag) is not None
    second.ack()
    third = queue.get(timeout=5)
    third.ack()
    assert entries(redis_client) == (1, 1)
    broker_transport.flush_deferred_acks()
    assert entries(redis_client) == (0, 0)
    queue.close()


def test_a_server_refusing_scripts_gets_kombus_own_transactions(
    redis_server: ValkeyServer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user without scripting (ACL) is refused EVALSHA: kombu's commands take over."""
    monkeypatch.setattr(broker_transport, "_scripts_refused", False)
    redis_client.execute_command(
        "ACL", "SETUSER", "noscripts", "on", ">secret", "~*", "&*", "+@all", "-@scripting"
    )
    broker_transport.apply()
    broker_transport.defer_acks(True)  # no script to carry them: acks go at once
    url = f"redis://noscripts:secret@127.0.0.1:{redis_server.port}/0"
    with Connection(url) as conn:
        queue = conn.SimpleQueue(QUEUE)
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert broker_transport._scripts_refused
        assert entries(redis_client) == (1, 1)
        message.ack()
        assert entries(redis_client) == (0, 0)
        queue.close()
    broker_transport.defer_acks(False)
