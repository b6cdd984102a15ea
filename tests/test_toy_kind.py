"""A toy object type, defined in this file alone, goes through every path of the service.

The ``gadget`` type is a kind (``GadgetKind``), a pure mapping (``map_gadget``) and a
sandbox fake (a ``FakeCollection`` at ``/gadgets``), registered for the module with
``tasks.kinds.registry.registered``. Nothing else of the service knows it, yet
the task ``sync_kv_entry`` creates, updates, deletes and parks it,
``requeue --undelete`` brings it back, ``dlq`` lists and re-queues its dead
letters, and the bridge's reconciler re-drives its keys: every per-type table is
built from the registry. Real nats-server and valkey; the task runs in this
process (``apply``) with the runtime installed as a worker's would be.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bridge.publisher import BrokerPublisher, broker_client
from sandbox.collection import FakeCollection
from sandbox.servers import NatsServer, ValkeyServer
from sandbox.service import Sandbox
from sync_core.broker import broker_transport_options, task_id_for
from sync_core.keys import KeySpec, key_specs, parse_key
from sync_core.nats_client import SyncNats, connect
from sync_core.sync_state import DEFAULT_STATE_BUCKET, SweepSummary
from tasks.clients.identity import Identity
from tasks.clients.v2 import V2ServiceSpec
from tasks.errors import DeadLettered, InvalidRecord, MissingMapping
from tasks.kinds.base import Desired, KindReport, KindRuntime, ObjectKind
from tasks.kinds.registry import kind_for_key, registered
from tasks.run.runtime import Runtime
from tasks.stores.id_mappings import PROJECT_SFID, TOMBSTONE
from tasks.stores.sync_state import StateStore
from tasks.worker.process import set_runtime
from tasks.worker.task import sync_kv_entry
from tests.test_bridge_loop import queued_tasks, task_ids
from tests.test_reconciler import reconciler
from tests.test_task_sync import _create_buckets as create_buckets
from tests.test_task_sync import use_broker
from tests.worker_process import AUTH0_CLIENT, KID, sandbox_worker_settings
from v1_sync_helper.cli import main

MACHINE_USER = "v1_sync_helper@clients"
OBJECTS = "v1-objects"
MAPPINGS = "v1-mappings"
QUEUE = "celery"
GRACE = 0.3

# -- the toy type: all of it ------------------------------------------------------

GADGET_PREFIX = "platform-gadget__c"
GADGET_AUDIENCE = "lfx-v2-gadget-service"
GADGET_SFID = "gadget.sfid."
GADGET_UID = "gadget.uid."


def map_gadget(record: dict[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """The pure mapping: sfid, V2 body, and the parent project's sfid (if any)."""
    name = record.get("name__c")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRecord("name__c is missing")
    body = {"name": name.strip(), "colour": str(record.get("colour__c") or "grey")}
    return str(record["sfid"]), body, record.get("project_name__c")


class GadgetKind(ObjectKind):
    """Gadgets in a (fake) V2 Gadget Service, optionally under a project."""

    keys = KeySpec("gadget", GADGET_PREFIX, rank=1)
    v2 = V2ServiceSpec(
        name="gadget",
        collection="gadgets",
        audience=GADGET_AUDIENCE,
        # The sandbox serves every fake on one address: the project service's.
        url_setting="project_service_url",
        missing_reason="no_gadget_service",
    )
    reference_columns = ("project_name__c",)
    sfid_prefix = GADGET_SFID
    uid_prefix = GADGET_UID
    has_children = False

    def desired(
        self,
        runtime: KindRuntime,
        record: dict[str, Any],
        identity: Identity,
        report: KindReport,
    ) -> Desired:
        sfid, body, project_sfid = map_gadget(record)
        report.sfid = sfid
        if project_sfid is not None:
            project_uid = runtime.mappings.project_uid(project_sfid)
            if project_uid is None:
                raise MissingMapping(
                    f"project {project_sfid} of the gadget has no V2 uid yet",
                    kind="missing_project",
                    parent_key=PROJECT_SFID + project_sfid,
                )
            body["project_uid"] = project_uid
        return Desired(sfid=sfid, body=body)


GADGETS = GadgetKind()


# -- the stack ------------------------------------------------------------------


@dataclass
class Stack:
    nats: SyncNats
    redis: redis.Redis
    sandbox: Sandbox
    gadgets: FakeCollection
    runtime: Runtime
    env: dict[str, str]

    def put(self, key: str, value: dict[str, Any] | bytes) -> int:
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        return self.nats.kv_put(OBJECTS, key, data)

    def delete(self, key: str) -> int:
        self.nats.run(self.nats.kv(OBJECTS).delete(key))
        info = self.nats.run(self.nats.js.stream_info(f"KV_{OBJECTS}"))
        return int(info.state.last_seq)

    def run(self, key: str, revision: int, operation: str = "PUT", **kwargs: Any) -> str:
        """Run ``sync_kv_entry`` here, as a worker would; its outcome (or dead letter)."""
        result = sync_kv_entry.apply(
            args=[key, revision, operation], kwargs=kwargs, task_id=task_id_for(key, revision)
        )
        if isinstance(result.result, DeadLettered):
            return "dead_lettered"
        assert result.successful(), result.traceback
        return str(result.result)

    def mapping(self, key: str) -> str | None:
        entry = self.nats.kv_get(MAPPINGS, key)
        return None if entry is None else bytes(entry.value).decode()

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=self.env)

    def queued(self) -> list[str]:
        return task_ids(queued_tasks(self.redis))


def new_gadget(**changes: Any) -> tuple[str, dict[str, Any]]:
    sfid = "a0G" + uuid.uuid4().hex[:15]
    gadget = {"sfid": sfid, "name__c": f"Gadget {sfid}", "lastmodifiedbyid": MACHINE_USER}
    gadget.update(changes)
    return f"{GADGET_PREFIX}.{sfid}", gadget


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, rsa_pems: dict[str, str]) -> Iterator[Stack]:
    base: Path = tmp_path_factory.mktemp("toy-stack")
    heimdall = load_pem_private_key(rsa_pems["heimdall"].encode(), None)
    auth0 = load_pem_private_key(rsa_pems["auth0"].encode(), None)
    assert isinstance(heimdall, RSAPrivateKey)
    assert isinstance(auth0, RSAPrivateKey)
    with (
        NatsServer(base / "nats") as nats_server,
        ValkeyServer(base / "valkey") as valkey,
        registered(GADGETS),
    ):
        asyncio.run(create_buckets(nats_server.url))
        sandbox = Sandbox(
            heimdall_keys={KID: heimdall.public_key()},
            auth0_clients={AUTH0_CLIENT: auth0.public_key()},
            nats_url=nats_server.url,
        )
        gadgets = sandbox.mount(FakeCollection("gadgets", GADGET_AUDIENCE, unique_field="name"))
        with sandbox:
            settings = sandbox_worker_settings(
                sandbox, nats_server.url, valkey.url, rsa_pems, sync_retry_max=0
            )
            runtime = Runtime.from_settings(settings)
            previous = set_runtime(runtime)
            use_broker(valkey.url)
            client = redis.Redis.from_url(valkey.url)
            test_nats = SyncNats(nats_server.url, "toy-tests")
            env = {"NATS_URL": nats_server.url, "REDIS_URL": valkey.url}
            try:
                yield Stack(test_nats, client, sandbox, gadgets, runtime, env)
            finally:
                test_nats.close()
                client.close()
                set_runtime(previous)
                runtime.close()


@pytest.fixture
def st(stack: Stack) -> Stack:
    stack.redis.delete(QUEUE)
    stack.sandbox.reset_requests()
    return stack


# -- the tests ------------------------------------------------------------------


def test_the_registry_makes_the_toy_a_known_type(stack: Stack) -> None:
    key, _ = new_gadget()
    assert parse_key(key)[0] == "gadget"
    assert kind_for_key(key)[0] is GADGETS
    assert GADGETS.keys in key_specs()
    assert stack.runtime.services["gadget"] is not None


def test_the_run_creates_updates_and_deletes_a_toy_object(st: Stack) -> None:
    key, gadget = new_gadget()
    revision = st.put(key, gadget)
    assert st.run(key, revision) == "created"
    uid = st.mapping(GADGET_SFID + gadget["sfid"])
    assert uid is not None
    assert st.gadgets.records[uid]["name"] == gadget["name__c"]
    assert st.mapping(GADGET_UID + uid) == gadget["sfid"]
    (post,) = [r for r in st.sandbox.requests if (r.method, r.path) == ("POST", "/gadgets")]
    assert post.claims["aud"] == GADGET_AUDIENCE
    state = StateStore(st.nats, DEFAULT_STATE_BUCKET).get(key)
    assert (state.revision, state.outcome, state.uid) == (revision, "created", uid)

    changed = st.put(key, {**gadget, "colour__c": "red"})
    assert st.run(key, changed) == "updated"
    assert st.gadgets.records[uid]["colour"] == "red"
    assert st.run(key, changed, force=True) == "unchanged"

    deleted = st.delete(key)
    assert st.run(key, deleted, "DEL") == "deleted"
    assert uid not in st.gadgets.records
    assert st.mapping(GADGET_SFID + gadget["sfid"]) == TOMBSTONE
    assert st.mapping(GADGET_UID + uid) == TOMBSTONE


def test_requeue_undelete_brings_a_deleted_toy_object_back(st: Stack) -> None:
    key, gadget = new_gadget()
    assert st.run(key, st.put(key, gadget)) == "created"
    old_uid = st.mapping(GADGET_SFID + gadget["sfid"])
    assert st.run(key, st.delete(key), "DEL") == "deleted"
    again = st.put(key, gadget)
    assert st.run(key, again) == "skipped"  # tombstoned: deleted in V2 on purpose

    result = st.cli("requeue", "--undelete", "--yes", key)

    assert result.exit_code == 0, result.output
    assert f"cleared the tombstone of {key}" in result.stdout
    assert st.queued() == [f"{key}@{again}"]
    assert st.run(key, again, force=True) == "created"
    new_uid = st.mapping(GADGET_SFID + gadget["sfid"])
    assert new_uid not in (None, TOMBSTONE, old_uid)
    assert st.gadgets.records[str(new_uid)]["name"] == gadget["name__c"]


def test_a_bad_toy_record_is_a_dead_letter_that_dlq_lists_and_requeues(st: Stack) -> None:
    key, gadget = new_gadget(project_name__c="not a V1 id")
    revision = st.put(key, gadget)
    assert st.run(key, revision) == "dead_lettered"

    listed = st.cli("dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    letters = {letter["id"]: letter for letter in json.loads(listed.stdout)}
    assert letters[f"{key}@{revision}"]["error_kind"] == "invalid_record"

    requeued = st.cli("dlq", "requeue", f"{key}@{revision}")
    assert requeued.exit_code == 0, requeued.output
    assert st.queued() == [f"{key}@{revision}"]


def test_a_parked_toy_child_is_redriven_by_the_reconciler_once_its_parent_is_mapped(
    st: Stack,
) -> None:
    project_sfid = "a09" + uuid.uuid4().hex[:15]
    key, gadget = new_gadget(project_name__c=project_sfid)
    revision = st.put(key, gadget)
    assert st.run(key, revision) == "parked"
    pending = StateStore(st.nats, DEFAULT_STATE_BUCKET).get(key).pending
    assert pending is not None
    assert pending.parent_key == PROJECT_SFID + project_sfid
    # A key of the toy type that no task ever ran: the reconciler finds it too.
    lost_key, lost = new_gadget()
    lost_revision = st.put(lost_key, lost)
    # The parent's run wrote its mapping, then died before releasing the child.
    project_uid = str(uuid.uuid4())
    st.nats.kv_put(MAPPINGS, PROJECT_SFID + project_sfid, project_uid.encode())
    time.sleep(GRACE)  # the reconciler leaves alone what changed less than a grace ago

    summary = sweep(st)

    assert summary.reenqueued >= 2
    assert {f"{key}@{revision}", f"{lost_key}@{lost_revision}"} <= set(st.queued())
    assert st.run(key, revision, force=True) == "created"
    uid = st.mapping(GADGET_SFID + gadget["sfid"])
    assert st.gadgets.records[str(uid)]["project_uid"] == project_uid


def sweep(st: Stack) -> SweepSummary:
    """One sweep of the bridge's reconciler over the stack's buckets."""
    redis_url = st.env["REDIS_URL"]

    async def go() -> SweepSummary:
        nc = await connect(st.env["NATS_URL"], "toy-reconciler")
        publisher = BrokerPublisher(broker_client(redis_url, broker_transport_options()))
        try:
            return await reconciler(nc, redis_url, publisher, grace=GRACE).sweep()
        finally:
            publisher.close()
            await nc.close()

    return asyncio.run(go())


# -- explain: the dry run dispatches through the registry too ------------------------
# Kept apart: ``explain`` is being rebuilt on the pipeline's own code (issue 21); this
# test pins only that it knows the toy type, through ``explain_key``'s public answer.


def test_explain_of_a_toy_key_shows_the_create_without_doing_it(st: Stack) -> None:
    from operations.explain import explain_key, open_dry_run

    key, gadget = new_gadget()
    st.put(key, gadget)
    dry = open_dry_run(st.runtime.settings)
    try:
        found = explain_key(dry, key)
    finally:
        dry.close()
    assert (found.object_type, found.outcome) == ("gadget", "create")
    assert found.body == {"name": gadget["name__c"], "colour": "grey"}
    assert GADGET_SFID + gadget["sfid"] in found.mappings_written
    assert st.mapping(GADGET_SFID + gadget["sfid"]) is None
    assert not st.gadgets.records or all(
        r["name"] != gadget["name__c"] for r in st.gadgets.records.values()
    )
