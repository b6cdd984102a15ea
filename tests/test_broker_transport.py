"""kombu's Redis channel of the workers reuses one client per pool (tasks.broker_transport)."""

from __future__ import annotations

from kombu import Connection

from sandbox.servers import ValkeyServer
from tasks import broker_transport


def test_the_worker_app_applies_it_to_every_redis_scheme() -> None:
    from kombu.transport import redis as kombu_redis

    import tasks.app  # noqa: F401 - importing the app applies the patch

    assert broker_transport.is_applied()
    # Sentinel's channel inherits it; the transport (and Celery's log lines) keep their scheme.
    assert kombu_redis.SentinelChannel.conn_or_acquire is kombu_redis.Channel.conn_or_acquire


def test_one_client_serves_every_command_and_commands_work(redis_server: ValkeyServer) -> None:
    broker_transport.apply()
    with Connection(redis_server.url) as connection:
        assert connection.as_uri().startswith("redis://")
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            first.set("probe", "1")
            assert second.get("probe") == b"1"
        # A new pool (after a reconnect) gets a new client.
        channel._pool = None
        with channel.conn_or_acquire() as third:
            assert third is not first
            assert third.connection_pool is channel.pool
        # Messages go through and are acked over the shared client.
        queue = connection.SimpleQueue("probe-queue")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()
