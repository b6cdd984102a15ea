"""A few hundred hostile V1 records through the real bridge and worker (issue 13).

Seeded, so a failure reproduces. Every change goes through the whole pipeline:
``v1-objects`` (or a raw publish to the stream, for keys the KV refuses) ->
bridge -> Redis -> threads worker -> the strict sandbox. Each key must end in
exactly one terminal state:

- **synced** (``created``/``updated``/``unchanged``), and the sandbox answered
  no V2 call with a 4xx or 5xx (no contract violation);
- **dead-lettered**, with a dead letter that has a kind and a message;
- **skipped** (or a soft delete, not implemented yet) with a reason.

No run takes the generic "unexpected error" path, the worker's NATS
connection is never closed, and valid records put afterwards sync within
seconds.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from bridge.loop import LoopTuning
from sync_core.broker import task_id_for
from sync_core.settings import BridgeSettings
from tests.bridge_harness import BackgroundBridge
from tests.test_task_sync import (  # noqa: F401 - the module-scoped stack fixture
    OBJECTS,
    Stack,
    new_project,
    stack,
)
from tests.v1_examples import COMMITTEE_JSON, record

SEED = 13
RECORDS = 300
SETTLE_SECONDS = 30.0
VALID_AFTER_SECONDS = 5.0
UNEXPECTED = "unexpected error in the sync task"
SYNCED = {"created", "updated", "unchanged"}
SKIPPED = {"skipped"}
V2_PATHS = ("/projects", "/committees")
# A child whose parent never syncs waits durably ("parked") until SYNC_PARENT_WAIT:
# a defined state of its own. Deletes end "deleted" or as skips and dead letters.
TERMINAL = SYNCED | SKIPPED | {"dead_lettered", "superseded", "parked", "deleted"}

PROJECT_COLUMNS = [
    "sfid",
    "name",
    "slug__c",
    "description__c",
    "project_status__c",
    "category__c",
    "parent_project__c",
    "project_entity_name__c",
    "start_date__c",
    "project_logo__c",
    "repositoryurl__c",
    "website__c",
    "charterurl__c",
    "auto_join_enabled__c",
    "public__c",
    "isdeleted",
    "_sdc_deleted_at",
    "lastmodifiedbyid",
]
COMMITTEE_COLUMNS = [
    "sfid",
    "mailing_list__c",
    "project_name__c",
    "description__c",
    "type__c",
    "committee_website__c",
    "enable_voting__c",
    "sso_group_enabled",
    "public_enabled",
    "public_name",
    "lastmodifiedbyid",
    "_sdc_deleted_at",
]
DEEP_MSGPACK = b"\x91" * 1000 + b"\x90"
DEEP_MARK = "\x00deep\x00"
# Subjects the stream accepts but the KV key alphabet does not.
RAW_KEY_IDS = ["a0941000002wBz9AA\u00e9", "a0941000002wBz9AA#", "a%41", "x" * 3000, "~tilde"]


def hostile_values(rng: random.Random) -> list[Any]:
    """The menu every column draws from (fresh random parts each call)."""
    text = "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 30)))
    return [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        1.5,
        float("nan"),
        [],
        {},
        [1, "a"],
        {"k": [None]},
        "",
        " ",
        "nil",
        text,
        "x" * rng.choice([300, 5000, 60_000]),
        "用户@clients",
        "\U0001f600@clients",
        "x" * 100_000 + "@clients",
        "0032M00002XyZabQAB",
        " a0941000002wBz9AAE ",
        "Active",
        "2020-02-30",
        "www.example.org",
        b"\x00\xff bytes",
        msgpack.ExtType(7, b"x"),
        msgpack.Timestamp(2**62),
        msgpack.Timestamp(-(2**62)),
        DEEP_MARK,
    ]


def encode(value: dict[str, Any], rng: random.Random) -> bytes:
    """JSON when the value allows it and the coin says so, else msgpack."""
    if rng.random() < 0.5:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            pass
        else:
            return text.replace(json.dumps(DEEP_MARK), "[" * 200 + "]" * 200).encode()
    packed = msgpack.packb(value, use_bin_type=True)
    return packed.replace(msgpack.packb(DEEP_MARK), DEEP_MSGPACK)


@dataclass
class Change:
    """One generated change: where it went and at which stream sequence."""

    key: str
    revision: int = 0


def generate(rng: random.Random) -> list[tuple[str, bytes | None]]:
    """``RECORDS`` (key, value) pairs; ``None`` values are raw publishes of the key."""
    changes: list[tuple[str, bytes | None]] = []
    for number in range(RECORDS):
        roll = rng.random()
        if roll < 0.06:
            changes.append((f"salesforce-project__c.{rng.choice(RAW_KEY_IDS)}{number}", None))
            continue
        if roll < 0.1:
            changes.append(
                (f"salesforce-project__c.a09{number:015d}", rng.choice([b"", b"\xc1\xc1", b"[]"]))
            )
            continue
        if roll < 0.7:
            key, value = new_project()
            columns = PROJECT_COLUMNS
        else:
            sfid = f"3f0c2a8e-5b1d-4c59-9a0e-{number:012d}"
            key = f"platform-collaboration__c.{sfid}"
            value = record(COMMITTEE_JSON, sfid=sfid, project_name__c="a0941000002wBz9AAE")
            columns = COMMITTEE_COLUMNS
        menu = hostile_values(rng)
        for column in rng.sample(columns, rng.randrange(1, 4)):
            value[column] = rng.choice(menu)
        changes.append((key, encode(value, rng)))
    return changes


class UnexpectedErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.keys: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == UNEXPECTED:
            with self._guard:
                self.keys.append(str(record.__dict__.get("key")))


@pytest.fixture(scope="module")
def piped(stack: Stack) -> Iterator[Stack]:  # noqa: F811
    """The task stack of ``test_task_sync`` with a bridge feeding its worker."""
    settings = stack.runtime.settings
    bridge = BackgroundBridge(
        BridgeSettings(
            nats_url=settings.nats_url, redis_url=settings.redis_url, port=0, bind="127.0.0.1"
        ),
        tuning=LoopTuning(batch_size=100),
    )
    with bridge:
        yield stack


def publish_raw(st: Stack, key: str) -> int:
    """Publish a PUT straight to the bucket's stream; its sequence (the revision)."""
    ack = st.nats.run(st.nats.js.publish(f"$KV.{OBJECTS}.{key}", b"{}"))
    return int(ack.seq)


def terminal_runs(st: Stack, key: str, revision: int) -> list[logging.LogRecord]:
    return [
        run
        for run in st.outcomes.of(key)
        if run.__dict__["revision"] == revision and run.outcome in TERMINAL
    ]


def test_hostile_records_each_end_in_one_terminal_state(piped: Stack) -> None:
    st = piped
    st.sandbox.reset_requests()
    handler = UnexpectedErrors()
    sync_log = logging.getLogger("tasks.run.sync")
    sync_log.addHandler(handler)
    try:
        changes = []
        for key, data in generate(random.Random(SEED)):
            revision = publish_raw(st, key) if data is None else st.put(key, data)
            changes.append(Change(key, revision))

        deadline = time.monotonic() + SETTLE_SECONDS
        pending = list(changes)
        while pending:
            pending = [c for c in pending if not terminal_runs(st, c.key, c.revision)]
            assert time.monotonic() < deadline, f"{len(pending)} never finished: {pending[:3]}"
            time.sleep(0.05)

        letters = st.runtime.dead_letters
        counts: dict[str, int] = {}
        for change in changes:
            outcomes = {run.outcome for run in terminal_runs(st, change.key, change.revision)}
            # A redelivered duplicate ends "unchanged" after a sync: still one state.
            state = (
                "synced"
                if outcomes <= SYNCED
                else next(iter(outcomes))
                if len(outcomes) == 1
                else None
            )
            assert state is not None, f"{change.key[:80]}: {outcomes}"
            counts[state] = counts.get(state, 0) + 1
            last = terminal_runs(st, change.key, change.revision)[-1]
            if state == "dead_lettered":
                letter = letters.get(task_id_for(change.key, change.revision))
                assert letter is not None, change.key[:80]
                assert letter.error_kind
                assert letter.error_kind != "unexpected_error"
                assert letter.error_message
            elif state in SKIPPED | {"parked"}:
                assert last.__dict__.get("reason")
        rejected = [
            (r.method, r.path, r.status)
            for r in st.sandbox.requests
            if r.path.startswith(V2_PATHS) and r.status >= 400
        ]
        assert rejected == []  # no V2 call was refused: the contract held
        assert handler.keys == []
        assert not st.runtime.nats.nc.is_closed
        assert counts.get("synced", 0) > 0
        assert counts.get("dead_lettered", 0) > 0
        logging.getLogger(__name__).info("hostile outcomes: %s", counts)
    finally:
        sync_log.removeHandler(handler)

    # The pipeline still works: valid records put now sync within seconds.
    fresh = [new_project() for _ in range(5)]
    revisions = [st.put(key, project) for key, project in fresh]
    deadline = time.monotonic() + VALID_AFTER_SECONDS
    for (key, _), revision in zip(fresh, revisions, strict=True):
        while not terminal_runs(st, key, revision):
            assert time.monotonic() < deadline, f"{key} did not sync in {VALID_AFTER_SECONDS}s"
            time.sleep(0.02)
        assert terminal_runs(st, key, revision)[-1].outcome == "created"


def test_the_generator_is_hostile_enough() -> None:
    changes = generate(random.Random(SEED))
    assert len(changes) == RECORDS
    assert sum(1 for _, data in changes if data is None) >= 10
