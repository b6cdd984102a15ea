"""``v1-sync-helper explain KEY``: the task's dry run, against real NATS and valkey and
the sandbox's fake V2 services; and proof that it writes nothing anywhere.

Objects are brought into V2 by the task's own ``run_sync`` (no Celery needed);
``explain`` then runs with a dry-run runtime like the command opens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from operations.explain import NEW_UID, Explanation, explain_key, open_dry_run
from sandbox.servers import NatsServer, ValkeyServer
from sandbox.service import Sandbox
from sync_core.epochs import bucket_epoch
from sync_core.nats_client import SyncNats, connect, ensure_buckets
from sync_core.settings import WorkerSettings
from tasks.run.deletes import BUDGET_KEY
from tasks.run.report import RunReport
from tasks.run.runtime import Runtime
from tasks.run.sync import run_sync
from tests.test_task_members import new_member
from tests.test_task_sync import new_committee
from tests.v1_examples import PROJECT_JSON, record
from v1_sync_helper.cli import main

KID = "explain-kid"
AUTH0_CLIENT = "explain-client"
MACHINE_USER = "v1_sync_helper@clients"
PLATFORM_ID = "0032M00002ExPlAIN1"
OBJECTS = "v1-objects"
MAPPINGS = "v1-mappings"
STATE = "v1-sync-state"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Stack:
    nats: SyncNats
    redis: redis.Redis
    sandbox: Sandbox
    runtime: Runtime  # the worker's: used to sync objects first
    settings: WorkerSettings
    env: dict[str, str]

    def put(self, key: str, value: dict[str, Any] | bytes) -> int:
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        return self.nats.kv_put(OBJECTS, key, data)

    def sync(self, key: str, revision: int, operation: str = "PUT") -> str:
        """Run the task's sync for ``key@revision`` in this process; its outcome."""
        outcome, retry = run_sync(
            self.runtime, RunReport(key=key, revision=revision, operation=operation)
        )
        assert retry is None
        return outcome.value

    def delete(self, key: str) -> int:
        """Delete ``key`` in ``v1-objects``; the revision of the delete marker."""
        self.nats.run(self.nats.kv(OBJECTS).delete(key))
        return int(self.nats.run(self.nats.js.stream_info(f"KV_{OBJECTS}")).state.last_seq)

    def mapping(self, key: str) -> str | None:
        entry = self.nats.kv_get(MAPPINGS, key)
        return None if entry is None else bytes(entry.value).decode()

    def explain(self, key: str, settings: WorkerSettings | None = None) -> Explanation:
        dry = open_dry_run(settings or self.settings)
        try:
            return explain_key(dry, key)
        finally:
            dry.close()


def new_project(**changes: Any) -> tuple[str, dict[str, Any]]:
    sfid = "a09" + uuid.uuid4().hex[:15]
    project = record(
        PROJECT_JSON,
        sfid=sfid,
        slug__c="X" + sfid[3:].upper(),
        parent_project__c=None,
        lastmodifiedbyid=MACHINE_USER,
    )
    project.update(changes)
    return f"salesforce-project__c.{sfid}", project


def synced_committee(st: Stack) -> tuple[str, str]:
    """A project and a committee synced to V2: the committee's sfid and uid."""
    project_key, project = new_project()
    assert st.sync(project_key, st.put(project_key, project)) == "created"
    committee_key, committee = new_committee(project["sfid"], mailing_list__c=uuid.uuid4().hex)
    assert st.sync(committee_key, st.put(committee_key, committee)) == "created"
    uid = st.mapping(f"committee.sfid.{committee['sfid']}")
    assert uid is not None
    return committee["sfid"], uid


def synced_member(st: Stack, committee_sfid: str) -> tuple[str, dict[str, Any], str]:
    """A member synced to V2 in the committee: its key, record and member uid."""
    key, member = new_member(committee_sfid)
    assert st.sync(key, st.put(key, member)) == "created"
    place = st.mapping(f"committee_member.sfid.{member['sfid']}")
    assert place is not None
    return key, member, place.partition(":")[2]


def v2_writes(st: Stack) -> list[Any]:
    """The V2 writes the sandbox received (token requests aside)."""
    return [r for r in st.sandbox.requests if r.method in WRITE_METHODS and "/oauth/" not in r.path]


async def _create_buckets(url: str) -> None:
    nc = await connect(url, "explain-setup")
    try:
        await ensure_buckets(nc.jetstream(), OBJECTS, MAPPINGS)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, rsa_pems: dict[str, str]) -> Iterator[Stack]:
    base: Path = tmp_path_factory.mktemp("explain")
    heimdall = load_pem_private_key(rsa_pems["heimdall"].encode(), None)
    auth0 = load_pem_private_key(rsa_pems["auth0"].encode(), None)
    assert isinstance(heimdall, RSAPrivateKey)
    assert isinstance(auth0, RSAPrivateKey)
    user = {"ID": PLATFORM_ID, "Username": "jdoe", "Email": "jdoe@example.com"}
    with NatsServer(base / "nats") as nats_server, ValkeyServer(base / "valkey") as valkey:
        asyncio.run(_create_buckets(nats_server.url))
        with Sandbox(
            heimdall_keys={KID: heimdall.public_key()},
            auth0_clients={AUTH0_CLIENT: auth0.public_key()},
            users={PLATFORM_ID: user},
            nats_url=nats_server.url,
        ) as sandbox:
            env = {
                **sandbox.env(),
                "NATS_URL": nats_server.url,
                "REDIS_URL": valkey.url,
                "HEIMDALL_PRIVATE_KEY": rsa_pems["heimdall"],
                "HEIMDALL_KEY_ID": KID,
                "AUTH0_TENANT": "test",
                "AUTH0_CLIENT_ID": AUTH0_CLIENT,
                "AUTH0_PRIVATE_KEY": rsa_pems["auth0"],
            }
            settings = WorkerSettings(
                nats_url=nats_server.url,
                redis_url=valkey.url,
                project_service_url=sandbox.url,
                committee_service_url=sandbox.url,
                heimdall_private_key=rsa_pems["heimdall"],
                heimdall_key_id=KID,
                heimdall_jwks_url=sandbox.env()["HEIMDALL_JWKS_URL"],
                auth0_tenant="test",
                auth0_client_id=AUTH0_CLIENT,
                auth0_private_key=rsa_pems["auth0"],
                auth0_base_url=sandbox.url,
                lfx_api_gw=sandbox.env()["LFX_API_GW"],
                http_timeout=5.0,
            )
            runtime = Runtime.from_settings(settings)
            nats_client = SyncNats(nats_server.url, "explain-tests")
            client = redis.Redis.from_url(valkey.url)
            try:
                yield Stack(nats_client, client, sandbox, runtime, settings, env)
            finally:
                client.close()
                nats_client.close()
                runtime.close()


@pytest.fixture
def st(stack: Stack) -> Iterator[Stack]:
    stack.sandbox.reset_requests()
    stack.sandbox.clear_faults()
    return stack


def test_a_new_project_would_be_created_with_the_body_shown(st: Stack) -> None:
    key, project = new_project()
    revision = st.put(key, project)
    found = st.explain(key)
    assert (found.outcome, found.revision, found.operation) == ("create", revision, "PUT")
    assert found.body is not None
    assert found.body["slug"] == project["slug__c"].lower()
    assert found.body["parent_uid"] == st.sandbox.root_uid
    assert found.body["website_url"] == "https://www.linuxfoundation.org"
    assert found.record is not None
    assert found.record["sfid"] == project["sfid"]
    assert found.mappings_read == {f"project.sfid.{project['sfid']}": None}
    assert found.mappings_written == {
        f"project.uid.{NEW_UID}": project["sfid"],
        f"project.sfid.{project['sfid']}": NEW_UID,
        f"project.slug.{found.body['slug']}": NEW_UID,
    }
    assert found.identity is not None
    assert (found.identity["principal"], found.identity["on_behalf_of"]) == (
        MACHINE_USER,
        "v1_sync_helper",
    )


def test_a_synced_project_with_a_v1_change_would_be_updated_field_by_field(st: Stack) -> None:
    key, project = new_project()
    assert st.sync(key, st.put(key, project)) == "created"
    uid = st.nats.kv_get(MAPPINGS, f"project.sfid.{project['sfid']}").value.decode()
    project.update(name="Renamed in V1", description__c="New words.")
    st.put(key, project)

    found = st.explain(key)
    assert (found.outcome, found.v2_uid) == ("update", uid)
    assert found.v2_current is not None
    assert found.v2_current["name"] == "The Linux Foundation"
    changes = {c["field"]: (c["before"], c["after"]) for c in found.changes}
    assert changes == {
        "name": ("The Linux Foundation", "Renamed in V1"),
        "description": ("An umbrella foundation.", "New words."),
    }
    assert found.write is not None
    assert found.write["name"] == "Renamed in V1"
    # The task would then run exactly this: the same outcome, the same PUT body.
    assert st.sync(key, found.revision or 0) == "updated"
    assert st.sandbox.projects[uid]["name"] == "Renamed in V1"


def test_a_synced_unchanged_project_is_unchanged_and_the_marker_is_noted(st: Stack) -> None:
    key, project = new_project()
    revision = st.put(key, project)
    assert st.sync(key, revision) == "created"
    found = st.explain(key)
    assert (found.outcome, found.changes, found.synced_revision) == ("unchanged", [], revision)
    assert any("marked synced" in note for note in found.notes)


def test_dropped_values_are_shown_as_mapping_warnings(st: Stack) -> None:
    key, project = new_project(project_status__c="Bogus", auto_join_enabled__c="yes")
    st.put(key, project)
    found = st.explain(key)
    assert found.outcome == "create"
    assert found.body is not None
    assert "stage" not in found.body
    assert "autojoin_enabled" not in found.body
    assert any("Bogus" in w for w in found.warnings), found.warnings
    assert any("auto_join_enabled__c" in w for w in found.warnings), found.warnings


def test_a_missing_parent_would_park_the_child(st: Stack) -> None:
    parent = "a09" + uuid.uuid4().hex[:15]
    key, project = new_project(parent_project__c=parent)
    revision = st.put(key, project)
    found = st.explain(key)
    assert (found.outcome, found.reason) == ("parked", "missing_parent")
    assert found.message is not None
    assert parent in found.message
    assert f"project.sfid.{parent}" in found.mappings_read
    assert any(f"parked until project.sfid.{parent}" in note for note in found.notes)
    assert any("dead-lettered as missing_parent after" in note for note in found.notes)
    # What the run would record: the parked index entry and the key's pending run.
    assert f"parked.project.sfid.{parent}.{key}" in found.state_written
    pending = found.state_written[key]["pending"]
    assert (pending["state"], pending["revision"]) == ("parked", revision)
    assert st.nats.kv_get(STATE, f"parked.project.sfid.{parent}.{key}") is None


def test_an_undecodable_value_would_be_dead_lettered_with_the_reason(st: Stack) -> None:
    key = f"salesforce-project__c.a09{uuid.uuid4().hex[:15]}"
    st.put(key, b'{"sfid": "a09 broken')
    found = st.explain(key)
    assert (found.outcome, found.reason) == ("dead_letter", "undecodable")
    assert found.message is not None
    assert "neither JSON" in found.message


def test_an_unknown_prefix_is_skipped(st: Stack) -> None:
    found = st.explain("some-other-table__c.a0X000000000001")
    assert (found.outcome, found.reason, found.object_type) == ("skip", "unknown_prefix", "other")


def test_a_deleted_key_would_be_a_delete_of_its_v2_object(st: Stack) -> None:
    key, project = new_project()
    assert st.sync(key, st.put(key, project)) == "created"
    uid = st.nats.kv_get(MAPPINGS, f"project.sfid.{project['sfid']}").value.decode()
    st.nats.run(st.nats.kv(OBJECTS).delete(key))
    found = st.explain(key)
    assert (found.outcome, found.operation, found.v2_uid) == ("delete", "DEL", uid)
    assert found.mappings_written == {
        f"project.sfid.{project['sfid']}": "!del",
        f"project.uid.{uid}": "!del",
    }
    assert uid in st.sandbox.projects


def test_a_deleted_key_never_synced_is_skipped(st: Stack) -> None:
    key, project = new_project()
    st.put(key, project)
    st.nats.run(st.nats.kv(OBJECTS).delete(key))
    found = st.explain(key)
    assert (found.outcome, found.reason, found.operation) == ("skip", "not_in_v2", "DEL")


def test_an_impersonated_user_is_looked_up_without_caching(st: Stack) -> None:
    key, project = new_project(lastmodifiedbyid=PLATFORM_ID)
    st.put(key, project)
    found = st.explain(key)
    assert found.identity is not None
    assert found.identity["principal"] == "jdoe"
    assert found.identity["email"] == "jdoe@example.com"
    assert found.identity["on_behalf_of"] == "jdoe"
    assert "explain does not cache it" in found.identity["source"]
    assert st.nats.kv_get(MAPPINGS, f"v1_user.{PLATFORM_ID}") is None


def test_a_member_deleted_in_v1_would_be_deleted_from_its_committee(
    st: Stack, restore_logging: None
) -> None:
    """Before a worker ran the delete (explain once failed here with an AssertionError)."""
    committee_sfid, committee_uid = synced_committee(st)
    key, member, member_uid = synced_member(st, committee_sfid)
    st.delete(key)
    before = snapshot(st)
    st.sandbox.reset_requests()

    found = st.explain(key)

    assert (found.outcome, found.reason, found.operation) == ("delete", "DEL", "DEL")
    assert found.v2_uid == member_uid
    assert found.v2_current is not None
    assert found.v2_current["email"] == member["contactemail__c"]
    assert found.mappings_written == {
        f"committee_member.sfid.{member['sfid']}": "!del",
        f"committee_member.uid.{member_uid}": "!del",
    }
    path = f"/committees/{committee_uid}/members/{member_uid}"
    assert [
        (w["target"], w["action"], w["key"]) for w in found.writes if w["target"] == "v2:committee"
    ] == [("v2:committee", "DELETE", path)]
    assert any("V2 may refuse a delete" in note for note in found.notes)
    assert snapshot(st) == before
    assert v2_writes(st) == []
    assert member_uid in st.sandbox.members

    result = CliRunner().invoke(main, ["explain", key], env=st.env)
    assert result.exit_code == 0, result.output
    assert "Outcome: delete (DEL)" in result.stdout


def test_a_soft_deleted_committee_would_be_deleted(st: Stack) -> None:
    committee_sfid, committee_uid = synced_committee(st)
    key = f"platform-collaboration__c.{committee_sfid}"
    entry = st.nats.kv_get(OBJECTS, key)
    committee = json.loads(bytes(entry.value))
    st.put(key, {**committee, "isdeleted": True})
    found = st.explain(key)
    assert (found.outcome, found.reason, found.operation) == ("delete", "soft_delete", "PUT")
    assert found.v2_uid == committee_uid
    assert found.identity is not None
    assert found.identity["source"] == "no lastmodifiedbyid: the service's own identity"
    assert found.mappings_written == {
        f"committee.sfid.{committee_sfid}": "!del",
        f"committee.uid.{committee_uid}": "!del",
    }
    assert committee_uid in st.sandbox.committees


def test_a_delete_v2_refused_before_is_explained_with_the_refusal(st: Stack) -> None:
    key, project = new_project()  # not crowdfunded: the project service refuses its delete
    assert st.sync(key, st.put(key, project)) == "created"
    uid = st.mapping(f"project.sfid.{project['sfid']}")
    revision = st.delete(key)
    assert st.sync(key, revision, "DEL") == "delete_refused"
    before = snapshot(st)

    found = st.explain(key)

    assert (found.outcome, found.v2_uid, found.revision) == ("delete", uid, revision)
    assert found.dead_letter is not None
    assert found.dead_letter["error_kind"] == "delete_refused"
    refusal = [note for note in found.notes if note.startswith("V2 refused this delete before")]
    assert refusal, found.notes
    assert "Crowdfunding" in refusal[0]
    assert any("sync state has revision" in note for note in found.notes)
    assert snapshot(st) == before
    assert st.mapping(f"project.sfid.{project['sfid']}") == uid


def test_a_member_of_an_unsynced_committee_would_be_parked(st: Stack) -> None:
    committee_sfid = str(uuid.uuid4())
    key, member = new_member(committee_sfid)
    revision = st.put(key, member)
    before = snapshot(st)
    st.sandbox.reset_requests()

    found = st.explain(key)

    assert (found.outcome, found.reason) == ("parked", "missing_committee")
    parent = f"committee.sfid.{committee_sfid}"
    assert found.mappings_read == {f"committee_member.sfid.{member['sfid']}": None, parent: None}
    assert found.state_written[f"parked.{parent}.{key}"]["revision"] == revision
    assert found.state_written[key]["pending"]["parent_key"] == parent
    assert snapshot(st) == before
    assert v2_writes(st) == []


def test_a_record_deleted_in_v2_on_purpose_is_skipped_as_tombstoned(st: Stack) -> None:
    key, project = new_project()
    st.sandbox.add_crowdfunding_slug(project["slug__c"].lower())
    assert st.sync(key, st.put(key, project)) == "created"
    assert st.sync(key, st.delete(key), "DEL") == "deleted"
    st.put(key, project)
    found = st.explain(key)
    assert (found.outcome, found.reason) == ("skip", "tombstoned")
    assert any("requeue --undelete" in note for note in found.notes)
    assert not [w for w in found.writes if w["target"].startswith("v2:")]


def test_a_member_moved_to_another_committee_would_be_deleted_and_created(st: Stack) -> None:
    """The kind's relocation runs in explain too (the hand copy never called it)."""
    old_sfid, old_uid = synced_committee(st)
    new_sfid, new_uid = synced_committee(st)
    key, member, old_member = synced_member(st, old_sfid)
    member["collaboration_name__c"] = new_sfid
    st.put(key, member)
    st.sandbox.reset_requests()

    found = st.explain(key)

    assert found.outcome == "create"
    v2 = [(w["action"], w["key"]) for w in found.writes if w["target"] == "v2:committee"]
    assert v2 == [
        ("DELETE", f"/committees/{old_uid}/members/{old_member}"),
        ("POST", f"/committees/{new_uid}/members"),
    ]
    assert found.mappings_written[f"committee_member.uid.{old_member}"] == "!del"
    assert found.mappings_written[f"committee_member.sfid.{member['sfid']}"] == (
        f"{new_uid}:{NEW_UID}"
    )
    assert v2_writes(st) == []
    assert old_member in st.sandbox.members


def test_a_delete_past_the_budget_would_be_dead_lettered(st: Stack) -> None:
    key, project = new_project()
    assert st.sync(key, st.put(key, project)) == "created"
    st.delete(key)
    st.redis.delete(BUDGET_KEY)
    seconds, _ = st.redis.time()
    st.redis.zadd(BUDGET_KEY, {"someone-else@1": seconds})
    try:
        found = st.explain(key, st.settings.model_copy(update={"sync_delete_budget": 1}))
        assert (found.outcome, found.reason) == ("dead_letter", "delete_budget_exceeded")
        assert found.state_written[f"deadletter.{key}"]["error_kind"] == "delete_budget_exceeded"
        assert st.redis.zcard(BUDGET_KEY) == 1
        roomy = st.explain(key, st.settings.model_copy(update={"sync_delete_budget": 2}))
        assert roomy.outcome == "delete"
        assert st.redis.zcard(BUDGET_KEY) == 1
    finally:
        st.redis.delete(BUDGET_KEY)


def test_a_parent_created_would_release_its_parked_children(st: Stack) -> None:
    parent_key, parent = new_project()
    child_key, child = new_project(parent_project__c=parent["sfid"])
    child_revision = st.put(child_key, child)
    assert st.sync(child_key, child_revision) == "parked"
    st.put(parent_key, parent)
    before = snapshot(st)

    found = st.explain(parent_key)

    assert found.outcome == "create"
    enqueued = [w for w in found.writes if w["target"] == "queue"]
    assert [(w["key"], w["value"]["args"]) for w in enqueued] == [
        (f"{child_key}@{child_revision}", [child_key, child_revision, "PUT"])
    ]
    # Forced (a child dead-lettered while it waited runs again), in the child's life.
    assert enqueued[0]["value"]["kwargs"] == {
        "force": True,
        "epoch": st.nats.run(bucket_epoch(st.nats.js, OBJECTS)),
    }
    assert snapshot(st) == before


def test_a_key_mid_retries_is_explained_with_the_retries_it_has_left(st: Stack) -> None:
    key, project = new_project()
    assert st.sync(key, st.put(key, project)) == "created"
    uid = st.mapping(f"project.sfid.{project['sfid']}")
    project.update(name="Renamed while V2 is down")
    revision = st.put(key, project)
    st.sandbox.inject_fault("GET", f"/projects/{uid}", status=503, times=10)
    for attempt in range(2):  # two tries spent: their count is in the sync state
        report = RunReport(key=key, revision=revision, operation="PUT", attempt=attempt)
        assert run_sync(st.runtime, report)[0].value == "retrying"

    found = st.explain(key, st.settings.model_copy(update={"sync_retry_max": 3}))
    assert (found.outcome, found.reason) == ("retry", "v2_5xx")
    assert any("this is try 3 of 4" in note for note in found.notes), found.notes
    assert any("2 of its tries spent" in note for note in found.notes), found.notes

    spent = st.explain(key, st.settings.model_copy(update={"sync_retry_max": 2}))
    assert (spent.outcome, spent.reason) == ("dead_letter", "v2_5xx")
    assert spent.state_written[f"deadletter.{key}"]["attempts"] == 3


def snapshot(st: Stack) -> tuple[Any, ...]:
    """Every KV stream's last sequence, every Redis key's type and value."""
    streams = tuple(
        st.nats.run(st.nats.js.stream_info(f"KV_{bucket}")).state.last_seq
        for bucket in (OBJECTS, MAPPINGS, STATE)
    )
    keys = {key: st.redis.dump(key) for key in st.redis.scan_iter()}
    return streams, keys


def test_explain_writes_nothing_anywhere(st: Stack) -> None:
    synced_key, synced = new_project(lastmodifiedbyid=PLATFORM_ID)
    assert st.sync(synced_key, st.put(synced_key, synced)) == "created"
    synced.update(name="Changed again")
    st.put(synced_key, synced)
    new_key, new = new_project(lastmodifiedbyid="0032M00002NoCache1")
    st.put(new_key, new)
    orphan_key, orphan = new_project(parent_project__c="a09NOPARENT0000001")
    st.put(orphan_key, orphan)
    broken_key = f"salesforce-project__c.a09{uuid.uuid4().hex[:15]}"
    st.put(broken_key, b"\xff\x00 not a record")
    gone_key, gone = new_project()
    assert st.sync(gone_key, st.put(gone_key, gone)) == "created"
    st.nats.run(st.nats.kv(OBJECTS).delete(gone_key))
    before = snapshot(st)
    st.sandbox.reset_requests()

    keys = (synced_key, new_key, orphan_key, broken_key, gone_key)
    outcomes = [st.explain(k).outcome for k in keys]

    assert outcomes == ["update", "create", "parked", "dead_letter", "delete"]
    assert snapshot(st) == before
    methods = {r.method for r in st.sandbox.requests if r.path.startswith(("/projects", "/comm"))}
    assert methods == {"GET"}
    assert not [
        r for r in st.sandbox.requests if r.method in WRITE_METHODS and "/oauth/" not in r.path
    ]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_command_prints_the_explanation_and_json(st: Stack, restore_logging: None) -> None:
    key, project = new_project()
    assert st.sync(key, st.put(key, project)) == "created"
    project.update(name="Shown in the diff")
    revision = st.put(key, project)

    text = CliRunner().invoke(main, ["explain", f"{key}@{revision}"], env=st.env)
    assert text.exit_code == 0, text.output
    assert "Outcome: update" in text.stdout
    assert 'name: "The Linux Foundation" -> "Shown in the diff"' in text.stdout
    assert "V2 body (PUT with If-Match)" in text.stdout
    # What the run would record after the PUT: its outcome in the sync state and in Redis.
    assert f"Sync state it would write\n  {key} = " in text.stdout
    assert '"outcome": "updated"' in text.stdout
    assert f"redis EVAL mark synced v1sync:synced:{key}" in text.stdout
    assert st.env["HEIMDALL_PRIVATE_KEY"].splitlines()[1] not in text.output

    as_json = CliRunner().invoke(main, ["explain", "--json", key], env=st.env)
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert (data["outcome"], data["revision"]) == ("update", revision)

    unknown = CliRunner().invoke(
        main, ["explain", "salesforce-project__c.a09NOSUCHKEY"], env=st.env
    )
    assert unknown.exit_code == 1
    assert "is not in v1-objects" in unknown.stderr


def test_a_changed_setting_shows_the_settings_diff_and_no_base_put(st: Stack) -> None:
    key, project = new_project(mission_statement="First.")
    assert st.sync(key, st.put(key, project)) == "created"
    project["mission_statement"] = "A new mission."
    st.put(key, project)
    before = snapshot(st)

    found = st.explain(key)

    assert (found.outcome, found.reason) == ("update", "0 field(s) differ, 1 setting(s)")
    assert found.write is None  # the base already matches: no PUT of it
    assert found.settings_write is not None
    assert found.settings_write["mission_statement"] == "A new mission."
    assert [(c["field"], c["before"], c["after"]) for c in found.settings_changes] == [
        ("mission_statement", "First.", "A new mission.")
    ]
    assert snapshot(st) == before
