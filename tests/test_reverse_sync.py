"""V2 -> V1 end to end (``SYNC_V2_TO_V1``): a real bridge, a real Celery worker, real
nats-server and valkey, the sandbox's V2 committee fakes publishing the indexer
events and its V1 API fake writing each change back into ``v1-objects``.

One stack per module; each test works on objects of its own. A person's V2
edit reaches V1 exactly once; the V1 row it comes back as is skipped by the
forward path (``skipped:echo``), and the V2 events of the forward path's own
writes are skipped by this one without an HTTP call (most by the bridge, without
a task: ``bridge.v2_echoes``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

import tasks.run.reverse_writes as reverse_writes
import tasks.worker.task  # noqa: F401  (registers the tasks on the app)
from operations.dlq import requeue_letters
from operations.enqueue import DEAD_LETTER_TASK_KWARGS, TaskQueue
from operations.status import collect, collect_v2_events, render
from sandbox.servers import NatsServer, ValkeyServer
from sandbox.service import Sandbox
from sandbox.v2_edits import COMMITTEE_READ_ONLY, MEMBER_READ_ONLY
from sync_core.broker import V2_EVENT_TASK_NAME
from sync_core.nats_client import SyncNats, connect, ensure_buckets
from sync_core.settings import BridgeSettings
from sync_core.sync_state import SyncState
from tasks.clients.identity import Identity
from tasks.clients.tokens import TokenMinter
from tasks.clients.v2 import V2Service
from tasks.kinds.committees import COMMITTEE_AUDIENCE
from tasks.run.report import RunReport
from tasks.run.reverse import run_reverse
from tasks.run.runtime import Runtime
from tasks.stores.dead_letters import DeadLetterStore
from tasks.stores.id_mappings import MappingStore
from tasks.stores.sync_state import StateStore
from tasks.worker.app import app
from tasks.worker.process import set_runtime
from tests.bridge_harness import BackgroundBridge
from tests.test_task_sync import (
    FINAL,
    PLATFORM_ID,
    OutcomeLog,
    sandbox_with_platform_user,
    use_broker,
)
from tests.v1_examples import COMMITTEE_JSON, MEMBER_JSON, record
from tests.worker_process import sandbox_worker_settings

KID = "reverse-kid"
AUTH0_CLIENT = "v1-sync-helper-reverse"
OBJECTS = "v1-objects"
MAPPINGS = "v1-mappings"
STATE = "v1-sync-state"
WAIT_SECONDS = 30.0
# Long enough for the forward path's mappings of its own V2 create to land first.
SETTLE_SECONDS = 1.0
# How often a create whose answer was lost looks for its row (production: 30 s).
CONFIRM_POLL_SECONDS = 0.2
PERSON = Identity(principal="mary", sub="mary", email="mary@example.org", on_behalf_of="mary")
V1_COMMITTEES = "/project-service/v2/projects/"


class BridgeEchoLog(logging.Handler):
    """The bridge's DEBUG line of each echo it settled without a task: (key, sequence)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.echoes: set[tuple[str, int]] = set()
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.__dict__.get("reason") == "echo":
            with self._guard:
                self.echoes.add((record.__dict__["key"], record.__dict__["sequence"]))

    def settled(self, key: str, sequence: int) -> bool:
        with self._guard:
            return (key, sequence) in self.echoes


@dataclass
class Stack:
    nats: SyncNats
    redis: redis.Redis
    sandbox: Sandbox
    runtime: Runtime
    outcomes: OutcomeLog
    committees: V2Service
    bridge_echoes: BridgeEchoLog

    def wait_for(
        self, key: str, predicate: Callable[[list[logging.LogRecord]], bool], what: str
    ) -> list[logging.LogRecord]:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            runs = self.outcomes.of(key)
            if predicate(runs):
                return runs
            summary = [
                (r.__dict__.get("operation"), r.outcome, r.__dict__.get("reason")) for r in runs
            ]
            assert time.monotonic() < deadline, f"{key}: no {what}; got {summary}"
            time.sleep(0.02)

    def final(self, key: str, operation: str) -> logging.LogRecord:
        """The final outcome line of the one run of ``key`` for an event ``operation``."""
        runs = self.wait_for(
            key,
            lambda runs: any(_final_of(runs, operation)),
            f"final outcome of a {operation} event",
        )
        return _final_of(runs, operation)[0]

    def echo_skipped(self, key: str, after: int = 0) -> int:
        """The sequence of the next event of ``key`` after ``after`` skipped as an echo.

        The bridge settles most echoes without a task (``bridge.v2_echoes``): the
        state records ``skipped`` at the event's sequence and the bridge logs it;
        an echo it left to the worker ends in the run's ``skipped``/``echo`` line.
        """
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            state = self.state(key)
            if state.revision > after and state.outcome == "skipped":
                runs = [
                    r
                    for r in self.outcomes.of(key)
                    if r.__dict__.get("revision") == state.revision and r.outcome in FINAL
                ]
                for run in runs:
                    assert (run.outcome, run.__dict__["reason"]) == ("skipped", "echo"), run
                if runs or self.bridge_echoes.settled(key, state.revision):
                    return state.revision
            assert time.monotonic() < deadline, f"{key}: no echo after {after}; state {state}"
            time.sleep(0.02)

    def v1_calls(self, method: str | None = None) -> list[Any]:
        """The calls the V1 API fake answered (``method`` None: every one)."""
        return [
            r
            for r in self.sandbox.requests
            if r.path.startswith(V1_COMMITTEES) and (method is None or r.method == method)
        ]

    def v1_row(self, key: str) -> dict[str, Any] | None:
        entry = self.nats.kv_get(OBJECTS, key)
        return None if entry is None else dict(json.loads(entry.value))

    def mapping(self, key: str) -> str | None:
        entry = self.nats.kv_get(MAPPINGS, key)
        return None if entry is None else bytes(entry.value).decode()

    def state(self, key: str) -> SyncState:
        return StateStore(self.nats, STATE).get(key)

    def v2_writes(self) -> list[Any]:
        """The V2 committee service writes (the forward path's and the tests')."""
        return [
            r
            for r in self.sandbox.requests
            if r.path.startswith("/committees") and r.method in ("POST", "PUT", "DELETE")
        ]


def _final_of(runs: list[logging.LogRecord], operation: str) -> list[logging.LogRecord]:
    """The final outcomes of one event's runs (a parked run of this direction runs again)."""
    return [
        r
        for r in runs
        if r.__dict__.get("operation") == operation and r.outcome in FINAL - {"parked"}
    ]


async def _create_buckets(url: str) -> None:
    nc = await connect(url, "reverse-setup")
    try:
        await ensure_buckets(nc.jetstream(), OBJECTS, MAPPINGS, STATE)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, rsa_pems: dict[str, str]) -> Iterator[Stack]:
    base: Path = tmp_path_factory.mktemp("reverse-stack")
    heimdall_key = load_pem_private_key(rsa_pems["heimdall"].encode(), None)
    auth0_key = load_pem_private_key(rsa_pems["auth0"].encode(), None)
    assert isinstance(heimdall_key, RSAPrivateKey)
    assert isinstance(auth0_key, RSAPrivateKey)
    registered = app.tasks[V2_EVENT_TASK_NAME].run
    assert registered.__module__ == "tasks.worker.task"
    with (
        NatsServer(base / "nats") as nats_server,
        ValkeyServer(base / "valkey") as valkey,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr(reverse_writes, "CREATE_SETTLE_SECONDS", SETTLE_SECONDS)
        patch.setattr(reverse_writes, "CONFIRM_POLL_SECONDS", CONFIRM_POLL_SECONDS)
        asyncio.run(_create_buckets(nats_server.url))
        sandbox = sandbox_with_platform_user(
            KID,
            heimdall_key,
            AUTH0_CLIENT,
            auth0_key,
            nats_url=nats_server.url,
            v1_objects_bucket=OBJECTS,
            publish_indexer_events=True,
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
                sync_v2_to_v1=True,
            )
            runtime = Runtime.from_settings(settings)
            previous = set_runtime(runtime)
            use_broker(valkey.url)
            handler = OutcomeLog()
            sync_log = logging.getLogger("tasks.run.sync")
            sync_log.addHandler(handler)
            reverse_log = logging.getLogger("tasks.run.reverse")
            reverse_log.addHandler(handler)
            bridge_echoes = BridgeEchoLog()
            echo_log = logging.getLogger("bridge.v2_echoes")
            echo_log.addHandler(bridge_echoes)
            echo_level = echo_log.level
            echo_log.setLevel(logging.DEBUG)
            client = redis.Redis.from_url(valkey.url)
            test_nats = SyncNats(nats_server.url, "reverse-tests")
            minter = TokenMinter(
                heimdall_key, key_id=KID, jwks_url=sandbox.env()["HEIMDALL_JWKS_URL"]
            )
            committees = V2Service(
                sandbox.url,
                "committees",
                COMMITTEE_AUDIENCE,
                minter,
                timeout=5.0,
                service="committee",
            )
            bridge_settings = BridgeSettings(
                nats_url=nats_server.url,
                redis_url=valkey.url,
                port=0,
                bind="127.0.0.1",
                sync_v2_to_v1=True,
            )
            try:
                with (
                    start_worker(
                        app,
                        pool="threads",
                        concurrency=4,
                        perform_ping_check=False,
                        loglevel="INFO",
                        shutdown_timeout=30,
                    ),
                    BackgroundBridge(bridge_settings),
                ):
                    yield Stack(
                        test_nats, client, sandbox, runtime, handler, committees, bridge_echoes
                    )
            finally:
                sync_log.removeHandler(handler)
                reverse_log.removeHandler(handler)
                echo_log.removeHandler(bridge_echoes)
                echo_log.setLevel(echo_level)
                committees.close()
                test_nats.close()
                client.close()
                set_runtime(previous)
                runtime.close()


@pytest.fixture
def st(stack: Stack) -> Iterator[Stack]:
    stack.sandbox.reset_requests()
    stack.sandbox.clear_faults()
    yield stack
    stack.sandbox.clear_faults()


def a_project(st: Stack) -> tuple[str, str]:
    """A V2 project known to V1 (both project mappings): its uid and sfid."""
    sfid = "a09" + uuid.uuid4().hex[:15]
    uid = st.sandbox.add_project("Reverse " + sfid, "r" + sfid[3:].lower())
    MappingStore(st.nats, MAPPINGS).record_project(sfid, None, uid)
    return uid, sfid


def editable(current: dict[str, Any], read_only: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in current.items() if k not in read_only}


def v2_committee(st: Stack, project_uid: str, name: str) -> str:
    created = st.committees.create(
        {"name": name, "category": "Technical Advisory Committee", "project_uid": project_uid},
        PERSON,
    )
    return str(created["uid"])


def v1_committee(
    st: Stack, project_sfid: str, name: str, **columns: Any
) -> tuple[str, dict[str, Any], str]:
    """A committee written to V1 by a person and synced forward: its sfid, row and V2 uid."""
    sfid = str(uuid.uuid4())
    v1_key = f"platform-collaboration__c.{sfid}"
    committee = record(
        COMMITTEE_JSON,
        sfid=sfid,
        project_name__c=project_sfid,
        mailing_list__c=f"{name} {sfid[:8]}",
        lastmodifiedbyid=PLATFORM_ID,  # a person: the V2 write impersonates them
        **columns,
    )
    st.nats.kv_put(OBJECTS, v1_key, json.dumps(committee).encode())
    st.wait_for(v1_key, lambda runs: any(r.outcome == "created" for r in runs), "forward create")
    uid = st.mapping(f"committee.sfid.{sfid}")
    assert uid is not None
    return sfid, committee, uid


def forward_echo_skipped(st: Stack, v1_key: str) -> None:
    """The forward run of the row V1 wrote back ends skipped, without a V2 write."""
    writes = len(st.v2_writes())
    line = st.wait_for(
        v1_key, lambda runs: any(r.outcome in FINAL for r in runs), "forward outcome"
    )[-1]
    assert line.outcome == "skipped", line.__dict__
    assert line.__dict__["reason"] in ("echo", "already_deleted"), line.__dict__
    assert len(st.v2_writes()) == writes


# --- committees ------------------------------------------------------------------------


def test_a_v2_committee_create_update_delete_each_reach_v1_once(st: Stack) -> None:
    project_uid, project_sfid = a_project(st)
    name = "TAC " + uuid.uuid4().hex[:8]
    uid = v2_committee(st, project_uid, name)
    key = f"v2.committee.{uid}"

    assert st.final(key, "created").outcome == "created"
    sfid = st.mapping(f"committee.uid.{uid}")
    assert sfid is not None
    assert st.mapping(f"committee.sfid.{sfid}") == uid
    (post,) = st.v1_calls("POST")
    assert post.path == f"{V1_COMMITTEES}{project_sfid}/committees"
    v1_key = f"platform-collaboration__c.{sfid}"
    row = st.v1_row(v1_key)
    assert row is not None
    assert row["mailing_list__c"] == name
    assert row["type__c"] == "Technical Oversight Committee/Technical Advisory Committee"
    assert row["lastmodifiedbyid"] == f"{AUTH0_CLIENT}@clients"
    forward_echo_skipped(st, v1_key)

    current = st.committees.get(uid, PERSON)
    st.committees.update(
        uid,
        {**editable(current.record, COMMITTEE_READ_ONLY), "description": "Reviews designs."},
        current.etag,
        PERSON,
    )
    assert st.final(key, "updated").outcome == "updated"
    (patch,) = st.v1_calls("PATCH")
    assert patch.path == f"{V1_COMMITTEES}{project_sfid}/committees/{sfid}"
    row = st.v1_row(v1_key)
    assert row is not None
    assert row["description__c"] == "Reviews designs."
    state = st.state(key)
    assert state.outcome == "updated"
    assert state.fingerprint is not None
    assert state.intent is None

    st.committees.delete(uid, st.committees.get(uid, PERSON).etag, PERSON)
    assert st.final(key, "deleted").outcome == "deleted"
    (delete,) = st.v1_calls("DELETE")
    assert delete.path == f"{V1_COMMITTEES}{project_sfid}/committees/{sfid}"
    row = st.v1_row(v1_key)
    assert row is not None
    assert row["isdeleted"] is True
    assert st.mapping(f"committee.uid.{uid}") == "!del"
    # Exactly one V1 write per V2 change, and nothing went back to V2.
    assert [c.method for c in st.v1_calls()] == ["POST", "PATCH", "DELETE"]


def test_a_revert_in_v2_goes_through(st: Stack) -> None:
    project_uid, _ = a_project(st)
    uid = v2_committee(st, project_uid, "WG " + uuid.uuid4().hex[:8])
    key = f"v2.committee.{uid}"
    assert st.final(key, "created").outcome == "created"
    for description in ("First.", "Second.", "First."):
        before = len(st.v1_calls("PATCH"))
        current = st.committees.get(uid, PERSON)
        st.committees.update(
            uid,
            {**editable(current.record, COMMITTEE_READ_ONLY), "description": description},
            current.etag,
            PERSON,
        )
        st.wait_for(
            key,
            lambda runs, n=before: (
                len([r for r in _final_of(runs, "updated") if r.outcome == "updated"]) > n
            ),
            f"update to {description}",
        )
    assert len(st.v1_calls("PATCH")) == 3
    sfid = st.mapping(f"committee.uid.{uid}")
    row = st.v1_row(f"platform-collaboration__c.{sfid}")
    assert row is not None
    assert row["description__c"] == "First."


def test_a_lost_create_answer_does_not_duplicate_the_v1_committee(st: Stack) -> None:
    project_uid, project_sfid = a_project(st)
    name = "Lost " + uuid.uuid4().hex[:8]
    # V1 creates the committee, then the connection drops before the answer.
    st.sandbox.inject_fault("POST", V1_COMMITTEES, status=None, drop="after")
    uid = v2_committee(st, project_uid, name)
    key = f"v2.committee.{uid}"
    assert st.final(key, "created").outcome == "created"
    sfid = st.mapping(f"committee.uid.{uid}")
    rows = [
        row
        for key_, row in _committee_rows(st)
        if row.get("mailing_list__c") == name and row.get("project_name__c") == project_sfid
    ]
    assert [row["sfid"] for row in rows] == [sfid]  # one V1 committee, the one mapped


def test_a_lost_create_answer_waits_for_the_late_loader_instead_of_creating_again(
    st: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough never to run out here: only the row coming back ends the wait.
    monkeypatch.setattr(st.runtime.settings, "sync_v1_create_confirm_wait", 600.0)
    project_uid, project_sfid = a_project(st)
    name = "Late loader " + uuid.uuid4().hex[:8]
    st.sandbox.v1_api.hold_loader()
    try:
        st.sandbox.inject_fault("POST", V1_COMMITTEES, status=None, drop="after")
        uid = v2_committee(st, project_uid, name)
        key = f"v2.committee.{uid}"
        st.wait_for(
            key,
            lambda runs: sum(r.__dict__.get("reason") == "confirming_create" for r in runs) >= 2,
            "runs waiting for the lost create's row",
        )
        assert len(st.v1_calls("POST")) == 1  # V1 holds the committee; no second POST
    finally:
        assert st.sandbox.v1_api.release_loader() >= 1
    assert st.final(key, "created").outcome == "created"
    assert len(st.v1_calls("POST")) == 1
    sfid = st.mapping(f"committee.uid.{uid}")
    rows = [
        row
        for _, row in _committee_rows(st)
        if row.get("mailing_list__c") == name and row.get("project_name__c") == project_sfid
    ]
    assert [row["sfid"] for row in rows] == [sfid]


def test_a_create_v1_never_made_is_sent_again_after_the_confirm_wait(
    st: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(st.runtime.settings, "sync_v1_create_confirm_wait", 1.0)
    project_uid, project_sfid = a_project(st)
    name = "Never made " + uuid.uuid4().hex[:8]
    # The POST fails before V1 creates anything (the worker died, say): an intent, no row.
    st.sandbox.inject_fault("POST", V1_COMMITTEES, status=None, drop="before")
    uid = v2_committee(st, project_uid, name)
    key = f"v2.committee.{uid}"
    assert st.final(key, "created").outcome == "created"
    runs = st.outcomes.of(key)
    assert any(r.__dict__.get("reason") == "confirming_create" for r in runs)
    posts = st.v1_calls("POST")
    assert len(posts) == 2  # the one V1 never answered, and the one sent after the wait
    rows = [
        row
        for _, row in _committee_rows(st)
        if row.get("mailing_list__c") == name and row.get("project_name__c") == project_sfid
    ]
    assert [row["sfid"] for row in rows] == [st.mapping(f"committee.uid.{uid}")]


def _committee_rows(st: Stack) -> list[tuple[str, dict[str, Any]]]:
    keys = st.nats.run(st.nats.kv(OBJECTS).keys())
    rows = []
    for key in keys:
        if key.startswith("platform-collaboration__c."):
            row = st.v1_row(key)
            if row is not None:
                rows.append((key, row))
    return rows


# --- members ---------------------------------------------------------------------------


def test_a_v2_member_create_update_delete_each_reach_v1_once(st: Stack) -> None:
    project_uid, project_sfid = a_project(st)
    committee_uid = v2_committee(st, project_uid, "TSC " + uuid.uuid4().hex[:8])
    # The member is added right away: it waits for its committee's V1 id if need be.
    members = st.committees.collection_under(committee_uid, "members")
    email = f"m{uuid.uuid4().hex[:8]}@example.org"
    member = members.create(
        {
            "email": email,
            "first_name": "Mary",
            "last_name": "Major",
            "role": {"name": "Chair"},
            "voting": {"status": "Voting Rep"},
        },
        PERSON,
    )
    uid = member["uid"]
    key = f"v2.committee_member.{uid}"
    assert st.final(f"v2.committee.{committee_uid}", "created").outcome == "created"
    assert st.final(key, "created").outcome == "created"
    committee_sfid = st.mapping(f"committee.uid.{committee_uid}")
    sfid = st.mapping(f"committee_member.uid.{uid}")
    assert sfid is not None
    assert st.mapping(f"committee_member.sfid.{sfid}") == f"{committee_uid}:{uid}"
    member_posts = [c for c in st.v1_calls("POST") if c.path.endswith("/members")]
    assert len(member_posts) == 1
    v1_key = f"platform-community__c.{sfid}"
    row = st.v1_row(v1_key)
    assert row is not None
    assert (row["contactemail__c"], row["role__c"], row["voting_status__c"]) == (
        email,
        "Chair",
        "Voting Rep",
    )
    assert row["collaboration_name__c"] == committee_sfid
    contact_id = row["contact_name__c"]
    assert st.state(key).contact_id == contact_id
    forward_echo_skipped(st, v1_key)

    got = members.get(uid, PERSON)
    members.update(
        uid, {**editable(got.record, MEMBER_READ_ONLY), "job_title": "CTO"}, got.etag, PERSON
    )
    assert st.final(key, "updated").outcome == "updated"
    (patch,) = st.v1_calls("PATCH")
    assert patch.path == (
        f"{V1_COMMITTEES}{project_sfid}/committees/{committee_sfid}/members/{contact_id}"
    )
    row = st.v1_row(v1_key)
    assert row is not None
    assert row["title"] == "CTO"

    members.delete(uid, members.get(uid, PERSON).etag, PERSON)
    assert st.final(key, "deleted").outcome == "deleted"
    (delete,) = st.v1_calls("DELETE")
    assert delete.path == patch.path
    row = st.v1_row(v1_key)
    assert row is not None
    assert row["isdeleted"] is True
    assert [c.method for c in st.v1_calls()] == ["POST", "POST", "PATCH", "DELETE"]


def test_a_v1_delete_coming_back_from_v2_makes_no_v1_call(st: Stack) -> None:
    """V1 deletes the committee; the forward path deletes it in V2; V2's delete event
    finds V1 without it and calls nothing."""
    project_uid, _ = a_project(st)
    uid = v2_committee(st, project_uid, "Gone " + uuid.uuid4().hex[:8])
    key = f"v2.committee.{uid}"
    assert st.final(key, "created").outcome == "created"
    sfid = st.mapping(f"committee.uid.{uid}")
    assert sfid is not None
    v1_key = f"platform-collaboration__c.{sfid}"
    row = st.v1_row(v1_key)
    assert row is not None
    before = len(st.v1_calls())
    deleted = {**row, "isdeleted": True, "_sdc_deleted_at": row["lastmodifieddate"]}
    st.nats.kv_put(
        OBJECTS, v1_key, json.dumps({**deleted, "lastmodifiedbyid": PLATFORM_ID}).encode()
    )
    st.wait_for(v1_key, lambda runs: any(r.outcome == "deleted" for r in runs), "forward delete")
    line = st.final(key, "deleted")
    assert line.outcome == "skipped", line.__dict__
    assert line.__dict__["reason"] in ("echo", "not_in_v1", "already_deleted"), line.__dict__
    assert len(st.v1_calls()) == before


# --- the forward path's own writes -----------------------------------------------------


@pytest.mark.parametrize(
    "columns",
    [
        {},
        # V2 fills in sso_group_name itself: its event carries a value the forward
        # path never sent, so the echo guard must compare with V2's answer.
        {"sso_group_enabled": True},
    ],
    ids=["as_sent", "v2_fills_in_values"],
)
def test_a_forward_sync_of_a_v1_change_causes_no_v1_write(
    st: Stack, columns: dict[str, Any]
) -> None:
    _, project_sfid = a_project(st)
    sfid, committee, uid = v1_committee(st, project_sfid, "Board", **columns)
    v1_key = f"platform-collaboration__c.{sfid}"
    key = f"v2.committee.{uid}"
    created = st.echo_skipped(key)

    committee["description__c"] = "Changed in V1."
    st.nats.kv_put(OBJECTS, v1_key, json.dumps(committee).encode())
    st.echo_skipped(key, after=created)
    assert st.v1_calls() == []
    # The V2 event was a person's principal: only the content told the echo apart.
    assert st.committees.get(uid, PERSON).record["description"] == "Changed in V1."


# --- lost answers, bad events, metrics -------------------------------------------------


def test_a_lost_member_create_answer_does_not_duplicate_the_v1_member(st: Stack) -> None:
    project_uid, _ = a_project(st)
    committee_uid = v2_committee(st, project_uid, "Lost members " + uuid.uuid4().hex[:8])
    assert st.final(f"v2.committee.{committee_uid}", "created").outcome == "created"
    committee_sfid = st.mapping(f"committee.uid.{committee_uid}")
    st.sandbox.inject_fault("POST", V1_COMMITTEES, status=None, drop="after")
    members = st.committees.collection_under(committee_uid, "members")
    email = f"lost{uuid.uuid4().hex[:8]}@example.org"
    uid = members.create({"email": email}, PERSON)["uid"]
    key = f"v2.committee_member.{uid}"
    assert st.final(key, "created").outcome == "created"
    sfid = st.mapping(f"committee_member.uid.{uid}")
    keys = st.nats.run(st.nats.kv(OBJECTS).keys())
    rows = [
        row
        for row in (st.v1_row(k) for k in keys if k.startswith("platform-community__c."))
        if row is not None
        and row.get("collaboration_name__c") == committee_sfid
        and row.get("contactemail__c") == email
    ]
    assert [row["sfid"] for row in rows] == [sfid]  # one V1 member, the one mapped
    # Adopted, not re-sent: the only member POST is the one whose answer was lost.
    assert len([c for c in st.v1_calls("POST") if c.path.endswith("/members")]) <= 1
    assert st.state(key).contact_id == rows[0]["contact_name__c"]


def test_an_event_that_is_not_one_is_a_dead_letter(st: Stack) -> None:
    st.nats.run(st.nats.nc.publish("lfx.committee.updated", b"not json"))
    key = "v2.committee.unreadable"
    line = st.wait_for(key, lambda runs: any(r.outcome in FINAL for r in runs), "an outcome")[-1]
    assert line.outcome == "dead_lettered"
    assert line.__dict__["error_kind"] == "invalid_event"
    letters = [d for d in DeadLetterStore(st.nats, STATE).list() if d.key == key]
    assert letters
    assert st.v1_calls() == []


def test_reverse_outcomes_are_counted_apart_from_the_forward_ones(st: Stack) -> None:
    from prometheus_client import REGISTRY

    def count(outcome: str) -> float:
        labels = {"object_type": "committee", "outcome": outcome}
        return REGISTRY.get_sample_value("v1sync_v2_to_v1_outcomes_total", labels) or 0.0

    created = count("created")
    project_uid, _ = a_project(st)
    uid = v2_committee(st, project_uid, "Counted " + uuid.uuid4().hex[:8])
    assert st.final(f"v2.committee.{uid}", "created").outcome == "created"
    assert count("created") == created + 1


def test_a_dead_letter_of_the_direction_runs_again_with_dlq_requeue(st: Stack) -> None:
    project_uid, _ = a_project(st)
    uid = v2_committee(st, project_uid, "Refused " + uuid.uuid4().hex[:8])
    key = f"v2.committee.{uid}"
    assert st.final(key, "created").outcome == "created"
    st.sandbox.inject_fault("PATCH", V1_COMMITTEES, status=400, body={"message": "no"})
    current = st.committees.get(uid, PERSON)
    st.committees.update(
        uid,
        {**editable(current.record, COMMITTEE_READ_ONLY), "description": "Kept."},
        current.etag,
        PERSON,
    )
    assert st.final(key, "updated").outcome == "dead_lettered"
    store = DeadLetterStore(st.nats, STATE)
    letters = [d for d in store.list() if d.key == key]
    assert len(letters) == 1
    settings = st.runtime.settings
    with TaskQueue(settings.redis_target, settings.celery_queue, DEAD_LETTER_TASK_KWARGS) as queue:
        requeue_letters(queue, store, letters)
    st.wait_for(
        key,
        lambda runs: any(r.outcome == "updated" for r in _final_of(runs, "updated")),
        "the re-queued update",
    )
    sfid = st.mapping(f"committee.uid.{uid}")
    row = st.v1_row(f"platform-collaboration__c.{sfid}")
    assert row is not None
    assert row["description__c"] == "Kept."
    assert [d for d in store.list() if d.key == key] == []


def test_an_older_event_never_overwrites_a_newer_v1_state(st: Stack) -> None:
    project_uid, _ = a_project(st)
    uid = v2_committee(st, project_uid, "Ordered " + uuid.uuid4().hex[:8])
    key = f"v2.committee.{uid}"
    created = st.final(key, "created")
    assert created.outcome == "created"
    current = st.committees.get(uid, PERSON)
    st.committees.update(
        uid,
        {**editable(current.record, COMMITTEE_READ_ONLY), "description": "Newer."},
        current.etag,
        PERSON,
    )
    assert st.final(key, "updated").outcome == "updated"
    calls = len(st.v1_calls())
    # The create event once more, as a late redelivery would bring it.
    app.send_task(V2_EVENT_TASK_NAME, args=[key, created.__dict__["revision"], "created"])
    runs = st.wait_for(
        key, lambda runs: len(_final_of(runs, "created")) >= 2, "the late event's outcome"
    )
    assert _final_of(runs, "created")[-1].outcome == "superseded"
    assert len(st.v1_calls()) == calls


def test_a_forward_sync_of_a_v1_member_change_causes_no_v1_write(st: Stack) -> None:
    _, project_sfid = a_project(st)
    committee_sfid, _, _ = v1_committee(st, project_sfid, "Members")
    sfid = str(uuid.uuid4())
    v1_key = f"platform-community__c.{sfid}"
    member = record(
        MEMBER_JSON,
        sfid=sfid,
        collaboration_name__c=committee_sfid,
        project_name__c=project_sfid,
        contactemail__c=f"m{sfid[:8]}@example.com",
        contact_name__c=PLATFORM_ID,
    )
    st.nats.kv_put(OBJECTS, v1_key, json.dumps(member).encode())
    st.wait_for(v1_key, lambda runs: any(r.outcome == "created" for r in runs), "forward create")
    place = st.mapping(f"committee_member.sfid.{sfid}")
    assert place is not None
    key = f"v2.committee_member.{place.partition(':')[2]}"
    created = st.echo_skipped(key)

    member["title"] = "Chief Architect"
    st.nats.kv_put(OBJECTS, v1_key, json.dumps(member).encode())
    st.echo_skipped(key, after=created)
    assert st.v1_calls() == []


def test_an_echo_reads_its_own_mapping_and_no_parent(
    st: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The echo check comes before the parents are looked up: a member's echo reads its
    own mapping (and the states), not its committee's mapping nor the V1 committee row."""
    _, project_sfid = a_project(st)
    committee_sfid = str(uuid.uuid4())
    committee_key = f"platform-collaboration__c.{committee_sfid}"
    committee = record(
        COMMITTEE_JSON,
        sfid=committee_sfid,
        project_name__c=project_sfid,
        mailing_list__c="Cheap echoes " + committee_sfid[:8],
        lastmodifiedbyid=PLATFORM_ID,
    )
    st.nats.kv_put(OBJECTS, committee_key, json.dumps(committee).encode())
    st.wait_for(committee_key, lambda runs: any(r.outcome == "created" for r in runs), "create")
    sfid = str(uuid.uuid4())
    member = record(
        MEMBER_JSON,
        sfid=sfid,
        collaboration_name__c=committee_sfid,
        project_name__c=project_sfid,
        contactemail__c=f"e{sfid[:8]}@example.com",
        contact_name__c=PLATFORM_ID,
    )
    v1_key = f"platform-community__c.{sfid}"
    st.nats.kv_put(OBJECTS, v1_key, json.dumps(member).encode())
    st.wait_for(v1_key, lambda runs: any(r.outcome == "created" for r in runs), "forward create")
    place = st.mapping(f"committee_member.sfid.{sfid}")
    assert place is not None
    member_uid = place.partition(":")[2]
    key = f"v2.committee_member.{member_uid}"
    echo = st.echo_skipped(key)

    read: list[tuple[str, str]] = []
    kv_get = st.runtime.nats.kv_get

    def spy(bucket: str, wanted: str) -> Any:
        read.append((bucket, wanted))
        return kv_get(bucket, wanted)

    monkeypatch.setattr(st.runtime.nats, "kv_get", spy)
    # The same event once more (``force``: an operator's re-queue of a settled sequence).
    report = RunReport(key=key, revision=echo, operation="created")
    outcome, _ = run_reverse(st.runtime, report, force=True)
    assert (outcome.value, report.reason) == ("skipped", "echo")
    mine = [(b, k) for b, k in read if k.endswith((member_uid, committee_sfid))]
    assert mine == [(MAPPINGS, f"committee_member.uid.{member_uid}")]
    assert st.v1_calls() == []


def test_v1_unavailable_is_retried_with_backoff_and_written_once(st: Stack) -> None:
    from prometheus_client import REGISTRY

    def timed(status: str) -> float:
        """The PATCHes ``v1sync_v1_request_seconds`` timed with ``status``."""
        labels = {"object_type": "committee", "method": "PATCH", "status": status}
        return REGISTRY.get_sample_value("v1sync_v1_request_seconds_count", labels) or 0.0

    project_uid, _ = a_project(st)
    uid = v2_committee(st, project_uid, "Flaky " + uuid.uuid4().hex[:8])
    key = f"v2.committee.{uid}"
    assert st.final(key, "created").outcome == "created"
    before = {status: timed(status) for status in ("503", "200")}
    st.sandbox.inject_fault("PATCH", V1_COMMITTEES, status=503, times=2)
    current = st.committees.get(uid, PERSON)
    st.committees.update(
        uid,
        {**editable(current.record, COMMITTEE_READ_ONLY), "description": "Eventually."},
        current.etag,
        PERSON,
    )
    line = st.final(key, "updated")
    assert (line.outcome, line.__dict__["attempt"]) == ("updated", 2)
    assert [c.status for c in st.v1_calls("PATCH")] == [503, 503, 200]
    assert {status: timed(status) - count for status, count in before.items()} == {
        "503": 2,
        "200": 1,
    }


def test_with_the_switch_off_a_stray_task_does_nothing(st: Stack) -> None:
    settings = st.runtime.settings
    st.runtime.settings = settings.model_copy(update={"sync_v2_to_v1": False})
    try:
        report = RunReport(key="v2.committee.stray", revision=1, operation="updated")
        outcome, retry = run_reverse(st.runtime, report)
    finally:
        st.runtime.settings = settings
    assert (outcome.value, report.reason, retry) == ("skipped", "v2_to_v1_off", None)
    assert st.v1_calls() == []


def test_status_shows_the_v2_events_consumer_with_the_switch_on(st: Stack) -> None:
    status = collect(st.runtime.settings, ping_timeout=2.0)
    assert status.v2_events is not None
    assert status.v2_events.found, status.v2_events.error
    assert status.v2_events.stream == "committee_events"
    assert "(stream committee_events) V2 -> V1" in render(status)
    settings = st.runtime.settings.model_copy(update={"sync_v2_to_v1": False})
    assert collect_v2_events(settings) is None


def test_a_v2_delete_v1_answers_404_to_is_skipped_and_tombstoned(st: Stack) -> None:
    project_uid, _ = a_project(st)
    uid = v2_committee(st, project_uid, "404 " + uuid.uuid4().hex[:8])
    key = f"v2.committee.{uid}"
    assert st.final(key, "created").outcome == "created"
    st.sandbox.inject_fault("DELETE", V1_COMMITTEES, status=404, body={"message": "gone"})
    st.committees.delete(uid, st.committees.get(uid, PERSON).etag, PERSON)
    line = st.final(key, "deleted")
    assert (line.outcome, line.__dict__["reason"]) == ("skipped", "not_in_v1")
    assert [c.status for c in st.v1_calls("DELETE")] == [404]
    assert st.mapping(f"committee.uid.{uid}") == "!del"


def test_a_member_added_in_v2_to_a_committee_from_v1_reaches_v1_once(st: Stack) -> None:
    _, project_sfid = a_project(st)
    committee_sfid, _, committee_uid = v1_committee(st, project_sfid, "From V1")
    members = st.committees.collection_under(committee_uid, "members")
    email = f"v2{uuid.uuid4().hex[:8]}@example.org"
    body = {
        "email": email,
        "first_name": "Vera",
        "last_name": "Two",
        "role": {"name": "Chair"},
        "voting": {"status": "Voting Rep"},
        # The committee from V1 has voting on: V2 requires the organization.
        "organization": {"id": "0014100000Te2ovAAB", "name": "Acme"},
    }
    uid = members.create(body, PERSON)["uid"]
    key = f"v2.committee_member.{uid}"
    assert st.final(key, "created").outcome == "created"
    (post,) = st.v1_calls("POST")
    assert post.path == f"{V1_COMMITTEES}{project_sfid}/committees/{committee_sfid}/members"
    sfid = st.mapping(f"committee_member.uid.{uid}")
    v1_key = f"platform-community__c.{sfid}"
    row = st.v1_row(v1_key)
    assert row is not None
    assert (row["account__c"], row["role__c"]) == ("0014100000Te2ovAAB", "Chair")
    forward_echo_skipped(st, v1_key)
    # One V2 member: the row V1 wrote back did not become a second one.
    stored = [m for m in st.sandbox.members.values() if m.get("committee_uid") == committee_uid]
    assert [m["email"] for m in stored] == [email]
