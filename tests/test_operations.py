"""``requeue``, ``replay`` and ``dlq`` against real nats-server and valkey.

The commands run through click's runner with ``NATS_URL`` / ``REDIS_URL``
pointing at the fixtures; what they enqueue is read back from the Redis list
the Celery workers consume, so a test sees exactly what a worker would get.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from bridge.loop import LOW_WATER_FRACTION
from operations.dlq import requeue_letters
from operations.enqueue import TaskQueue, queue_depth, wait_for_room
from sandbox.servers import NatsServer, ValkeyServer, child_env, free_port
from sync_core.nats_client import SyncNats
from sync_core.sync_state import DEFAULT_STATE_BUCKET
from tasks.stores.dead_letters import DeadLetterStore
from v1_sync_helper.cli import main

QUEUE = "celery"
OBJECTS = "v1-objects"
PROJECT = "salesforce-project__c"
COMMITTEE = "platform-collaboration__c"
MEMBER = "platform-community__c"


@dataclass(frozen=True)
class QueuedTask:
    """A task message as a worker would receive it."""

    name: str
    id: str
    args: list[object]


# ``requeue`` and ``dlq requeue`` start a fresh retry budget; ``replay`` sends ``force`` only.
REQUEUE_KWARGS = {"force": True, "fresh_budget": True}
DLQ_KWARGS = {**REQUEUE_KWARGS, "release_delete_budget": True}


def queued_tasks(
    client: redis.Redis, queue: str = QUEUE, kwargs: dict[str, Any] | None = None
) -> list[QueuedTask]:
    """Every task message waiting in ``queue``, oldest first.

    Checks each message's keyword arguments: a sync asked for by hand carries
    ``force=True`` so that it runs even when that revision was synced already.
    """
    expected_kwargs = {"force": True} if kwargs is None else kwargs
    tasks = []
    for raw in reversed(client.lrange(queue, 0, -1)):  # kombu LPUSHes, workers BRPOP
        envelope = json.loads(raw)
        args, message_kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        assert message_kwargs == expected_kwargs
        headers = envelope["headers"]
        tasks.append(QueuedTask(headers["task"], headers["id"], args))
    return tasks


def run(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=input)


@pytest.fixture
def env(buckets: NatsServer, redis_server: ValkeyServer) -> dict[str, str]:
    return {"NATS_URL": buckets.url, "REDIS_URL": redis_server.url}


@pytest.fixture
def store(sync_nats: SyncNats) -> DeadLetterStore:
    return DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)


def put(nats: SyncNats, key: str, value: bytes = b'{"name": "x"}') -> int:
    return nats.kv_put(OBJECTS, key, value)


# -------------------------------------------------------------------- requeue


def test_requeue_enqueues_each_key_at_its_current_revision(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    put(sync_nats, f"{PROJECT}.a1")
    latest = put(sync_nats, f"{PROJECT}.a1", b'{"name": "y"}')
    other = put(sync_nats, f"{COMMITTEE}.c1")

    result = run(env, "requeue", f"{PROJECT}.a1", f"{COMMITTEE}.c1")

    assert result.exit_code == 0, result.output
    assert queued_tasks(redis_client, kwargs=REQUEUE_KWARGS) == [
        QueuedTask("sync_kv_entry", f"{PROJECT}.a1@{latest}", [f"{PROJECT}.a1", latest, "PUT"]),
        QueuedTask("sync_kv_entry", f"{COMMITTEE}.c1@{other}", [f"{COMMITTEE}.c1", other, "PUT"]),
    ]
    assert f"queued {PROJECT}.a1@{latest}" in result.stdout


def test_requeue_reports_unknown_keys_and_still_enqueues_the_others(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    revision = put(sync_nats, f"{PROJECT}.known")

    result = run(env, "requeue", f"{PROJECT}.missing", f"{PROJECT}.known")

    assert result.exit_code == 1
    assert f"{PROJECT}.missing" in result.stderr
    assert "Traceback" not in result.output
    assert [t.id for t in queued_tasks(redis_client, kwargs=REQUEUE_KWARGS)] == [
        f"{PROJECT}.known@{revision}"
    ]


def test_requeue_of_a_deleted_key_enqueues_its_delete(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    put(sync_nats, f"{PROJECT}.gone")
    sync_nats.run(sync_nats.kv(OBJECTS).delete(f"{PROJECT}.gone"))
    delete_revision = sync_nats.run(sync_nats.js.stream_info(f"KV_{OBJECTS}")).state.last_seq

    result = run(env, "requeue", f"{PROJECT}.gone")

    assert result.exit_code == 0, result.output
    (task,) = queued_tasks(redis_client, kwargs=REQUEUE_KWARGS)
    assert task.args == [f"{PROJECT}.gone", delete_revision, "DEL"]


def test_requeue_undelete_clears_only_the_tombstone_and_enqueues(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    revision = put(sync_nats, f"{PROJECT}.back")
    put(sync_nats, f"{COMMITTEE}.live")
    sync_nats.kv_put("v1-mappings", "project.sfid.back", b"!del")
    sync_nats.kv_put("v1-mappings", "project.uid.old-uid", b"!del")
    sync_nats.kv_put("v1-mappings", "committee.sfid.live", b"some-uid")

    result = run(env, "requeue", "--undelete", "--yes", f"{PROJECT}.back", f"{COMMITTEE}.live")

    assert result.exit_code == 0, result.output
    assert f"cleared the tombstone of {PROJECT}.back" in result.stdout
    assert f"no tombstone for {COMMITTEE}.live" in result.stdout
    assert sync_nats.kv_get("v1-mappings", "project.sfid.back") is None
    assert sync_nats.kv_get("v1-mappings", "project.uid.old-uid") is not None
    assert bytes(sync_nats.kv_get("v1-mappings", "committee.sfid.live").value) == b"some-uid"
    assert f"{PROJECT}.back@{revision}" in [
        t.id for t in queued_tasks(redis_client, kwargs=REQUEUE_KWARGS)
    ]


def test_requeue_undelete_clears_a_deleted_members_tombstone(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    """Members leave tombstones like the other kinds: undelete finds theirs too."""
    sfid = "6f1c2d3e-0000-4000-8000-00000000beef"
    revision = put(sync_nats, f"{MEMBER}.{sfid}")
    sync_nats.kv_put("v1-mappings", f"committee_member.sfid.{sfid}", b"!del")
    sync_nats.kv_put("v1-mappings", "committee_member.uid.old-member", b"!del")

    result = run(env, "requeue", "--undelete", "--yes", f"{MEMBER}.{sfid}")

    assert result.exit_code == 0, result.output
    assert f"cleared the tombstone of {MEMBER}.{sfid}" in result.stdout
    assert sync_nats.kv_get("v1-mappings", f"committee_member.sfid.{sfid}") is None
    assert sync_nats.kv_get("v1-mappings", "committee_member.uid.old-member") is not None
    assert f"{MEMBER}.{sfid}@{revision}" in [
        t.id for t in queued_tasks(redis_client, kwargs=REQUEUE_KWARGS)
    ]


def test_requeue_with_the_broker_down_fails_cleanly(
    buckets: NatsServer, sync_nats: SyncNats
) -> None:
    put(sync_nats, f"{PROJECT}.a1")
    env = {"NATS_URL": buckets.url, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}

    result = run(env, "requeue", f"{PROJECT}.a1")

    assert result.exit_code == 1
    assert "broker" in result.stderr
    assert "Traceback" not in result.output


def test_requeue_with_nats_down_fails_cleanly(redis_server: ValkeyServer) -> None:
    env = {"NATS_URL": f"nats://127.0.0.1:{free_port()}", "REDIS_URL": redis_server.url}

    result = run(env, "requeue", f"{PROJECT}.a1")

    assert result.exit_code == 1
    assert "cannot connect to NATS" in result.stderr
    assert "Traceback" not in result.output


def test_bad_configuration_exits_2(redis_server: ValkeyServer) -> None:
    result = run({"REDIS_URL": "http://not-redis"}, "requeue", "k")
    assert result.exit_code == 2
    assert "REDIS_URL" in result.stderr


# --------------------------------------------------------------------- replay


def test_replay_enqueues_every_live_key_with_the_prefix(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    expected = {}
    for n in range(30):
        key = f"{PROJECT}.p{n}"
        put(sync_nats, key)
        expected[key] = put(sync_nats, key, b'{"name": "latest"}')
    put(sync_nats, f"{COMMITTEE}.c1")
    put(sync_nats, f"{PROJECT}.deleted")
    sync_nats.run(sync_nats.kv(OBJECTS).delete(f"{PROJECT}.deleted"))

    result = run(env, "replay", "--prefix", f"{PROJECT}.", "--yes")

    assert result.exit_code == 0, result.output
    tasks = queued_tasks(redis_client)
    assert {t.args[0]: t.args[1] for t in tasks} == expected
    assert all(t.args[2] == "PUT" and t.id == f"{t.args[0]}@{t.args[1]}" for t in tasks)
    assert len(tasks) == len(expected)
    assert "enqueueing" in result.stderr  # the progress bar
    assert "queued 30 key(s)" in result.stdout
    assert "(project 30)" in result.stdout


def test_replay_twice_enqueues_the_same_task_ids(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    put(sync_nats, f"{PROJECT}.p1")
    put(sync_nats, f"{COMMITTEE}.c1")

    assert run(env, "replay", "--yes").exit_code == 0
    first = [t.id for t in queued_tasks(redis_client)]
    redis_client.delete(QUEUE)
    assert run(env, "replay", "--yes").exit_code == 0

    assert sorted(first) == sorted(t.id for t in queued_tasks(redis_client))
    assert len(first) == 2


def test_replay_enqueues_projects_before_committees(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    put(sync_nats, "other-table__c.x1")
    put(sync_nats, f"{COMMITTEE}.c1")
    put(sync_nats, f"{PROJECT}.p1")
    put(sync_nats, f"{COMMITTEE}.c2")
    put(sync_nats, f"{PROJECT}.p2")

    assert run(env, "replay", "--yes").exit_code == 0

    assert [t.args[0] for t in queued_tasks(redis_client)] == [
        f"{PROJECT}.p1",
        f"{PROJECT}.p2",
        f"{COMMITTEE}.c1",
        f"{COMMITTEE}.c2",
        "other-table__c.x1",
    ]


def test_replay_of_an_empty_bucket_enqueues_nothing(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    result = run(env, "replay")
    assert result.exit_code == 0, result.output
    assert queued_tasks(redis_client) == []


def test_replay_pauses_while_the_queue_is_over_the_limit(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis, tmp_path: Path
) -> None:
    put(sync_nats, f"{PROJECT}.p1")
    backlog = [f"backlog-{n}" for n in range(10)]
    redis_client.lpush(QUEUE, *backlog)
    stderr_path = tmp_path / "replay.err"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "v1_sync_helper", "replay", "--yes"],
            env=child_env(**env, BRIDGE_MAX_QUEUE_DEPTH="5"),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 20
        while b"waiting for the workers" not in stderr_path.read_bytes():
            assert process.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.05)
        assert queue_depth(redis_client, QUEUE) == len(backlog)  # nothing added while paused

        redis_client.delete(QUEUE)  # the workers drain the queue
        assert process.wait(timeout=20) == 0, stderr_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert [t.args[0] for t in queued_tasks(redis_client)] == [f"{PROJECT}.p1"]


def test_wait_for_room_resumes_only_at_the_low_water_mark(
    redis_server: ValkeyServer, redis_client: redis.Redis
) -> None:
    redis_client.lpush(QUEUE, *[f"m{n}" for n in range(12)])
    depths_seen: list[int] = []

    def drain_one(_seconds: float) -> None:  # stands in for a worker taking one task
        redis_client.rpop(QUEUE)
        depths_seen.append(queue_depth(redis_client, QUEUE))

    with TaskQueue(redis_server.url, QUEUE) as queue:
        wait_for_room(queue, max_depth=10, sleep=drain_one)

    low_water = int(10 * LOW_WATER_FRACTION)  # the bridge's own resume point
    assert depths_seen[-1] == low_water
    assert queue_depth(redis_client, QUEUE) == low_water


# ------------------------------------------------------------------------ dlq


def add_letter(
    store: DeadLetterStore, key: str, revision: int, now: float, **extra: object
) -> None:
    fields: dict[str, object] = {
        "error_kind": "validation",
        "error_message": "400 Bad Request: slug must match ^[a-z0-9-]+$",
        "status": 400,
        "body_excerpt": '{"message": "slug"}',
        "attempts": 1,
    }
    fields.update(extra)
    store.add(key, revision, "PUT", now=now, **fields)  # type: ignore[arg-type]


@pytest.fixture
def letters(store: DeadLetterStore) -> DeadLetterStore:
    now = time.time()
    add_letter(store, f"{PROJECT}.old", 3, now - 7200, attempts=11, error_kind="retries_exhausted")
    add_letter(store, f"{PROJECT}.new", 9, now - 30)
    return store


def test_dlq_list_shows_newest_first_with_the_columns(
    env: dict[str, str], letters: DeadLetterStore
) -> None:
    result = run(env, "dlq", "list")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KEY", "REV", "KIND", "TRIES", "AGE", "MESSAGE"]
    assert lines[1].split()[:5] == [f"{PROJECT}.new", "9", "validation", "1", "30s"]
    assert lines[2].split()[:5] == [f"{PROJECT}.old", "3", "retries_exhausted", "11", "2h"]
    assert "400 Bad Request: slug" in lines[1]


def test_dlq_list_json_has_every_field(env: dict[str, str], letters: DeadLetterStore) -> None:
    result = run(env, "dlq", "list", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [entry["id"] for entry in data] == [f"{PROJECT}.new@9", f"{PROJECT}.old@3"]
    assert set(data[0]) == {
        "id", "key", "revision", "operation", "error_kind", "error_message", "status",
        "body_excerpt", "attempts", "first_failure", "last_failure", "epoch",
    }  # fmt: skip


def test_dlq_list_when_empty(env: dict[str, str]) -> None:
    result = run(env, "dlq", "list")
    assert result.exit_code == 0
    assert "No dead letters." in result.stdout


def test_dlq_show_prints_one_letter(env: dict[str, str], letters: DeadLetterStore) -> None:
    result = run(env, "dlq", "show", f"{PROJECT}.new@9")

    assert result.exit_code == 0, result.output
    assert "V2 status      400" in result.stdout
    assert '{"message": "slug"}' in result.stdout

    as_json = json.loads(run(env, "dlq", "show", f"{PROJECT}.new@9", "--json").stdout)
    assert as_json["revision"] == 9


def test_dlq_show_unknown_id_fails(env: dict[str, str]) -> None:
    result = run(env, "dlq", "show", "nope@1")
    assert result.exit_code == 1
    assert "no dead letter 'nope@1'" in result.stderr


def test_dlq_requeue_enqueues_and_removes_the_letter(
    env: dict[str, str], letters: DeadLetterStore, redis_client: redis.Redis
) -> None:
    result = run(env, "dlq", "requeue", f"{PROJECT}.old@3", "missing@1")

    assert result.exit_code == 1  # one id was unknown
    assert "missing@1" in result.stderr
    # A re-queued dead letter is an operator's decision: it runs past SYNC_DELETE_BUDGET.
    assert queued_tasks(redis_client, kwargs=DLQ_KWARGS) == [
        QueuedTask("sync_kv_entry", f"{PROJECT}.old@3", [f"{PROJECT}.old", 3, "PUT"])
    ]
    assert [letter.id for letter in letters.list()] == [f"{PROJECT}.new@9"]


def test_dlq_requeue_stamps_each_task_with_the_bucket_life_of_its_letter(
    env: dict[str, str], store: DeadLetterStore, redis_client: redis.Redis
) -> None:
    """A letter of a rebuilt bucket's older life must not pass for the current one."""
    add_letter(store, f"{PROJECT}.stamped", 5, time.time(), epoch=1_700_000_000_000_000)

    result = run(env, "dlq", "requeue", f"{PROJECT}.stamped@5")

    assert result.exit_code == 0, result.output
    stamped = {**DLQ_KWARGS, "epoch": 1_700_000_000_000_000}
    assert [t.id for t in queued_tasks(redis_client, kwargs=stamped)] == [f"{PROJECT}.stamped@5"]


def test_dlq_requeue_all(
    env: dict[str, str], letters: DeadLetterStore, redis_client: redis.Redis
) -> None:
    result = run(env, "dlq", "requeue", "--all", "--yes")

    assert result.exit_code == 0, result.output
    assert sorted(t.id for t in queued_tasks(redis_client, kwargs=DLQ_KWARGS)) == [
        f"{PROJECT}.new@9",
        f"{PROJECT}.old@3",
    ]
    assert letters.count() == 0


def test_dlq_requeue_needs_ids_or_all(env: dict[str, str]) -> None:
    assert run(env, "dlq", "requeue").exit_code == 2
    assert run(env, "dlq", "requeue", "--all", "x@1").exit_code == 2


def test_dlq_letter_stays_when_the_broker_refuses_the_task(letters: DeadLetterStore) -> None:
    dead_broker = TaskQueue(f"redis://127.0.0.1:{free_port()}/0", QUEUE)
    letter = letters.get(f"{PROJECT}.new@9")
    assert letter is not None

    with dead_broker, pytest.raises(Exception, match="broker did not accept"):
        requeue_letters(dead_broker, letters, [letter])

    assert letters.get(f"{PROJECT}.new@9") == letter


def test_dlq_letter_rewritten_by_a_new_failure_is_not_removed(
    letters: DeadLetterStore, redis_client: redis.Redis
) -> None:
    """The re-queued task failed again before the removal: that failure stays."""
    read = letters.list()
    add_letter(letters, f"{PROJECT}.new", 9, time.time() + 1, error_kind="conflict")

    removed = letters.remove_unchanged(read)

    assert removed == [f"{PROJECT}.old@3"]
    remaining = letters.get(f"{PROJECT}.new@9")
    assert remaining is not None
    assert remaining.error_kind == "conflict"


def test_dlq_requeue_with_redis_down_fails_cleanly(
    buckets: NatsServer, letters: DeadLetterStore
) -> None:
    env = {"NATS_URL": buckets.url, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = run(env, "dlq", "requeue", "--all", "--yes")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "Error:" in result.stderr
    assert letters.count() == 2  # still there: nothing reached the broker


def test_dlq_list_works_with_redis_empty_or_down(
    buckets: NatsServer, letters: DeadLetterStore
) -> None:
    """The dead letters live in JetStream: the loss of Redis does not lose them."""
    env = {"NATS_URL": buckets.url, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = run(env, "dlq", "list", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 2


def test_dlq_purge_yes_does_not_ask(env: dict[str, str], letters: DeadLetterStore) -> None:
    result = run(env, "dlq", "purge", "--yes")
    assert result.exit_code == 0
    assert letters.count() == 0
