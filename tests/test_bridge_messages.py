"""KV stream messages become ordinary Celery task messages and task-sent events.

The encoder's output is compared with what Celery's own ``send_task`` writes
to a real valkey, then consumed by a real Celery worker and a real Celery
event receiver.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from bridge.changes import (
    SKIP_EMPTY_KEY,
    SKIP_FOREIGN_SUBJECT,
    SKIP_UNKNOWN_OPERATION,
    KvChange,
    Skip,
    change_of,
)
from bridge.messages import TaskMessageEncoder, decode_envelope, producer_app
from bridge.publisher import BrokerPublisher, broker_client, database_of
from sandbox.servers import ValkeyServer
from sync_core.broker import SYNC_TASK_NAME, broker_transport_options, task_id_for

PREFIX = "$KV.v1-objects."
QUEUE = "celery"
DEADLINE = 15.0
TAG = re.compile(r'"delivery_tag": "[0-9a-f-]{36}"')

AWKWARD_CHANGES = [
    KvChange("salesforce-project__c.a0x5e00000Abc", 17, "PUT"),
    KvChange("platform-collaboration__c.a1B2", 3, "DEL"),
    KvChange("salesforce-project__c.quote'and\"back\\slash", 9, "PURGE"),
    KvChange("salesforce-project__c.unicodé-☃-%s-%(x)s", 123456789, "PUT"),
]


@pytest.mark.parametrize(
    ("headers", "operation"),
    [
        (None, "PUT"),
        ({}, "PUT"),
        ({"KV-Operation": "DEL"}, "DEL"),
        ({"KV-Operation": "PURGE", "Nats-Rollup": "sub"}, "PURGE"),
        ({"Nats-Marker-Reason": "MaxAge"}, "PURGE"),
        ({"Nats-Marker-Reason": "Purge"}, "PURGE"),
        ({"Nats-Marker-Reason": "Remove"}, "DEL"),
        ({"Nats-Marker-Reason": "SomethingNew"}, "DEL"),
        ({"Nats-Msg-Id": "x"}, "PUT"),
    ],
)
def test_operation_comes_from_headers(headers: dict[str, str] | None, operation: str) -> None:
    change = change_of(PREFIX + "salesforce-project__c.a1", headers, 42, PREFIX)
    assert change == KvChange("salesforce-project__c.a1", 42, operation)


@pytest.mark.parametrize(
    ("subject", "headers", "reason"),
    [
        ("$KV.other-bucket.k", None, SKIP_FOREIGN_SUBJECT),
        (PREFIX, None, SKIP_EMPTY_KEY),
        (PREFIX + "k", {"KV-Operation": "ROLLUP"}, SKIP_UNKNOWN_OPERATION),
    ],
)
def test_messages_without_a_task_say_why(
    subject: str, headers: dict[str, str] | None, reason: str
) -> None:
    assert change_of(subject, headers, 1, PREFIX) == Skip(reason)


def _without_tag(text: str) -> str:
    return TAG.sub('"delivery_tag": "-"', text)


def test_task_messages_are_byte_identical_to_send_task(
    redis_server: ValkeyServer, redis_client: redis.Redis
) -> None:
    app = producer_app(redis_server.url, QUEUE)
    encoder = TaskMessageEncoder(app, QUEUE, database_of(redis_client))
    encoded = encoder.encode(AWKWARD_CHANGES)
    for change, ours in zip(AWKWARD_CHANGES, encoded.tasks, strict=True):
        redis_client.delete(QUEUE)
        app.send_task(
            SYNC_TASK_NAME,
            args=(change.key, change.revision, change.operation),
            task_id=task_id_for(change.key, change.revision),
        )
        theirs = cast(bytes, redis_client.lrange(QUEUE, 0, -1)[0]).decode()
        assert _without_tag(ours) == _without_tag(theirs)
        message = decode_envelope(ours)
        assert message["headers"]["task"] == SYNC_TASK_NAME
        assert message["headers"]["id"] == f"{change.key}@{change.revision}"
        assert message["body"][0] == [change.key, change.revision, change.operation]
    tags = {decode_envelope(t)["properties"]["delivery_tag"] for t in encoded.tasks}
    assert len(tags) == len(AWKWARD_CHANGES)


def _normalized_event(raw: bytes | str) -> dict[str, Any]:
    event = decode_envelope(raw)
    event["properties"]["delivery_tag"] = "-"
    event["body"]["timestamp"] = 0
    event["body"]["clock"] = 0
    return event


def test_sent_events_match_celerys_dispatcher(
    redis_server: ValkeyServer, redis_client: redis.Redis
) -> None:
    app = producer_app(redis_server.url, QUEUE)
    encoder = TaskMessageEncoder(app, QUEUE, database_of(redis_client))
    pubsub = redis_client.pubsub()
    pubsub.psubscribe("*")
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
    try:
        for change in AWKWARD_CHANGES:
            before = time.time()
            app.send_task(
                SYNC_TASK_NAME,
                args=(change.key, change.revision, change.operation),
                task_id=task_id_for(change.key, change.revision),
            )
            theirs = pubsub.get_message(timeout=5)
            assert theirs is not None
            encoded = encoder.encode([change])
            assert theirs["channel"].decode() == encoded.event_topic
            ours = decode_envelope(encoded.events[0])
            assert ours["body"]["timestamp"] >= before
            assert ours["body"]["clock"] > 0
            assert ours["body"]["uuid"] == task_id_for(change.key, change.revision)
            assert _normalized_event(encoded.events[0]) == _normalized_event(theirs["data"])
    finally:
        pubsub.close()


@pytest.fixture
def publisher(redis_server: ValkeyServer) -> Iterator[BrokerPublisher]:
    client = broker_client(redis_server.url, broker_transport_options())
    yield BrokerPublisher(client)
    client.close()


def _wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_pushed_batch_lands_in_order_and_reports_depth(
    redis_server: ValkeyServer, redis_client: redis.Redis, publisher: BrokerPublisher
) -> None:
    encoder = TaskMessageEncoder(producer_app(redis_server.url, QUEUE), QUEUE, 0)
    changes = [KvChange(f"k.{i}", i, "PUT") for i in range(1, 51)]
    assert publisher.push(encoder.encode(changes)) == 50
    assert publisher.depth(QUEUE) == 50
    # Workers pop from the right: the first change must come out first.
    popped = [
        decode_envelope(cast(bytes, redis_client.rpop(QUEUE)))["headers"]["id"] for _ in changes
    ]
    assert popped == [task_id_for(c.key, c.revision) for c in changes]


def test_a_real_worker_runs_the_pushed_tasks(
    redis_server: ValkeyServer, publisher: BrokerPublisher
) -> None:
    worker_app = Celery("bridge-test-worker", broker=redis_server.url, set_as_current=False)
    worker_app.conf.update(broker_transport_options=broker_transport_options())
    received: list[tuple[str, str, int, str]] = []
    lock = threading.Lock()

    @worker_app.task(name=SYNC_TASK_NAME, bind=True, shared=False)
    def sync_kv_entry(self: Any, key: str, revision: int, operation: str) -> None:
        with lock:
            received.append((self.request.id, key, revision, operation))

    encoder = TaskMessageEncoder(producer_app(redis_server.url, QUEUE), QUEUE, 0)
    changes = [*AWKWARD_CHANGES, *(KvChange(f"k.{i}", i, "PUT") for i in range(1, 21))]
    with start_worker(worker_app, perform_ping_check=False, shutdown_timeout=15):
        publisher.push(encoder.encode(changes))
        _wait_until(lambda: len(received) >= len(changes), "the worker to run every task")
    assert sorted(received) == sorted(
        (task_id_for(c.key, c.revision), c.key, c.revision, c.operation) for c in changes
    )


def test_a_celery_event_receiver_sees_task_sent(
    redis_server: ValkeyServer, redis_client: redis.Redis, publisher: BrokerPublisher
) -> None:
    app = producer_app(redis_server.url, QUEUE)
    encoder = TaskMessageEncoder(app, QUEUE, 0)
    changes = [KvChange(f"salesforce-project__c.e{i}", i, "PUT") for i in range(1, 6)]
    seen: list[dict[str, Any]] = []

    def capture() -> None:
        with app.connection_for_read() as connection:
            receiver = app.events.Receiver(connection, handlers={"task-sent": seen.append}, app=app)
            receiver.capture(limit=len(changes), timeout=DEADLINE)

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    _wait_until(lambda: redis_client.execute_command("PUBSUB", "NUMPAT") > 0, "the receiver")
    publisher.push(encoder.encode(changes))
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert [e["uuid"] for e in seen] == [task_id_for(c.key, c.revision) for c in changes]
    assert {e["name"] for e in seen} == {SYNC_TASK_NAME}
    assert {e["queue"] for e in seen} == {QUEUE}
    assert seen[0]["args"] == repr((changes[0].key, changes[0].revision, "PUT"))


def test_events_still_flow_when_the_broker_refuses_scripts(
    redis_server: ValkeyServer, redis_client: redis.Redis
) -> None:
    # A managed Redis may forbid EVAL: the tasks land and events go one by one.
    redis_client.execute_command("ACL", "SETUSER", "noscript", "on", ">pw", "~*", "&*", "+@all")
    redis_client.execute_command("ACL", "SETUSER", "noscript", "-eval", "-evalsha")
    url = f"redis://noscript:pw@127.0.0.1:{redis_server.port}/0"
    client = broker_client(url, broker_transport_options())
    publisher = BrokerPublisher(client)
    encoder = TaskMessageEncoder(producer_app(url, QUEUE), QUEUE, 0)
    pubsub = redis_client.pubsub()
    pubsub.psubscribe("*")
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
    try:
        for start in (1, 4):
            changes = [KvChange(f"k.{i}", i, "PUT") for i in range(start, start + 3)]
            assert publisher.push(encoder.encode(changes)) == start + 2
        assert not publisher.scripted_events
        events = [pubsub.get_message(timeout=5) for _ in range(6)]
        uuids = [decode_envelope(e["data"])["body"]["uuid"] for e in events if e]
        assert uuids == [f"k.{i}@{i}" for i in range(1, 7)]
    finally:
        pubsub.close()
        client.close()


def test_task_kwargs_are_byte_identical_to_send_task(
    redis_server: ValkeyServer, redis_client: redis.Redis
) -> None:
    app = producer_app(redis_server.url, QUEUE)
    encoder = TaskMessageEncoder(app, QUEUE, database_of(redis_client), {"force": True})
    change = AWKWARD_CHANGES[0]
    ours = encoder.encode([change]).tasks[0]
    redis_client.delete(QUEUE)
    app.send_task(
        SYNC_TASK_NAME,
        args=(change.key, change.revision, change.operation),
        kwargs={"force": True},
        task_id=task_id_for(change.key, change.revision),
    )
    theirs = cast(bytes, redis_client.lrange(QUEUE, 0, -1)[0]).decode()
    assert _without_tag(ours) == _without_tag(theirs)
    assert decode_envelope(ours)["body"][1] == {"force": True}
