"""The safety net of the commands that change something, against real nats-server and valkey.

``--dry-run`` changes nothing and counts; a bulk action asks first (answered
on a real terminal: a pseudo-terminal, the way an operator's shell gives it)
and refuses without a terminal unless ``--yes``; ``--kind`` and ``--type``
narrow the selection; ``--json`` says what was done; ``requeue`` takes the
``KEY@REVISION`` ids Flower shows.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest
import redis

from sandbox.servers import NatsServer, ValkeyServer, child_env
from sync_core.nats_client import SyncNats
from sync_core.sync_state import DEFAULT_STATE_BUCKET
from tasks.stores.dead_letters import DeadLetterStore
from tests.test_operations import (
    COMMITTEE,
    DLQ_KWARGS,
    PROJECT,
    REQUEUE_KWARGS,
    add_letter,
    put,
    queued_tasks,
    run,
)

MEMBER = "platform-community__c"
PROMPT = b"Go ahead? [y/N]"
TERMINAL_DEADLINE = 30.0


@pytest.fixture
def env(buckets: NatsServer, redis_server: ValkeyServer) -> dict[str, str]:
    return {"NATS_URL": buckets.url, "REDIS_URL": redis_server.url}


@pytest.fixture
def letters(sync_nats: SyncNats) -> DeadLetterStore:
    """Four dead letters: two validation (project, committee), one conflict, one exhausted."""
    store = DeadLetterStore(sync_nats, DEFAULT_STATE_BUCKET)
    now = time.time()
    add_letter(store, f"{PROJECT}.p1", 3, now - 60)
    add_letter(store, f"{COMMITTEE}.c1", 4, now - 50)
    add_letter(store, f"{COMMITTEE}.c2", 5, now - 40, error_kind="conflict", status=409)
    add_letter(store, f"{MEMBER}.m1", 6, now - 30, error_kind="retries_exhausted", attempts=11)
    return store


@pytest.fixture
def objects(sync_nats: SyncNats) -> dict[str, int]:
    """Live keys of three object types and their revisions."""
    keys = [f"{PROJECT}.p1", f"{PROJECT}.p2", f"{COMMITTEE}.c1", f"{MEMBER}.m1"]
    return {key: put(sync_nats, key) for key in keys}


def answer_on_a_terminal(env: dict[str, str], args: list[str], answer: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin and stderr; answer its prompt.

    Returns the exit code and everything written to the terminal.
    """
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "v1_sync_helper", *args],
        stdin=follower,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=child_env(**env),
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + TERMINAL_DEADLINE
    try:
        while PROMPT not in screen:
            assert time.monotonic() < deadline, screen
            assert process.poll() is None, screen
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                screen += os.read(leader, 4096)
        os.write(leader, f"{answer}\n".encode())
        code = process.wait(timeout=TERMINAL_DEADLINE)
        while select.select([leader], [], [], 0.1)[0]:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end closed
                break
            if not chunk:
                break
            screen += chunk
        return code, screen.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)


# --------------------------------------------------------------------- replay


def test_replay_dry_run_counts_by_type_and_queues_nothing(
    env: dict[str, str], objects: dict[str, int], redis_client: redis.Redis
) -> None:
    text = run(env, "replay", "--dry-run")
    assert text.exit_code == 0, text.output
    assert "dry run: 4 key(s) would be queued" in text.stdout
    assert "project 2" in text.stdout
    assert "committee 1" in text.stdout

    as_json = run(env, "replay", "--dry-run", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {
        "dry_run": True,
        "bucket": "v1-objects",
        "prefix": "",
        "types": [],
        "count": 4,
        "by_type": {"project": 2, "committee": 1, "committee_member": 1},
    }
    assert queued_tasks(redis_client) == []


def test_replay_without_a_terminal_or_yes_refuses(
    env: dict[str, str], objects: dict[str, int], redis_client: redis.Redis
) -> None:
    result = run(env, "replay")

    assert result.exit_code == 1
    assert "Re-sync 4 key(s)" in result.stderr
    assert "Pass --yes" in result.stderr
    assert queued_tasks(redis_client) == []


def test_replay_by_object_type_with_json(
    env: dict[str, str], objects: dict[str, int], redis_client: redis.Redis
) -> None:
    result = run(
        env, "replay", "--type", "committee", "--type", "committee_member", "--yes", "--json"
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["count"] == 2
    assert report["by_type"] == {"committee": 1, "committee_member": 1}
    assert report["dry_run"] is False
    assert sorted(t.args[0] for t in queued_tasks(redis_client)) == [
        f"{COMMITTEE}.c1",
        f"{MEMBER}.m1",
    ]


def test_replay_asks_on_a_terminal_and_a_no_changes_nothing(
    env: dict[str, str], objects: dict[str, int], redis_client: redis.Redis
) -> None:
    code, screen = answer_on_a_terminal(env, ["replay", "--type", "project"], "n")
    assert code == 1, screen
    assert "Re-sync 2 key(s) of v1-objects (project 2)" in screen
    assert queued_tasks(redis_client) == []

    code, screen = answer_on_a_terminal(env, ["replay", "--type", "project"], "y")
    assert code == 0, screen
    assert sorted(t.args[0] for t in queued_tasks(redis_client)) == [
        f"{PROJECT}.p1",
        f"{PROJECT}.p2",
    ]


# ------------------------------------------------------------------- dlq list


def test_dlq_list_by_kind_and_type(env: dict[str, str], letters: DeadLetterStore) -> None:
    result = run(env, "dlq", "list", "--type", "committee", "--json")
    assert result.exit_code == 0, result.output
    assert [entry["id"] for entry in json.loads(result.stdout)] == [
        f"{COMMITTEE}.c2@5",
        f"{COMMITTEE}.c1@4",
    ]

    table = run(env, "dlq", "list", "--kind", "retries_exhausted")
    assert table.exit_code == 0, table.output
    assert f"{MEMBER}.m1" in table.stdout
    assert "1 dead letter(s)" in table.stdout


# ---------------------------------------------------------------- dlq requeue


def test_dlq_requeue_by_kind_and_type(
    env: dict[str, str], letters: DeadLetterStore, redis_client: redis.Redis
) -> None:
    result = run(
        env, "dlq", "requeue", "--kind", "validation", "--type", "committee", "--yes", "--json"
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["requeued"] == [f"{COMMITTEE}.c1@4"]
    assert report["by_kind"] == {"validation": 1}
    assert [t.id for t in queued_tasks(redis_client, kwargs=DLQ_KWARGS)] == [f"{COMMITTEE}.c1@4"]
    assert sorted(letter.id for letter in letters.list()) == [
        f"{COMMITTEE}.c2@5",
        f"{MEMBER}.m1@6",
        f"{PROJECT}.p1@3",
    ]


def test_dlq_requeue_dry_run_lists_and_keeps_everything(
    env: dict[str, str], letters: DeadLetterStore, redis_client: redis.Redis
) -> None:
    text = run(env, "dlq", "requeue", "--all", "--dry-run")
    assert text.exit_code == 0, text.output
    assert f"would re-queue {MEMBER}.m1@6 (retries_exhausted)" in text.stdout
    assert "dry run: 4 dead letter(s) would be re-queued" in text.stdout
    assert "validation 2" in text.stdout

    as_json = json.loads(
        run(env, "dlq", "requeue", "--kind", "conflict", "--dry-run", "--json").stdout
    )
    assert as_json["dry_run"] is True
    assert as_json["letters"] == [f"{COMMITTEE}.c2@5"]
    assert as_json["by_type"] == {"committee": 1}

    assert queued_tasks(redis_client, kwargs=DLQ_KWARGS) == []
    assert letters.count() == 4


def test_dlq_requeue_all_without_a_terminal_or_yes_refuses(
    env: dict[str, str], letters: DeadLetterStore, redis_client: redis.Redis
) -> None:
    result = run(env, "dlq", "requeue", "--all")

    assert result.exit_code == 1
    assert "Re-queue 4 dead letter(s)" in result.stderr
    assert "--yes" in result.stderr
    assert letters.count() == 4
    assert queued_tasks(redis_client, kwargs=DLQ_KWARGS) == []


def test_dlq_requeue_of_named_ids_needs_no_confirmation_and_has_json(
    env: dict[str, str], letters: DeadLetterStore, redis_client: redis.Redis
) -> None:
    result = run(env, "dlq", "requeue", f"{PROJECT}.p1@3", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["requeued"] == [f"{PROJECT}.p1@3"]
    assert [t.id for t in queued_tasks(redis_client, kwargs=DLQ_KWARGS)] == [f"{PROJECT}.p1@3"]


def test_dlq_requeue_ids_and_filters_do_not_mix(env: dict[str, str]) -> None:
    assert run(env, "dlq", "requeue", "--kind", "validation", "x@1").exit_code == 2


# ------------------------------------------------------------------ dlq purge


def test_dlq_purge_by_kind_keeps_the_rest(env: dict[str, str], letters: DeadLetterStore) -> None:
    dry = run(env, "dlq", "purge", "--kind", "validation", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run: 2 dead letter(s) would be purged" in dry.stdout
    assert letters.count() == 4

    result = run(env, "dlq", "purge", "--kind", "validation", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)["purged"]) == [f"{COMMITTEE}.c1@4", f"{PROJECT}.p1@3"]
    assert sorted(letter.error_kind for letter in letters.list()) == [
        "conflict",
        "retries_exhausted",
    ]


def test_dlq_purge_without_a_terminal_or_yes_refuses(
    env: dict[str, str], letters: DeadLetterStore
) -> None:
    result = run(env, "dlq", "purge", input="y\n")  # piped input is not a terminal
    assert result.exit_code == 1
    assert "--yes" in result.stderr
    assert letters.count() == 4


def test_dlq_purge_asks_on_a_terminal(env: dict[str, str], letters: DeadLetterStore) -> None:
    code, screen = answer_on_a_terminal(env, ["dlq", "purge", "--type", "committee"], "n")
    assert code == 1, screen
    assert "Delete 2 dead letter(s) for good" in screen
    assert letters.count() == 4

    code, screen = answer_on_a_terminal(env, ["dlq", "purge", "--type", "committee"], "y")
    assert code == 0, screen
    assert letters.count() == 2


# -------------------------------------------------------------------- requeue


def test_requeue_accepts_flower_task_ids(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    first = put(sync_nats, f"{PROJECT}.a1")
    latest = put(sync_nats, f"{PROJECT}.a1", b'{"name": "newer"}')
    other = put(sync_nats, f"{COMMITTEE}.c1")

    result = run(env, "requeue", f"{PROJECT}.a1@{first}", f"{COMMITTEE}.c1@{other}")

    assert result.exit_code == 0, result.output
    # The revision is informational: the sync runs at the key's current revision.
    assert [t.id for t in queued_tasks(redis_client, kwargs=REQUEUE_KWARGS)] == [
        f"{PROJECT}.a1@{latest}",
        f"{COMMITTEE}.c1@{other}",
    ]
    assert f"queued {PROJECT}.a1@{latest} (asked for @{first}; the key is at {latest} now)" in (
        result.stdout
    )
    assert f"queued {COMMITTEE}.c1@{other}\n" in result.stdout


def test_requeue_json_and_dry_run(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    revision = put(sync_nats, f"{PROJECT}.a1")

    dry = run(env, "requeue", f"{PROJECT}.a1@{revision}", f"{PROJECT}.nope", "--dry-run", "--json")

    assert dry.exit_code == 1  # an unknown key, as without --dry-run
    assert json.loads(dry.stdout) == {
        "dry_run": True,
        "count": 1,
        "tasks": [
            {
                "id": f"{PROJECT}.a1@{revision}",
                "key": f"{PROJECT}.a1",
                "revision": revision,
                "operation": "PUT",
                "requested_revision": revision,
            }
        ],
        "unknown": [f"{PROJECT}.nope"],
        "tombstones": [],
    }
    assert queued_tasks(redis_client) == []

    done = json.loads(run(env, "requeue", f"{PROJECT}.a1", "--json").stdout)
    assert done["dry_run"] is False
    assert done["tasks"][0]["requested_revision"] is None
    assert [t.id for t in queued_tasks(redis_client, kwargs=REQUEUE_KWARGS)] == [
        f"{PROJECT}.a1@{revision}"
    ]


def test_requeue_refuses_a_malformed_revision(env: dict[str, str]) -> None:
    result = run(env, "requeue", f"{PROJECT}.a1@latest")
    assert result.exit_code == 2
    assert "neither KEY nor KEY@REVISION" in result.stderr


def test_requeue_undelete_dry_run_and_confirmation(
    env: dict[str, str], sync_nats: SyncNats, redis_client: redis.Redis
) -> None:
    revision = put(sync_nats, f"{PROJECT}.back")
    sync_nats.kv_put("v1-mappings", "project.sfid.back", b"!del")

    dry = run(env, "requeue", "--undelete", "--dry-run", f"{PROJECT}.back")
    assert dry.exit_code == 0, dry.output
    assert f"would clear the tombstone of {PROJECT}.back" in dry.stdout
    assert f"would queue {PROJECT}.back@{revision}" in dry.stdout

    refused = run(env, "requeue", "--undelete", f"{PROJECT}.back")
    assert refused.exit_code == 1
    assert "Clear the tombstone of 1 deleted V2 object(s)" in refused.stderr

    # Neither run touched the tombstone or the queue.
    assert bytes(sync_nats.kv_get("v1-mappings", "project.sfid.back").value) == b"!del"
    assert queued_tasks(redis_client) == []

    done = run(env, "requeue", "--undelete", "--yes", "--json", f"{PROJECT}.back")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["tombstones"] == [f"{PROJECT}.back"]
    assert sync_nats.kv_get("v1-mappings", "project.sfid.back") is None
