"""``sync_kv_entry`` end to end: a real Celery worker on a real broker, real NATS KV,
and the sandbox's contract-enforcing fake V2 services.

One stack per module (nats-server, valkey, sandbox, a threads worker): each
test works on keys of its own, so tests do not see each other's records. The
retry policy is tiny (base 0.05 s, max 0.2 s, three retries) so retries take
milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from celery.contrib.testing.worker import start_worker
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

import tasks.worker.task  # noqa: F401  (registers sync_kv_entry on the app)
from bridge.consumer import ConsumerSpec, ensure_consumer
from sandbox.servers import NatsServer, ValkeyServer
from sandbox.service import Sandbox
from sync_core.broker import SYNC_TASK_NAME, task_id_for
from sync_core.nats_client import SyncNats, connect, ensure_buckets
from sync_core.settings import BridgeSettings
from sync_core.sync_state import SyncState
from tasks.run.report import RunReport
from tasks.run.runtime import Runtime
from tasks.run.sync import SYNCED_PREFIX, run_sync
from tasks.stores.dead_letters import DeadLetterStore
from tasks.stores.sync_state import StateStore
from tasks.worker.app import app
from tasks.worker.process import set_runtime
from tests.bridge_harness import BackgroundBridge
from tests.v1_examples import COMMITTEE_JSON, PROJECT_JSON, record
from tests.worker_process import sandbox_worker_settings

KID = "test-kid"
AUTH0_CLIENT = "v1-sync-helper-test"
MACHINE_USER = "v1_sync_helper@clients"
PLATFORM_ID = "0032M00002XyZabQAB"
OBJECTS = "v1-objects"
MAPPINGS = "v1-mappings"
STATE = "v1-sync-state"
WAIT_SECONDS = 20.0
FINAL = frozenset(
    {"created", "updated", "unchanged", "superseded", "skipped", "dead_lettered"}
    | {"deleted", "delete_refused", "parked"}
)


class OutcomeLog(logging.Handler):
    """Collects the outcome lines of ``tasks.run.sync``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "outcome"):
            with self._lock_records:
                self.records.append(record)

    def of(self, key: str) -> list[logging.LogRecord]:
        with self._lock_records:
            return [r for r in self.records if r.__dict__.get("key") == key]


@dataclass
class Stack:
    nats: SyncNats
    redis: redis.Redis
    sandbox: Sandbox
    runtime: Runtime
    outcomes: OutcomeLog
    heimdall_key: RSAPrivateKey
    counters: dict[str, int] = field(default_factory=dict)

    def put(self, key: str, value: dict[str, Any] | bytes, encoding: str = "json") -> int:
        """Write a V1 record into ``v1-objects``; its revision."""
        if isinstance(value, bytes):
            data = value
        elif encoding == "msgpack":
            data = msgpack.packb(value)
        else:
            data = json.dumps(value).encode()
        return self.nats.kv_put(OBJECTS, key, data)

    def delete(self, key: str) -> int:
        """Delete ``key``; the revision of the delete marker (as the bridge sees it)."""
        self.nats.run(self.nats.kv(OBJECTS).delete(key))
        info = self.nats.run(self.nats.js.stream_info(f"KV_{OBJECTS}"))
        return int(info.state.last_seq)

    def publish(self, key: str, revision: int, operation: str = "PUT", **kwargs: Any) -> None:
        """Enqueue the task the way the bridge does."""
        app.send_task(
            SYNC_TASK_NAME,
            args=[key, revision, operation],
            kwargs=kwargs or None,
            task_id=task_id_for(key, revision),
        )

    def sync(
        self, key: str, revision: int, operation: str = "PUT", count: int = 1, **kwargs: Any
    ) -> str:
        """Publish and wait for the final outcome of that task (the ``count``-th of it)."""
        self.publish(key, revision, operation, **kwargs)
        return self.wait_final(key, revision, count)

    def wait_for(
        self, key: str, predicate: Callable[[list[logging.LogRecord]], bool], what: str
    ) -> list[logging.LogRecord]:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            runs = self.outcomes.of(key)
            if predicate(runs):
                return runs
            assert time.monotonic() < deadline, f"{key}: no {what}; got {outcomes(runs)}"
            time.sleep(0.01)

    def wait_final(self, key: str, revision: int, count: int = 1) -> str:
        """The outcome of the ``count``-th finished run of ``key@revision``."""
        runs = self.wait_for(
            key,
            lambda runs: len(finished(runs, revision)) >= count,
            f"{count} final outcome(s) at revision {revision}",
        )
        return str(finished(runs, revision)[count - 1].outcome)

    def dead_letters(self) -> DeadLetterStore:
        return DeadLetterStore(self.nats, STATE)

    def state(self, key: str) -> SyncState:
        return StateStore(self.nats, STATE).get(key)

    def mapping(self, key: str) -> str | None:
        entry = self.nats.kv_get(MAPPINGS, key)
        return None if entry is None else bytes(entry.value).decode()

    def v2_requests(self, method: str, path: str) -> list[Any]:
        return [r for r in self.sandbox.requests if r.method == method and r.path == path]


def finished(runs: list[logging.LogRecord], revision: int) -> list[logging.LogRecord]:
    return [r for r in runs if r.__dict__["revision"] == revision and r.outcome in FINAL]


def outcomes(runs: list[logging.LogRecord]) -> list[str]:
    return [f"{r.__dict__['revision']}:{r.outcome}" for r in runs]


def new_sfid() -> str:
    return "a09" + uuid.uuid4().hex[:15]


def new_project(parent: str | None = None, **changes: Any) -> tuple[str, dict[str, Any]]:
    """A realistic project record with a fresh sfid and slug; its key and record."""
    sfid = new_sfid()
    project = record(
        PROJECT_JSON,
        sfid=sfid,
        slug__c="P" + sfid[3:].upper(),
        parent_project__c=parent,
        lastmodifiedbyid=MACHINE_USER,
    )
    project.update(changes)
    return f"salesforce-project__c.{sfid}", project


async def _create_buckets(url: str) -> None:
    nc = await connect(url, "test-setup")
    try:
        await ensure_buckets(nc.jetstream(), OBJECTS, MAPPINGS)
    finally:
        await nc.close()


def use_broker(url: str) -> None:
    """Point the app's producer at ``url`` (another test module may have used another)."""
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None


def sandbox_with_platform_user(
    kid: str,
    heimdall_key: RSAPrivateKey,
    auth0_client: str,
    auth0_key: RSAPrivateKey,
    **options: Any,
) -> Sandbox:
    """The fakes trusting the test keys, with one V1 platform user (``PLATFORM_ID``, jdoe)."""
    return Sandbox(
        heimdall_keys={kid: heimdall_key.public_key()},
        auth0_clients={auth0_client: auth0_key.public_key()},
        users={
            PLATFORM_ID: {
                "ID": PLATFORM_ID,
                "Username": "jdoe",
                "Email": "jdoe@example.com",
                "FirstName": "Jane",
                "LastName": "Doe",
            }
        },
        **options,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, rsa_pems: dict[str, str]) -> Iterator[Stack]:
    base: Path = tmp_path_factory.mktemp("task-stack")
    heimdall_key = load_pem_private_key(rsa_pems["heimdall"].encode(), None)
    auth0_key = load_pem_private_key(rsa_pems["auth0"].encode(), None)
    assert isinstance(heimdall_key, RSAPrivateKey)
    assert isinstance(auth0_key, RSAPrivateKey)
    # A shared task of the same name defined by another test would have replaced ours.
    registered = app.tasks[SYNC_TASK_NAME].run
    assert registered.__module__ == "tasks.worker.task", f"sync_kv_entry replaced by {registered}"
    with NatsServer(base / "nats") as nats_server, ValkeyServer(base / "valkey") as valkey:
        asyncio.run(_create_buckets(nats_server.url))
        sandbox = sandbox_with_platform_user(
            KID, heimdall_key, AUTH0_CLIENT, auth0_key, nats_url=nats_server.url
        )
        with sandbox:
            settings = sandbox_worker_settings(
                sandbox,
                nats_server.url,
                valkey.url,
                rsa_pems,
                kid=KID,
                auth0_client=AUTH0_CLIENT,
                committee_service_url=sandbox.url,
                query_service_url=sandbox.url,
                sync_retry_max=3,
                sync_retry_backoff_base=0.05,
                sync_retry_backoff_max=0.2,
            )
            runtime = Runtime.from_settings(settings)
            previous = set_runtime(runtime)
            use_broker(valkey.url)
            handler = OutcomeLog()
            sync_log = logging.getLogger("tasks.run.sync")
            sync_log.addHandler(handler)
            client = redis.Redis.from_url(valkey.url)
            test_nats = SyncNats(nats_server.url, "task-tests")
            try:
                with start_worker(
                    app,
                    pool="threads",
                    concurrency=4,
                    perform_ping_check=False,
                    loglevel="INFO",
                    shutdown_timeout=30,
                ):
                    yield Stack(test_nats, client, sandbox, runtime, handler, heimdall_key)
            finally:
                sync_log.removeHandler(handler)
                test_nats.close()
                client.close()
                set_runtime(previous)
                runtime.close()


@pytest.fixture
def st(stack: Stack) -> Iterator[Stack]:
    """The stack with a clean request log and no leftover faults."""
    stack.sandbox.reset_requests()
    stack.sandbox.clear_faults()
    settings = stack.runtime.settings
    yield stack
    stack.runtime.settings = settings
    stack.sandbox.clear_faults()


# --- projects ------------------------------------------------------------------------


def test_create_project_under_root_with_mappings_and_jwt(st: Stack) -> None:
    key, project = new_project()
    revision = st.put(key, project)
    assert st.sync(key, revision) == "created"
    slug = project["slug__c"].lower()
    stored = st.sandbox.project_by_slug(slug)
    assert stored is not None
    uid = stored["uid"]
    assert stored["parent_uid"] == st.sandbox.root_uid
    assert stored["public"] is True  # Active under ROOT
    assert stored["formation_date"] == "2000-01-01"
    assert stored["website_url"] == "https://www.linuxfoundation.org"
    assert st.mapping(f"project.sfid.{project['sfid']}") == uid
    assert st.mapping(f"project.slug.{slug}") == uid
    assert st.mapping(f"project.uid.{uid}") == project["sfid"]
    (post,) = st.v2_requests("POST", "/projects")
    assert post.claims["principal"] == MACHINE_USER
    assert post.claims["aud"] == "lfx-v2-project-service"
    line = st.outcomes.of(key)[-1].__dict__
    assert line["sfid"] == project["sfid"]
    assert line["slug"] == slug
    assert line["project_uid"] == uid
    assert line["username"] == "v1_sync_helper"
    assert line["object_type"] == "project"


LAG_GAP = 0.3


def test_each_v2_write_observes_the_sync_lag_from_the_kv_write(st: Stack) -> None:
    from prometheus_client import REGISTRY

    def lag(suffix: str) -> float:
        name = f"v1sync_sync_lag_seconds_{suffix}"
        return REGISTRY.get_sample_value(name, {"object_type": "project"}) or 0.0

    count, total = lag("count"), lag("sum")
    key, project = new_project()
    before_put = time.time()
    revision = st.put(key, project)
    after_put = time.time()
    # The lag starts at the KV write (its JetStream time), not when the run starts:
    # let a known gap pass between the two (a lower bound, not a speed check).
    while time.time() - after_put < LAG_GAP:
        time.sleep(0.05)
    assert st.sync(key, revision) == "created"
    synced_at = time.time()
    assert lag("count") == count + 1
    observed = lag("sum") - total
    assert LAG_GAP <= observed <= synced_at - before_put
    project["_sdc_received_at"] = "2025-12-01T00:00:00+00:00"  # loader metadata only
    assert st.sync(key, st.put(key, project)) == "unchanged"  # no V2 write: no observation
    assert lag("count") == count + 1
    project["name"] = "Renamed for the lag"
    assert st.sync(key, st.put(key, project)) == "updated"
    assert lag("count") == count + 2


def test_create_as_the_v1_user_who_made_the_change(st: Stack) -> None:
    key, project = new_project(lastmodifiedbyid=PLATFORM_ID)
    revision = st.put(key, project)
    assert st.sync(key, revision) == "created"
    (post,) = st.v2_requests("POST", "/projects")
    assert post.claims["principal"] == "jdoe"
    assert post.headers["X-On-Behalf-Of"] == "jdoe"
    assert st.outcomes.of(key)[-1].__dict__["username"] == "jdoe"


def test_update_lays_v1_over_v2_and_keeps_v2_only_fields(st: Stack) -> None:
    key, project = new_project()
    assert st.sync(key, st.put(key, project)) == "created"
    uid = st.mapping(f"project.sfid.{project['sfid']}")
    assert uid is not None
    identity = st.runtime.identity_for(MACHINE_USER)
    current = st.runtime.projects.get(uid, identity)
    body = {k: v for k, v in current.record.items() if k not in {"uid", "created_at", "updated_at"}}
    st.runtime.projects.update(
        uid, {**body, "mission_statement": "V2 only"}, current.etag, identity
    )
    st.sandbox.reset_requests()

    project.update(name="Renamed", auto_join_enabled__c=True, description__c=None)
    revision = st.put(key, project)
    assert st.sync(key, revision) == "updated"
    (put,) = st.v2_requests("PUT", f"/projects/{uid}")
    assert put.headers["If-Match"]
    assert not {"uid", "created_at", "updated_at"} & set(put.json_body)
    stored = st.sandbox.projects[uid]
    assert stored["name"] == "Renamed"
    assert stored["autojoin_enabled"] is True
    assert stored["description"] == ""
    assert stored["mission_statement"] == "V2 only"


def test_unchanged_record_makes_no_put(st: Stack) -> None:
    key, project = new_project()
    assert st.sync(key, st.put(key, project)) == "created"
    project["_sdc_received_at"] = "2025-12-01T00:00:00+00:00"  # loader metadata only
    revision = st.put(key, project)
    assert st.sync(key, revision) == "unchanged"
    assert st.sandbox.count("PUT", "/projects") == 0
    assert st.sandbox.count("GET", "/projects/") == 1


def test_superseded_revision_calls_no_v2(st: Stack) -> None:
    key, project = new_project()
    old = st.put(key, project)
    st.put(key, {**project, "name": "Newer"})
    assert st.sync(key, old) == "superseded"
    assert st.sandbox.count("*", "/projects") == 0


def test_put_whose_key_was_deleted_since_is_superseded(st: Stack) -> None:
    key, project = new_project()
    revision = st.put(key, project)
    st.delete(key)
    assert st.sync(key, revision) == "superseded"
    assert st.sandbox.count("*", "/projects") == 0


def test_child_before_parent_is_parked_then_released_when_the_parent_syncs(st: Stack) -> None:
    parent_key, parent = new_project()
    child_key, child = new_project(parent=parent["sfid"], project_status__c="Active")
    child_revision = st.put(child_key, child)
    assert st.sync(child_key, child_revision) == "parked"
    pending = st.state(child_key).pending
    assert pending is not None
    assert (pending.state, pending.parent_key) == ("parked", f"project.sfid.{parent['sfid']}")
    assert st.mapping(f"project.sfid.{child['sfid']}") is None

    # Nobody re-publishes the child: the parent's run releases it.
    assert st.sync(parent_key, st.put(parent_key, parent)) == "created"
    assert st.wait_final(child_key, child_revision, count=2) == "created"
    parent_uid = st.mapping(f"project.sfid.{parent['sfid']}")
    child_uid = st.mapping(f"project.sfid.{child['sfid']}")
    assert child_uid is not None
    stored = st.sandbox.projects[child_uid]
    assert stored["parent_uid"] == parent_uid
    assert stored["public"] is True  # Active under a public parent
    assert [r.outcome for r in st.outcomes.of(child_key)] == ["parked", "created"]
    state = st.state(child_key)
    assert (state.revision, state.outcome, state.uid, state.pending) == (
        child_revision,
        "created",
        child_uid,
        None,
    )


def test_parked_child_spends_no_budget_and_is_dead_lettered_after_the_parent_wait(
    st: Stack,
) -> None:
    st.runtime.settings = st.runtime.settings.model_copy(update={"sync_parent_wait": 0.5})
    key, project = new_project(parent=new_sfid())
    revision = st.put(key, project)
    assert st.sync(key, revision) == "parked"
    st.publish(key, revision)  # a re-drive within the wait parks again
    assert st.wait_final(key, revision, count=2) == "parked"
    time.sleep(0.6)  # the wait itself is what is tested
    st.publish(key, revision)  # the reconciler's re-drive once the wait is over
    assert st.wait_final(key, revision, count=3) == "dead_lettered"
    runs = st.outcomes.of(key)
    assert "retrying" not in [r.outcome for r in runs]
    letter = st.dead_letters().get(task_id_for(key, revision))
    assert letter is not None
    assert letter.error_kind == "missing_parent"
    assert letter.attempts == 1
    assert letter.operation == "PUT"
    assert st.state(key).outcome == "dead_lettered"
    assert st.sandbox.count("POST", "/projects") == 0


def test_a_child_dead_lettered_after_the_wait_syncs_when_its_parent_arrives(
    st: Stack,
) -> None:
    st.runtime.settings = st.runtime.settings.model_copy(update={"sync_parent_wait": 0.3})
    parent_key, parent = new_project()
    key, child = new_project(parent=parent["sfid"])
    revision = st.put(key, child)
    assert st.sync(key, revision) == "parked"
    time.sleep(0.4)  # the parent wait itself is what is tested
    st.publish(key, revision)  # the reconciler's re-drive once the wait is over
    assert st.wait_final(key, revision, count=2) == "dead_lettered"

    # The parent is late, not missing: its run releases the child, which syncs.
    assert st.sync(parent_key, st.put(parent_key, parent)) == "created"
    assert st.wait_final(key, revision, count=3) == "created"
    assert st.dead_letters().get(task_id_for(key, revision)) is None
    assert st.state(key).outcome == "created"


def test_same_key_and_revision_twice_gives_one_post(st: Stack) -> None:
    key, project = new_project()
    revision = st.put(key, project)
    st.publish(key, revision)
    st.publish(key, revision)
    st.wait_final(key, revision, count=2)
    assert sorted(str(r.outcome) for r in finished(st.outcomes.of(key), revision)) == [
        "created",
        "unchanged",
    ]
    assert st.sandbox.count("POST", "/projects") == 1
    epoch = st.runtime.objects_epoch.current()
    assert st.redis.get(SYNCED_PREFIX + key) == f"{epoch}:{revision}".encode()


def test_a_forced_resync_of_a_synced_revision_restores_v1_values(st: Stack) -> None:
    key, project = new_project()
    revision = st.put(key, project)
    assert st.sync(key, revision) == "created"
    uid = st.mapping(f"project.sfid.{project['sfid']}")
    assert uid is not None
    identity = st.runtime.identity_for(MACHINE_USER)
    current = st.runtime.projects.get(uid, identity)
    body = {k: v for k, v in current.record.items() if k not in {"uid", "created_at", "updated_at"}}
    st.runtime.projects.update(uid, {**body, "name": "Edited in V2"}, current.etag, identity)

    st.publish(key, revision)
    assert st.wait_final(key, revision, count=2) == "unchanged"  # the marker short-cuts it
    assert st.sandbox.projects[uid]["name"] == "Edited in V2"
    st.publish(key, revision, force=True)
    assert st.wait_final(key, revision, count=3) == "updated"
    assert st.sandbox.projects[uid]["name"] == project["name"]


def test_two_tasks_of_one_key_never_overlap(st: Stack) -> None:
    key, project = new_project()
    revision = st.put(key, project)
    # A slow POST keeps the first run inside the lock while the others arrive.
    st.sandbox.inject_fault("POST", "/projects", status=None, delay=0.6)
    for _ in range(3):
        st.publish(key, revision, force=True)
    st.wait_final(key, revision, count=3)
    runs = st.outcomes.of(key)
    assert any(r.__dict__.get("reason") == "key_locked" for r in runs)
    worked = sorted(
        (r.created - r.__dict__["duration_ms"] / 1000, r.created)
        for r in runs
        if r.outcome != "retrying"
    )
    for (_, end), (start, _) in itertools.pairwise(worked):
        assert start >= end - 0.005, f"runs overlapped: {worked}"
    assert st.sandbox.count("POST", "/projects") == 1
    assert st.sandbox.count("PUT", "/projects") == 0


def test_409_on_create_adopts_the_existing_project(st: Stack) -> None:
    key, project = new_project(name="Adopted")
    slug = project["slug__c"].lower()
    existing = st.sandbox.add_project("Before the crash", slug)
    revision = st.put(key, project)
    assert st.sync(key, revision) == "updated"
    assert st.v2_requests("POST", "/projects")[0].status == 409
    assert st.mapping(f"project.sfid.{project['sfid']}") == existing
    assert st.mapping(f"project.uid.{existing}") == project["sfid"]
    assert st.sandbox.projects[existing]["name"] == "Adopted"
    assert sum(1 for p in st.sandbox.projects.values() if p["slug"] == slug) == 1


def test_409_for_a_slug_owned_by_another_v1_project_is_dead_lettered(st: Stack) -> None:
    first_key, first = new_project()
    assert st.sync(first_key, st.put(first_key, first)) == "created"
    key, other = new_project(slug__c=first["slug__c"])
    revision = st.put(key, other)
    assert st.sync(key, revision) == "dead_lettered"
    letter = st.dead_letters().get(task_id_for(key, revision))
    assert letter is not None
    assert letter.error_kind == "slug_taken"


def test_stale_etag_refetches_and_succeeds_in_the_same_run(st: Stack) -> None:
    key, project = new_project()
    assert st.sync(key, st.put(key, project)) == "created"
    uid = st.mapping(f"project.sfid.{project['sfid']}")
    st.sandbox.reset_requests()
    st.sandbox.inject_fault("PUT", f"/projects/{uid}", status=412, times=1)
    revision = st.put(key, {**project, "name": "After a stale ETag"})
    assert st.sync(key, revision) == "updated"
    assert [r.status for r in st.v2_requests("PUT", f"/projects/{uid}")] == [412, 200]
    assert st.sandbox.count("GET", f"/projects/{uid}") == 2
    assert [r.outcome for r in st.outcomes.of(key)][-1] == "updated"
    assert st.sandbox.projects[uid]["name"] == "After a stale ETag"


def test_503_and_429_are_retried_then_succeed(st: Stack) -> None:
    key, project = new_project()
    st.sandbox.inject_fault("POST", "/projects", status=503, times=1)
    st.sandbox.inject_fault(
        "POST", "/projects", status=429, times=1, headers={"Retry-After": "0.1"}
    )
    revision = st.put(key, project)
    assert st.sync(key, revision) == "created"
    runs = st.outcomes.of(key)
    assert [r.outcome for r in runs] == ["retrying", "retrying", "created"]
    assert [r.__dict__.get("status") for r in runs[:2]] == [503, 429]
    assert runs[1].__dict__["countdown"] >= 0.1  # Retry-After honoured
    assert [r.status for r in st.v2_requests("POST", "/projects")] == [503, 429, 201]


def test_400_is_dead_lettered_without_retries(st: Stack) -> None:
    key, project = new_project()
    st.sandbox.inject_fault(
        "POST", "/projects", status=400, times=1, body={"message": "field x is invalid"}
    )
    revision = st.put(key, project)
    assert st.sync(key, revision) == "dead_lettered"
    assert [r.outcome for r in st.outcomes.of(key)] == ["dead_lettered"]
    letter = st.dead_letters().get(task_id_for(key, revision))
    assert letter is not None
    assert (letter.error_kind, letter.status, letter.attempts) == ("v2_validation", 400, 1)
    assert letter.body_excerpt is not None
    assert "field x is invalid" in letter.body_excerpt
    assert st.sandbox.count("POST", "/projects") == 1
    assert st.redis.get(SYNCED_PREFIX + key) is None


def test_msgpack_value_syncs_like_json(st: Stack) -> None:
    key, project = new_project()
    revision = st.put(key, project, encoding="msgpack")
    assert st.sync(key, revision) == "created"
    assert st.sandbox.project_by_slug(project["slug__c"].lower()) is not None


def test_empty_value_is_skipped(st: Stack) -> None:
    key, _ = new_project()
    revision = st.put(key, b"")
    assert st.sync(key, revision) == "skipped"
    assert st.outcomes.of(key)[-1].__dict__["reason"] == "empty_value"
    assert st.sandbox.requests == []


def test_undecodable_value_is_dead_lettered(st: Stack) -> None:
    key, _ = new_project()
    revision = st.put(key, b"\xc1 not json nor msgpack")
    assert st.sync(key, revision) == "dead_lettered"
    letter = st.dead_letters().get(task_id_for(key, revision))
    assert letter is not None
    assert letter.error_kind == "undecodable"


def test_a_duplicate_of_a_dead_lettered_revision_leaves_the_letter_alone(st: Stack) -> None:
    key, _ = new_project()
    revision = st.put(key, b"\xc1 not json nor msgpack")
    assert st.sync(key, revision) == "dead_lettered"
    letter = st.dead_letters().get(task_id_for(key, revision))
    # A redelivery (or a second release) of the same task: no second dead letter.
    assert st.sync(key, revision, count=2) == "skipped"
    assert st.outcomes.of(key)[-1].__dict__["reason"] == "already_dead_lettered"
    assert st.dead_letters().get(task_id_for(key, revision)) == letter
    # An operator's re-queue (force) runs it again.
    assert st.sync(key, revision, count=3, force=True) == "dead_lettered"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("salesforce-account.0014100000Te2ovAAB", "unknown_prefix"),
        ("platform-user.abc", "unknown_prefix"),
    ],
)
def test_keys_we_do_not_sync_are_skipped(st: Stack, key: str, reason: str) -> None:
    revision = st.put(key, {"sfid": "x"})
    assert st.sync(key, revision) == "skipped"
    assert st.outcomes.of(key)[-1].__dict__["reason"] == reason
    assert st.sandbox.requests == []


# --- committees --------------------------------------------------------------------


def new_committee(project_sfid: str, **changes: Any) -> tuple[str, dict[str, Any]]:
    sfid = str(uuid.uuid4())
    committee = record(COMMITTEE_JSON, sfid=sfid, project_name__c=project_sfid)
    committee.update(changes)
    return f"platform-collaboration__c.{sfid}", committee


def test_committee_create_then_update(st: Stack) -> None:
    project_key, project = new_project()
    assert st.sync(project_key, st.put(project_key, project)) == "created"
    project_uid = st.mapping(f"project.sfid.{project['sfid']}")
    key, committee = new_committee(project["sfid"], type__c="Not A Category")
    assert st.sync(key, st.put(key, committee)) == "created"
    uid = st.mapping(f"committee.sfid.{committee['sfid']}")
    assert uid is not None
    assert st.mapping(f"committee.uid.{uid}") == committee["sfid"]
    stored = st.sandbox.committees[uid]
    assert stored["project_uid"] == project_uid
    assert stored["category"] == "Other"
    assert stored["website"] == "https://lists.example.org/g/board"
    (post,) = st.v2_requests("POST", "/committees")
    assert post.claims["aud"] == "lfx-v2-committee-service"

    revision = st.put(key, {**committee, "enable_voting__c": False, "type__c": "Board"})
    assert st.sync(key, revision) == "updated"
    stored = st.sandbox.committees[uid]
    assert (stored["enable_voting"], stored["category"]) == (False, "Board")
    again = st.put(key, {**committee, "enable_voting__c": False, "type__c": "Board"})
    assert st.sync(key, again) == "unchanged"
    assert st.sandbox.count("PUT", f"/committees/{uid}") == 1


def test_committee_of_an_unsynced_project_parks_then_is_dead_lettered(st: Stack) -> None:
    st.runtime.settings = st.runtime.settings.model_copy(update={"sync_parent_wait": 0.3})
    key, committee = new_committee(new_sfid())
    revision = st.put(key, committee)
    assert st.sync(key, revision) == "parked"
    time.sleep(0.4)  # the parent wait
    st.publish(key, revision)
    assert st.wait_final(key, revision, count=2) == "dead_lettered"
    letter = st.dead_letters().get(task_id_for(key, revision))
    assert letter is not None
    assert (letter.error_kind, letter.attempts) == ("missing_project", 1)


def test_committee_parked_on_its_project_is_released_by_the_project(st: Stack) -> None:
    project_key, project = new_project()
    key, committee = new_committee(project["sfid"])
    revision = st.put(key, committee)
    assert st.sync(key, revision) == "parked"
    assert st.sync(project_key, st.put(project_key, project)) == "created"
    assert st.wait_final(key, revision, count=2) == "created"
    assert st.mapping(f"committee.sfid.{committee['sfid']}") is not None


def test_committees_are_skipped_without_a_committee_service(st: Stack) -> None:
    service = st.runtime.committees
    st.runtime.committees = None
    try:
        key, committee = new_committee(new_sfid())
        assert st.sync(key, st.put(key, committee)) == "skipped"
        assert st.outcomes.of(key)[-1].__dict__["reason"] == "no_committee_service"
    finally:
        st.runtime.committees = service


# --- lost create answers (the query service) ---------------------------------------


def synced_project(st: Stack) -> tuple[dict[str, Any], str]:
    project_key, project = new_project()
    assert st.sync(project_key, st.put(project_key, project)) == "created"
    uid = st.mapping(f"project.sfid.{project['sfid']}")
    assert uid is not None
    return project, uid


def test_a_committee_create_whose_answer_was_lost_is_adopted_on_retry(st: Stack) -> None:
    project, project_uid = synced_project(st)
    key, committee = new_committee(project["sfid"])
    # V2 creates the committee, then the connection drops before the answer.
    st.sandbox.inject_fault("POST", "/committees", status=None, drop="after")
    revision = st.put(key, committee)
    assert st.sync(key, revision) in ("unchanged", "updated")
    (created,) = st.sandbox.committees_of(project_uid)  # no duplicate
    assert [r.status for r in st.v2_requests("POST", "/committees")] == [201, 409]
    assert st.mapping(f"committee.sfid.{committee['sfid']}") == created["uid"]
    assert st.mapping(f"committee.uid.{created['uid']}") == committee["sfid"]
    (lookup,) = st.v2_requests("GET", "/query/resources")
    assert lookup.claims["aud"] == "lfx-v2-query-service"
    assert lookup.query["parent"] == f"project:{project_uid}"


def test_adoption_retries_while_the_query_index_catches_up(st: Stack) -> None:
    project, project_uid = synced_project(st)
    key, committee = new_committee(project["sfid"])
    st.runtime.settings = st.runtime.settings.model_copy(update={"sync_retry_max": 30})
    st.sandbox.set_query_index_delay(0.6)
    try:
        st.sandbox.inject_fault("POST", "/committees", status=None, drop="after")
        revision = st.put(key, committee)
        assert st.sync(key, revision) in ("unchanged", "updated")
    finally:
        st.sandbox.set_query_index_delay(0.0)
    assert len(st.sandbox.committees_of(project_uid)) == 1
    lookups = st.v2_requests("GET", "/query/resources")
    assert len(lookups) >= 2  # at least one answer came before the index listed it


def test_a_lost_committee_create_without_query_service_says_what_to_do(st: Stack) -> None:
    project, project_uid = synced_project(st)
    key, committee = new_committee(project["sfid"])
    query, st.runtime.query = st.runtime.query, None
    try:
        st.sandbox.inject_fault("POST", "/committees", status=None, drop="after")
        revision = st.put(key, committee)
        assert st.sync(key, revision) == "dead_lettered"
    finally:
        st.runtime.query = query
    letter = st.dead_letters().get(task_id_for(key, revision))
    assert letter is not None
    assert letter.error_kind == "committee_conflict"
    assert "QUERY_SERVICE_URL is not set" in letter.error_message
    assert "re-queue" in letter.error_message
    assert len(st.sandbox.committees_of(project_uid)) == 1


def test_a_committee_name_synced_from_another_v1_committee_is_dead_lettered(st: Stack) -> None:
    project, project_uid = synced_project(st)
    first_key, first = new_committee(project["sfid"])
    assert st.sync(first_key, st.put(first_key, first)) == "created"
    key, twin = new_committee(project["sfid"])  # same name, another V1 committee
    revision = st.put(key, twin)
    assert st.sync(key, revision) == "dead_lettered"
    letter = st.dead_letters().get(task_id_for(key, revision))
    assert letter is not None
    assert letter.error_kind == "committee_name_taken"
    assert len(st.sandbox.committees_of(project_uid)) == 1


# --- durable state and the reconciler ------------------------------------------------


def test_the_sync_state_survives_an_empty_redis(st: Stack) -> None:
    key, project = new_project()
    revision = st.put(key, project)
    assert st.sync(key, revision) == "created"
    state = st.state(key)
    assert (state.revision, state.outcome, state.lease) == (revision, "created", None)
    assert state.uid == st.mapping(f"project.sfid.{project['sfid']}")
    st.redis.flushall()  # the broker, its synced cache and everything else: gone
    st.sandbox.reset_requests()
    assert st.sync(key, revision, count=2) == "unchanged"
    assert st.sandbox.requests == []


async def _ack_everything(url: str) -> None:
    """What a bridge does with the changes: enqueue (here: nothing) and ack."""
    nc = await connect(url, "test-ack-all")
    try:
        js = nc.jetstream()
        spec = ConsumerSpec("v1-sync-helper-kv-consumer", OBJECTS)
        await ensure_consumer(js, spec)
        sub = await js.pull_subscribe_bind(spec.name, stream=spec.stream)
        while True:
            try:
                msgs = await sub.fetch(500, timeout=0.5)
            except TimeoutError:  # nats-py raises asyncio's or its own subclass of it
                break
            for msg in msgs:
                await msg.ack_sync()
        await sub.unsubscribe()
    finally:
        await nc.close()


def test_changes_lost_with_an_empty_broker_reach_v2_through_the_reconciler(st: Stack) -> None:
    """Acked by a bridge, lost with Redis: V2 gets them with no operator action."""
    interval, grace = 0.5, 1.0
    changes = [new_project() for _ in range(5)]
    revisions = {key: st.put(key, project) for key, project in changes}
    asyncio.run(_ack_everything(st.runtime.settings.nats_url))
    st.redis.flushall()
    settings = BridgeSettings(
        nats_url=st.runtime.settings.nats_url,
        redis_url=st.runtime.settings.redis_url,
        port=0,
        bind="127.0.0.1",
        reconcile_interval=interval,
        reconcile_grace=grace,
    )
    started = time.monotonic()
    bridge = BackgroundBridge(settings).start()
    try:
        for key, revision in revisions.items():
            assert st.wait_final(key, revision) == "created"
        took = time.monotonic() - started
    finally:
        bridge.stop()
    for _, project in changes:
        assert st.sandbox.project_by_slug(project["slug__c"].lower()) is not None
    # Within one interval plus the grace, and the time the runs themselves take.
    assert took < interval + grace + 5.0


# --- the durable retry budget ----------------------------------------------------------


def spend_retries(st: Stack, key: str, revision: int, tries: int) -> None:
    """Run the task's first ``tries`` tries in this process, as Celery would with its
    ``attempt`` kwarg, and lose the retry each asks for (it is never enqueued)."""
    for attempt in range(tries):
        report = RunReport(key=key, revision=revision, operation="PUT", attempt=attempt)
        outcome, retry = run_sync(st.runtime, report)
        assert (outcome.value, retry and retry["attempt"]) == ("retrying", attempt + 1)
    pending = st.state(key).pending
    assert pending is not None
    assert (pending.state, pending.revision, pending.attempt) == ("retry", revision, tries)


def attempts(runs: list[logging.LogRecord]) -> list[tuple[str, int]]:
    return [(r.outcome, r.__dict__["attempt"]) for r in runs]


def test_a_retry_lost_with_its_task_resumes_its_budget_through_the_reconciler(
    st: Stack,
) -> None:
    """Two tries spent, the retry lost with Redis: the reconciler's task has two left
    (SYNC_RETRY_MAX=3: four tries in all), not a fresh budget of four more."""
    key, project = new_project()
    st.sandbox.inject_fault("POST", "/projects", status=503, times=20)
    revision = st.put(key, project)
    asyncio.run(_ack_everything(st.runtime.settings.nats_url))  # the bridge's part is done
    spend_retries(st, key, revision, tries=2)
    st.redis.flushall()  # the lost retry (and anything else in the broker)
    settings = BridgeSettings(
        nats_url=st.runtime.settings.nats_url,
        redis_url=st.runtime.settings.redis_url,
        port=0,
        bind="127.0.0.1",
        reconcile_interval=0.5,
        reconcile_grace=1.0,
    )
    bridge = BackgroundBridge(settings).start()
    try:
        assert st.wait_final(key, revision) == "dead_lettered"
    finally:
        bridge.stop()
    assert attempts(st.outcomes.of(key)) == [("retrying", 2), ("dead_lettered", 3)]
    assert st.sandbox.count("POST", "/projects") == 4
    letter = st.dead_letters().get(task_id_for(key, revision))
    assert letter is not None
    assert (letter.error_kind, letter.attempts) == ("v2_5xx", 4)


def test_a_replay_goes_on_with_the_budget_and_a_requeue_starts_a_fresh_one(st: Stack) -> None:
    key, project = new_project()
    st.sandbox.inject_fault("POST", "/projects", status=503, times=20)
    revision = st.put(key, project)
    spend_retries(st, key, revision, tries=2)

    st.publish(key, revision, force=True)  # what `replay` sends
    assert st.wait_final(key, revision) == "dead_lettered"
    assert attempts(st.outcomes.of(key)) == [("retrying", 2), ("dead_lettered", 3)]

    st.publish(key, revision, force=True, fresh_budget=True)  # `requeue`, `dlq requeue`
    assert st.wait_final(key, revision, count=2) == "dead_lettered"
    assert [attempt for _, attempt in attempts(st.outcomes.of(key))[2:]] == [0, 1, 2, 3]
    assert st.sandbox.count("POST", "/projects") == 2 + 2 + 4
