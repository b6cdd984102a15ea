"""The operator's tools for the V2 -> V1 direction: ``requeue``, ``replay`` and ``explain``
of ``v2.*`` keys, and the reconciler re-driving V2 objects whose task was lost.

Against the real stack of ``tests.test_reverse_sync`` (its fixture and helpers,
imported: real nats-server, valkey, bridge and Celery worker, the sandbox's V2
fakes publishing the indexer events and its V1 API fake). An event whose task
is "lost" is made by turning the switch off in the worker for that one event:
its run ends ``skipped:v2_to_v1_off`` and records nothing, as if its task had
never run. The reconciler's plan is also tested on bare servers, where no
worker runs what it enqueues.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from nats.aio.client import Client

from bridge.messages import TaskMessageEncoder, producer_app
from bridge.metrics import BridgeMetrics
from bridge.publisher import BrokerPublisher, broker_client, database_of
from bridge.reconciler import Reconciler, ReconcileTuning
from operations.explain import Explanation, open_dry_run
from operations.explain_command import render
from operations.explain_v2 import explain_v2_key
from sandbox.servers import NatsServer, ValkeyServer
from sync_core.broker import V2_EVENT_TASK_NAME, broker_transport_options
from sync_core.nats_client import SyncNats, connect
from sync_core.settings import BridgeSettings
from sync_core.sync_state import (
    DEFAULT_STATE_BUCKET,
    KeyLease,
    PendingRun,
    RunState,
    SweepSummary,
    SyncState,
)
from sync_core.v2_events import REVERSE_EPOCH, V2EventCapture, capture_from_settings
from tasks.run.dry_run import NEW_V1_SFID
from tasks.run.report import RunReport
from tasks.run.reverse import run_reverse
from tasks.stores.dead_letters import DeadLetterStore
from tasks.stores.id_mappings import TOMBSTONE
from tests.test_bridge_loop import queued_tasks, task_ids
from tests.test_reverse_sync import (  # noqa: F401 - the module-scoped stack fixture
    COMMITTEE_READ_ONLY,
    MAPPINGS,
    PERSON,
    STATE,
    V1_COMMITTEES,
    Stack,
    _final_of,
    a_project,
    editable,
    forward_echo_skipped,
    stack,
    v2_committee,
)
from v1_sync_helper.cli import main

GRACE = 0.2
SWEEP_DEADLINE = 15.0


@pytest.fixture
def st(stack: Stack) -> Iterator[Stack]:  # noqa: F811 - the fixture of test_reverse_sync
    stack.sandbox.reset_requests()
    stack.sandbox.clear_faults()
    yield stack
    stack.sandbox.clear_faults()


def cli(st: Stack, *args: str) -> Result:
    settings = st.runtime.settings
    env = {"NATS_URL": settings.nats_url, "REDIS_URL": settings.redis_url}
    return CliRunner().invoke(main, list(args), env=env)


def created_committee(st: Stack) -> tuple[str, str, int]:
    """A V2 committee created in V1 by the direction: its key, V1 key and create sequence."""
    project_uid, _ = a_project(st)
    uid = v2_committee(st, project_uid, "Ops " + uuid.uuid4().hex[:8])
    key = f"v2.committee.{uid}"
    line = st.final(key, "created")
    assert line.outcome == "created", line.__dict__
    sfid = st.mapping(f"committee.uid.{uid}")
    v1_key = f"platform-collaboration__c.{sfid}"
    forward_echo_skipped(st, v1_key)
    st.sandbox.reset_requests()
    return key, v1_key, int(line.__dict__["revision"])


def edit(st: Stack, key: str, description: str) -> None:
    uid = key.rpartition(".")[2]
    current = st.committees.get(uid, PERSON)
    st.committees.update(
        uid,
        {**editable(current.record, COMMITTEE_READ_ONLY), "description": description},
        current.etag,
        PERSON,
    )


def finals(st: Stack, key: str, operation: str, count: int) -> list[Any]:
    """The final outcome lines of ``key``'s ``operation`` events, once there are ``count``."""
    runs = st.wait_for(
        key, lambda runs: len(_final_of(runs, operation)) >= count, f"{count} final outcome(s)"
    )
    return _final_of(runs, operation)


@contextmanager
def switched_off(st: Stack) -> Iterator[None]:
    """Meanwhile the worker skips V2 events and records nothing: their tasks are as lost."""
    settings = st.runtime.settings
    st.runtime.settings = settings.model_copy(update={"sync_v2_to_v1": False})
    try:
        yield
    finally:
        st.runtime.settings = settings


def lost_update(st: Stack, key: str, description: str) -> int:
    """A V2 edit of ``key`` whose task ran with the switch off: its sequence."""
    before = len(_final_of(st.outcomes.of(key), "updated"))
    with switched_off(st):
        edit(st, key, description)
        line = finals(st, key, "updated", before + 1)[-1]
    assert (line.outcome, line.__dict__["reason"]) == ("skipped", "v2_to_v1_off")
    return int(line.__dict__["revision"])


def dead_lettered_update(st: Stack, key: str, description: str) -> int:
    """A V2 edit V1 refuses (400): dead-lettered; its sequence."""
    st.sandbox.inject_fault("PATCH", V1_COMMITTEES, status=400, body={"message": "no"})
    edit(st, key, description)
    line = st.final(key, "updated")
    assert line.outcome == "dead_lettered", line.__dict__
    st.sandbox.reset_requests()
    return int(line.__dict__["revision"])


def v1_description(st: Stack, v1_key: str) -> Any:
    row = st.v1_row(v1_key)
    assert row is not None
    return row.get("description__c")


# --- requeue ---------------------------------------------------------------------------


def test_requeue_of_a_v2_key_runs_its_latest_event_again(st: Stack) -> None:
    key, v1_key, created = created_committee(st)
    sequence = dead_lettered_update(st, key, "Refused first.")

    result = cli(st, "requeue", f"{key}@{created}")

    assert result.exit_code == 0, result.output
    assert f"queued {key}@{sequence} (updated)" in result.output
    assert f"asked for @{created}" in result.output
    # Forced with a fresh budget: the dead-lettered event runs again, V1 gets one write.
    line = finals(st, key, "updated", 2)[-1]
    assert (line.outcome, line.__dict__["attempt"]) == ("updated", 0)
    assert [c.status for c in st.v1_calls("PATCH")] == [200]
    assert v1_description(st, v1_key) == "Refused first."


def test_requeue_finds_the_latest_event_past_the_one_the_state_recorded(st: Stack) -> None:
    key, v1_key, _ = created_committee(st)
    sequence = lost_update(st, key, "Never ran.")
    assert st.state(key).revision < sequence

    result = cli(st, "requeue", "--json", key)

    assert result.exit_code == 0, result.output
    (task,) = json.loads(result.stdout)["tasks"]
    assert (task["id"], task["operation"]) == (f"{key}@{sequence}", "updated")
    assert finals(st, key, "updated", 2)[-1].outcome == "updated"
    assert v1_description(st, v1_key) == "Never ran."
    assert len(st.v1_calls("PATCH")) == 1


def test_requeue_of_a_v2_object_the_stream_has_no_event_of_fails(st: Stack) -> None:
    result = cli(st, "requeue", "v2.committee.no-such-uid")
    assert result.exit_code == 1
    assert "no event of 'v2.committee.no-such-uid' in the stream committee_events" in (
        result.output
    )
    undelete = cli(st, "requeue", "--undelete", "v2.committee.no-such-uid")
    assert undelete.exit_code == 2
    assert "--undelete is for keys of v1-objects" in undelete.output


# --- replay ----------------------------------------------------------------------------


def test_replay_of_v2_keys_redrives_only_objects_not_settled_at_their_latest_event(
    st: Stack,
) -> None:
    settled, _, _ = created_committee(st)
    behind, v1_key, _ = created_committee(st)
    sequence = lost_update(st, behind, "Replayed.")

    dry = cli(st, "replay", "--prefix", "v2.committee.", "--dry-run", "--json")

    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)
    assert f"{behind}@{sequence}" in planned["tasks"]
    assert not [task for task in planned["tasks"] if task.startswith(settled + "@")]
    assert len(_final_of(st.outcomes.of(behind), "updated")) == 1  # nothing ran

    result = cli(st, "replay", "--prefix", "v2.committee.", "--yes")

    assert result.exit_code == 0, result.output
    assert finals(st, behind, "updated", 2)[-1].outcome == "updated"
    assert v1_description(st, v1_key) == "Replayed."
    assert st.state(behind).revision == sequence
    again = cli(st, "replay", "--prefix", behind, "--dry-run", "--json")
    assert json.loads(again.stdout)["tasks"] == []


def test_replay_of_v2_keys_refuses_a_type_without_v2_events(st: Stack) -> None:
    result = cli(st, "replay", "--prefix", "v2.", "--type", "project", "--dry-run")
    assert result.exit_code == 2
    assert "V2 objects are of committee, committee_member" in result.output


# --- explain ---------------------------------------------------------------------------


@contextmanager
def nothing_written(st: Stack, *keys: str) -> Iterator[None]:
    """Asserts that V1, and these mapping and sync state keys, are as they were afterwards."""

    def revisions() -> dict[str, int | None]:
        found = {}
        for key in keys:
            entry = st.nats.kv_get(MAPPINGS if key.startswith("committee.") else STATE, key)
            found[key] = None if entry is None else entry.revision
        return found

    calls = len(st.v1_calls())
    before = revisions()
    yield
    assert len(st.v1_calls()) == calls
    assert revisions() == before


def explain(st: Stack, key: str, sequence: int | None = None) -> Explanation:
    dry = open_dry_run(st.runtime.settings)
    try:
        return explain_v2_key(dry, key, sequence)
    finally:
        dry.close()


def test_explain_shows_the_v1_create_a_refused_create_would_make_without_making_it(
    st: Stack,
) -> None:
    project_uid, project_sfid = a_project(st)
    st.sandbox.inject_fault("POST", V1_COMMITTEES, status=400, body={"message": "no"})
    name = "Explained " + uuid.uuid4().hex[:8]
    uid = v2_committee(st, project_uid, name)
    key = f"v2.committee.{uid}"
    assert st.final(key, "created").outcome == "dead_lettered"

    with nothing_written(st, key, f"committee.uid.{uid}"):
        found = explain(st, key)

    assert (found.outcome, found.operation, found.object_type) == ("create", "created", "committee")
    committees = f"project-service/v2/projects/{project_sfid}/committees"
    (call,) = found.v1_calls
    assert (call["method"], call["path"]) == ("POST", committees)
    assert call["body"]["Name"] == name
    assert found.mappings_written[f"committee.uid.{uid}"] == NEW_V1_SFID
    assert found.dead_letter is not None
    assert any("as dead_lettered" in note for note in found.notes)
    text = render(found)
    assert f"stream sequence {found.revision}, created" in text
    assert f"V1 call it would make: POST {committees}" in text
    assert DeadLetterStore(st.nats, STATE).get(f"{key}@{found.revision}") is not None


def test_explain_tells_update_echo_and_superseded_apart(st: Stack) -> None:
    key, v1_key, created = created_committee(st)
    sequence = dead_lettered_update(st, key, "Explained update.")
    sfid = v1_key.partition(".")[2]

    with nothing_written(st, key):
        update = explain(st, key)
        superseded = explain(st, key, created)

    assert (update.outcome, update.revision) == ("update", sequence)
    (call,) = update.v1_calls
    assert call["method"] == "PATCH"
    assert call["path"].endswith(f"/committees/{sfid}")
    assert "Explained update." in json.dumps(call["body"])
    assert (superseded.outcome, superseded.revision) == ("superseded", created)
    assert superseded.v1_calls == []

    forward_runs = len(st.outcomes.of(v1_key))
    assert cli(st, "requeue", key).exit_code == 0
    assert finals(st, key, "updated", 2)[-1].outcome == "updated"
    # The row V1 writes back has been through the forward path (its echo) first.
    st.wait_for(v1_key, lambda runs: len(runs) > forward_runs, "the forward echo")
    echo = explain(st, key)
    assert (echo.outcome, echo.reason) == ("skip", "echo")
    assert echo.v1_calls == []
    assert any("as updated" in note for note in echo.notes)


def test_explain_of_a_v2_delete_shows_the_v1_delete_it_would_make(st: Stack) -> None:
    key, v1_key, _ = created_committee(st)
    uid = key.rpartition(".")[2]
    with switched_off(st):
        st.committees.delete(uid, st.committees.get(uid, PERSON).etag, PERSON)
        line = st.final(key, "deleted")
    assert (line.outcome, line.__dict__["reason"]) == ("skipped", "v2_to_v1_off")

    with nothing_written(st, key, f"committee.uid.{uid}"):
        found = explain(st, key)

    assert (found.outcome, found.operation) == ("delete", "deleted")
    (call,) = found.v1_calls
    assert (call["method"], call["body"]) == ("DELETE", None)
    assert call["path"].endswith("/committees/" + v1_key.partition(".")[2])
    assert found.mappings_written[f"committee.uid.{uid}"] == TOMBSTONE
    assert st.mapping(f"committee.uid.{uid}") != TOMBSTONE


def test_explain_of_a_parked_committee_says_what_it_waits_for(st: Stack) -> None:
    suffix = uuid.uuid4().hex[:8]
    project_uid = st.sandbox.add_project("No V1 " + suffix, "nov1" + suffix)
    uid = v2_committee(st, project_uid, "Waits " + suffix)
    key = f"v2.committee.{uid}"
    st.wait_for(key, lambda runs: any(r.outcome == "parked" for r in runs), "parked")

    found = explain(st, key)

    assert (found.outcome, found.reason) == ("parked", "parent_not_in_v1")
    assert any(f"project.uid.{project_uid}" in note for note in found.notes)
    assert found.v1_calls == []


# --- the reconciler --------------------------------------------------------------------


def reverse_reconciler(
    nc: Client,
    redis_url: str,
    publisher: BrokerPublisher,
    consumer: str = "none",
    v2_capture: V2EventCapture | None = None,
) -> Reconciler:
    """A reconciler as the bridge makes it with SYNC_V2_TO_V1 on (a short grace)."""
    app = producer_app(redis_url, "celery", broker_transport_options())
    database = database_of(publisher.client)
    return Reconciler(
        nc,
        objects_bucket="v1-objects",
        mappings_bucket=MAPPINGS,
        state_bucket=DEFAULT_STATE_BUCKET,
        consumer=consumer,
        encoder=TaskMessageEncoder(app, "celery", database),
        publisher=publisher,
        metrics=BridgeMetrics(),
        tuning=ReconcileTuning(interval=0.2, grace=GRACE),
        v2_encoder=TaskMessageEncoder(app, "celery", database, task_name=V2_EVENT_TASK_NAME),
        v2_capture=v2_capture,
    )


def sweep_until(st: Stack, done: Callable[[], bool], *, with_events: bool = False) -> None:
    """Sweep with one reconciler (its pacing holds) until ``done``; fails at the deadline.

    ``with_events``: it also reads the V2 events stream (``lost_v2_events``).
    """
    settings = st.runtime.settings
    publisher = BrokerPublisher(broker_client(settings.redis_url, broker_transport_options()))
    capture = capture_from_settings(
        BridgeSettings(nats_url=settings.nats_url, redis_url=settings.redis_url)
    )

    async def sweeps() -> None:
        nc = await connect(settings.nats_url, "reverse-reconcile-test")
        try:
            reconciler = reverse_reconciler(
                nc,
                settings.redis_url,
                publisher,
                settings.kv_consumer_name,
                capture if with_events else None,
            )
            deadline = time.monotonic() + SWEEP_DEADLINE
            while not done():
                assert time.monotonic() < deadline, "the lost run was not re-driven"
                await reconciler.sweep()
                await asyncio.sleep(GRACE / 2)
        finally:
            await nc.close()

    try:
        asyncio.run(sweeps())
    finally:
        publisher.close()


def test_a_lost_v2_retry_is_redriven_by_the_reconciler_and_written_to_v1_once(
    st: Stack,
) -> None:
    key, v1_key, _ = created_committee(st)
    sequence = lost_update(st, key, "After the flush.")
    # The run meets a V1 outage: a retry is recorded; its Celery task is lost with Redis.
    st.sandbox.inject_fault("PATCH", V1_COMMITTEES, status=503)
    report = RunReport(key=key, revision=sequence, operation="updated")
    outcome, retry = run_reverse(st.runtime, report)
    assert (outcome.value, retry is not None) == ("retrying", True)
    pending = st.state(key).pending
    assert pending is not None
    assert (pending.state, pending.revision, pending.attempt) == (RunState.RETRY, sequence, 1)
    st.redis.flushdb()

    sweep_until(st, lambda: len(_final_of(st.outcomes.of(key), "updated")) >= 2)

    line = finals(st, key, "updated", 2)[-1]
    # The re-driven run resumed the durable budget: its second try.
    assert (line.outcome, line.__dict__["attempt"], line.__dict__["revision"]) == (
        "updated",
        1,
        sequence,
    )
    assert [c.status for c in st.v1_calls("PATCH")] == [503, 200]
    assert v1_description(st, v1_key) == "After the flush."
    assert st.state(key).pending is None


def test_an_event_whose_task_was_lost_before_it_ran_is_redriven_and_written_once(
    st: Stack,
) -> None:
    key, v1_key, _ = created_committee(st)
    # The event's task leaves no trace in the state, as one Redis lost before it ran.
    sequence = lost_update(st, key, "Lost before it ran.")
    assert st.state(key).revision < sequence
    st.sandbox.reset_requests()

    sweep_until(st, lambda: len(_final_of(st.outcomes.of(key), "updated")) >= 2, with_events=True)

    line = finals(st, key, "updated", 2)[-1]
    assert (line.outcome, line.__dict__["revision"]) == ("updated", sequence)
    assert [c.status for c in st.v1_calls("PATCH")] == [200]
    assert v1_description(st, v1_key) == "Lost before it ran."
    assert st.state(key).revision == sequence


def test_without_reading_the_events_a_task_lost_before_it_ran_stays_lost(st: Stack) -> None:
    key, _, _ = created_committee(st)
    sequence = lost_update(st, key, "Nobody looks.")
    settings = st.runtime.settings
    publisher = BrokerPublisher(broker_client(settings.redis_url, broker_transport_options()))

    async def sweep_twice() -> None:
        nc = await connect(settings.nats_url, "reverse-reconcile-test")
        try:
            reconciler = reverse_reconciler(nc, settings.redis_url, publisher)
            for _ in range(2):
                await asyncio.sleep(GRACE)
                await reconciler.sweep()
        finally:
            await nc.close()

    try:
        asyncio.run(sweep_twice())
    finally:
        publisher.close()
    assert st.state(key).revision < sequence  # what the event scan is for


# --- the reconciler's plan, on bare servers (no worker runs what it enqueues) -----------


@pytest.fixture
def publisher(redis_server: ValkeyServer) -> Iterator[BrokerPublisher]:
    own = BrokerPublisher(broker_client(redis_server.url, broker_transport_options()))
    yield own
    own.close()


def put_reverse_state(sync_nats: SyncNats, state: SyncState) -> None:
    value = replace(state, epoch=REVERSE_EPOCH).to_bytes()
    sync_nats.kv_put(DEFAULT_STATE_BUCKET, state.key, value)


def queued_kwargs(client: redis.Redis) -> list[dict[str, Any]]:
    """The keyword arguments of every queued task, oldest first."""
    return [task["body"][1] for task in queued_tasks(client)]  # [args, kwargs, embed]


def test_the_reconciler_redrives_only_v2_runs_whose_task_is_overdue(
    buckets: NatsServer,
    redis_server: ValkeyServer,
    redis_client: redis.Redis,
    sync_nats: SyncNats,
    publisher: BrokerPublisher,
) -> None:
    now = time.time()
    overdue = PendingRun(RunState.RETRY, 7, now - 60, due=now - 5, attempt=2)
    states = [
        SyncState("v2.committee.due", 3, "updated", now, pending=overdue),
        SyncState(
            "v2.committee.later",
            3,
            "updated",
            now,
            pending=PendingRun(RunState.RETRY, 8, now, due=now + 600),
        ),
        # A run holds it: in flight.
        SyncState("v2.committee.leased", 3, pending=overdue, lease=KeyLease("t", now + 60)),
        # Settled at the pending sequence already.
        SyncState("v2.committee.settled", 7, "updated", now, pending=overdue),
        SyncState(
            "v2.committee_member.mapped",
            pending=PendingRun(RunState.PARKED, 11, now - 60, parent_key="committee.uid.landed"),
        ),
        SyncState(
            "v2.committee_member.waiting",
            pending=PendingRun(RunState.PARKED, 12, now - 60, parent_key="committee.uid.absent"),
        ),
    ]
    for state in states:
        put_reverse_state(sync_nats, state)
    sync_nats.kv_put(MAPPINGS, "committee.uid.landed", b"a0Q000000000001")

    async def two_sweeps(reverse: bool) -> list[SweepSummary]:
        nc = await connect(buckets.url, "reconcile-test")
        try:
            reconciler = reverse_reconciler(nc, redis_server.url, publisher)
            if not reverse:
                reconciler.v2_encoder = None  # SYNC_V2_TO_V1 off
            return [await reconciler.sweep(), await reconciler.sweep()]
        finally:
            await nc.close()

    off = asyncio.run(two_sweeps(reverse=False))
    assert [summary.reenqueued for summary in off] == [0, 0]
    assert queued_tasks(redis_client) == []

    first, paced = asyncio.run(two_sweeps(reverse=True))

    tasks = queued_tasks(redis_client)
    assert sorted(task_ids(tasks)) == ["v2.committee.due@7", "v2.committee_member.mapped@11"]
    assert {task["headers"]["task"] for task in tasks} == {V2_EVENT_TASK_NAME}
    # No epoch, no force: the run resumes its durable budget and stops at a settled event.
    assert queued_kwargs(redis_client) == [{}, {}]
    assert (first.reenqueued, paced.reenqueued) == (2, 0)
