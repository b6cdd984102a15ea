"""Echoes of the forward path settled in the bridge (``bridge.v2_echoes``): a real bridge,
nats-server and valkey, no worker. An echo is acked with its V2 object's state settled
``skipped`` at its sequence and no Celery task; anything else is enqueued as before."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import redis

import bridge.v2_echoes as v2_echoes
from bridge.changes import KvChange
from bridge.loop import LoopTuning
from bridge.metrics import BridgeMetrics
from bridge.v2_echoes import V2EchoFilter
from sandbox.servers import NatsServer, ValkeyServer
from sync_core.broker import V2_EVENT_TASK_NAME
from sync_core.nats_client import SyncNats, ensure_bucket
from sync_core.settings import DEFAULT_V2_EVENTS_CONSUMER_NAME, DEFAULT_V2_EVENTS_STREAM
from sync_core.sync_state import KeyLease, MemberMove, PendingRun, RunState, SyncState, read_state
from sync_core.v1_bodies import committee_fingerprint, member_fingerprint
from sync_core.v2_events import REVERSE_EPOCH
from tests.bridge_harness import BackgroundBridge
from tests.test_bridge_loop import queued_tasks, settings_for, wait_until

MAPPINGS = "v1-mappings"
STATE = "v1-sync-state"
STREAM = DEFAULT_V2_EVENTS_STREAM
CONSUMER = DEFAULT_V2_EVENTS_CONSUMER_NAME
LEASE_SECONDS = 60.0


def committee_data(uid: str, name: str) -> dict[str, Any]:
    return {"uid": uid, "name": name, "category": "Board", "project_uid": "p-" + uid[:8]}


def envelope(object_type: str, action: str, uid: str, data: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "document_id": f"{object_type}:{uid}",
            "object_id": uid,
            "object_type": object_type,
            "action": action,
            "timestamp": "2026-12-07T04:00:00Z",
            "body": {"data": data, f"{action}_by_principals": ["someone"]},
        }
    ).encode()


@dataclass
class EchoStack:
    nats: SyncNats
    redis: redis.Redis
    bridge: BackgroundBridge

    def publish(self, object_type: str, action: str, uid: str, data: dict[str, Any]) -> int:
        payload = envelope(object_type, action, uid, data)
        ack = self.nats.run(self.nats.js.publish(f"lfx.{object_type}.{action}", payload))
        return int(ack.seq)

    def state(self, key: str) -> SyncState:
        async def read() -> SyncState:
            state, _ = await read_state(await self.nats.js.key_value(STATE), key)
            return state

        return self.nats.run(read())

    def put_state(self, state: SyncState) -> None:
        self.nats.kv_put(STATE, state.key, state.to_bytes())

    def map_committee(self, uid: str) -> str:
        """The committee's mapping and a V1 key with the fingerprint of ``uid``'s data."""
        sfid = "a0" + uuid.uuid4().hex[:16]
        self.nats.kv_put(MAPPINGS, f"committee.uid.{uid}", sfid.encode())
        return f"platform-collaboration__c.{sfid}"

    def wait_acked(self, sequence: int) -> None:
        def acked() -> bool:
            info = self.nats.run(self.nats.js.consumer_info(STREAM, CONSUMER))
            return info.ack_floor.stream_seq >= sequence

        wait_until(acked, f"event {sequence} acked")

    def queued(self) -> list[list[Any]]:
        """The arguments ``(key, sequence, action)`` of every queued task."""
        tasks = queued_tasks(self.redis)
        assert all(t["headers"]["task"] == V2_EVENT_TASK_NAME for t in tasks)
        return [list(t["body"][0]) for t in tasks]

    def echoes_counted(self, object_type: str) -> float:
        value = self.bridge.metrics.registry.get_sample_value(
            "v1sync_bridge_v2_echoes_skipped_total", {"object_type": object_type}
        )
        return value or 0.0


@pytest.fixture
def echo_stack(
    nats_server: NatsServer, redis_server: ValkeyServer, sync_nats: SyncNats
) -> Iterator[EchoStack]:
    sync_nats.run(ensure_bucket(sync_nats.js, STATE))
    settings = settings_for(nats_server, redis_server, sync_v2_to_v1=True)
    client = redis.Redis.from_url(redis_server.url)
    with BackgroundBridge(settings, tuning=LoopTuning(batch_size=100)) as bridge:
        yield EchoStack(sync_nats, client, bridge)
    client.close()


def test_an_echo_is_settled_skipped_at_its_sequence_without_a_task(echo_stack: EchoStack) -> None:
    uid = str(uuid.uuid4())
    data = committee_data(uid, "Echoed")
    v1_key = echo_stack.map_committee(uid)
    echo_stack.put_state(SyncState(v1_key, fingerprint=committee_fingerprint(data)))
    sequence = echo_stack.publish("committee", "updated", uid, data)
    echo_stack.wait_acked(sequence)
    state = echo_stack.state(f"v2.committee.{uid}")
    assert (state.revision, state.outcome, state.epoch) == (sequence, "skipped", REVERSE_EPOCH)
    assert state.uid == uid
    assert state.lease is None
    assert echo_stack.queued() == []
    assert echo_stack.echoes_counted("committee") == 1


def test_a_member_echo_is_settled_too(echo_stack: EchoStack) -> None:
    uid, committee_uid = str(uuid.uuid4()), str(uuid.uuid4())
    data = {"uid": uid, "committee_uid": committee_uid, "email": "m@example.org"}
    sfid = "a0" + uuid.uuid4().hex[:16]
    echo_stack.nats.kv_put(MAPPINGS, f"committee_member.uid.{uid}", sfid.encode())
    v1_key = f"platform-community__c.{sfid}"
    echo_stack.put_state(SyncState(v1_key, fingerprint=member_fingerprint(data)))
    sequence = echo_stack.publish("committee_member", "created", uid, data)
    echo_stack.wait_acked(sequence)
    state = echo_stack.state(f"v2.committee_member.{uid}")
    assert (state.revision, state.outcome, state.uid) == (sequence, "skipped", committee_uid)
    assert echo_stack.queued() == []
    assert echo_stack.echoes_counted("committee_member") == 1


def test_a_persons_edit_is_enqueued(echo_stack: EchoStack) -> None:
    uid = str(uuid.uuid4())
    v1_key = echo_stack.map_committee(uid)
    recorded = committee_fingerprint(committee_data(uid, "Before"))
    echo_stack.put_state(SyncState(v1_key, fingerprint=recorded))
    sequence = echo_stack.publish("committee", "updated", uid, committee_data(uid, "After"))
    echo_stack.wait_acked(sequence)
    assert echo_stack.queued() == [[f"v2.committee.{uid}", sequence, "updated"]]
    assert echo_stack.state(f"v2.committee.{uid}").revision == -1
    assert echo_stack.echoes_counted("committee") == 0


def test_an_unmapped_or_tombstoned_object_is_enqueued(echo_stack: EchoStack) -> None:
    unmapped, tombstoned = str(uuid.uuid4()), str(uuid.uuid4())
    echo_stack.nats.kv_put(MAPPINGS, f"committee.uid.{tombstoned}", b"!del")
    first = echo_stack.publish("committee", "created", unmapped, committee_data(unmapped, "A"))
    second = echo_stack.publish("committee", "updated", tombstoned, committee_data(tombstoned, "B"))
    echo_stack.wait_acked(second)
    assert echo_stack.queued() == [
        [f"v2.committee.{unmapped}", first, "created"],
        [f"v2.committee.{tombstoned}", second, "updated"],
    ]


def test_a_delete_is_enqueued(echo_stack: EchoStack) -> None:
    uid = str(uuid.uuid4())
    echo_stack.map_committee(uid)
    sequence = echo_stack.publish("committee", "deleted", uid, {"uid": uid})
    echo_stack.wait_acked(sequence)
    assert echo_stack.queued() == [[f"v2.committee.{uid}", sequence, "deleted"]]


@pytest.mark.parametrize("leased", ["v2_key", "v1_key"])
def test_an_echo_of_an_object_whose_key_has_a_live_lease_is_enqueued(
    echo_stack: EchoStack, leased: str
) -> None:
    uid = str(uuid.uuid4())
    data = committee_data(uid, "Leased")
    v1_key = echo_stack.map_committee(uid)
    lease = KeyLease("someone", time.time() + LEASE_SECONDS)
    v1_state = SyncState(v1_key, fingerprint=committee_fingerprint(data))
    if leased == "v1_key":
        v1_state = replace(v1_state, lease=lease)
    else:
        echo_stack.put_state(SyncState(f"v2.committee.{uid}", lease=lease))
    echo_stack.put_state(v1_state)
    sequence = echo_stack.publish("committee", "updated", uid, data)
    echo_stack.wait_acked(sequence)
    assert echo_stack.queued() == [[f"v2.committee.{uid}", sequence, "updated"]]
    assert echo_stack.state(f"v2.committee.{uid}").revision == -1


def test_an_event_already_settled_or_older_is_enqueued(echo_stack: EchoStack) -> None:
    """The worker decides ``unchanged``/``superseded``: the bridge never settles below."""
    uid = str(uuid.uuid4())
    data = committee_data(uid, "Old")
    v1_key = echo_stack.map_committee(uid)
    echo_stack.put_state(SyncState(v1_key, fingerprint=committee_fingerprint(data)))
    newer = SyncState(
        f"v2.committee.{uid}", revision=10_000, outcome="updated", epoch=REVERSE_EPOCH
    )
    echo_stack.put_state(newer)
    sequence = echo_stack.publish("committee", "updated", uid, data)
    echo_stack.wait_acked(sequence)
    assert echo_stack.queued() == [[f"v2.committee.{uid}", sequence, "updated"]]
    assert echo_stack.state(f"v2.committee.{uid}") == newer


@dataclass
class FakeMsg:
    subject: str
    data: bytes


def test_a_state_changed_between_the_read_and_the_write_is_enqueued(
    sync_nats: SyncNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that takes the object's lease after the bridge read its state makes the
    compare-and-set fail: the event is enqueued and the worker's state stays."""
    sync_nats.run(ensure_bucket(sync_nats.js, STATE))
    uid = str(uuid.uuid4())
    key = f"v2.committee.{uid}"
    data = committee_data(uid, "Raced")
    sfid = "a0" + uuid.uuid4().hex[:16]
    sync_nats.kv_put(MAPPINGS, f"committee.uid.{uid}", sfid.encode())
    v1_key = f"platform-collaboration__c.{sfid}"
    sync_nats.kv_put(
        STATE, v1_key, SyncState(v1_key, fingerprint=committee_fingerprint(data)).to_bytes()
    )
    leased = SyncState(key, lease=KeyLease("worker", time.time() + LEASE_SECONDS))
    real_read = v2_echoes.read_state

    async def read_then_worker_takes_the_lease(kv: Any, wanted: str) -> tuple[SyncState, int]:
        read = await real_read(kv, wanted)
        if wanted == key:
            await kv.put(key, leased.to_bytes())
        return read

    monkeypatch.setattr(v2_echoes, "read_state", read_then_worker_takes_the_lease)
    echoes = V2EchoFilter(sync_nats.js, MAPPINGS, STATE, BridgeMetrics())
    change = KvChange(key, 5, "updated")
    msg = FakeMsg("lfx.committee.updated", envelope("committee", "updated", uid, data))

    async def settle() -> list[bool]:
        return await echoes.settle([(change, msg)])  # type: ignore[list-item]

    assert sync_nats.run(settle()) == [False]
    state = SyncState.from_bytes(sync_nats.kv_get(STATE, key).value, key)
    assert state == leased


def test_a_failing_check_enqueues(sync_nats: SyncNats) -> None:
    """The state bucket missing (a read fails): the worker decides."""
    uid = str(uuid.uuid4())
    echoes = V2EchoFilter(sync_nats.js, MAPPINGS, "no-such-bucket", BridgeMetrics())
    change = KvChange(f"v2.committee.{uid}", 5, "updated")
    data = committee_data(uid, "Failing")
    msg = FakeMsg("lfx.committee.updated", envelope("committee", "updated", uid, data))

    async def settle() -> list[bool]:
        return await echoes.settle([(change, msg)])  # type: ignore[list-item]

    assert sync_nats.run(settle()) == [False]


def _settle_directly(sync_nats: SyncNats, uid: str, data: dict[str, Any]) -> list[bool]:
    echoes = V2EchoFilter(sync_nats.js, MAPPINGS, STATE, BridgeMetrics())
    change = KvChange(f"v2.committee.{uid}", 50, "updated")
    msg = FakeMsg("lfx.committee.updated", envelope("committee", "updated", uid, data))

    async def settle() -> list[bool]:
        return await echoes.settle([(change, msg)])  # type: ignore[list-item]

    return sync_nats.run(settle())


@pytest.mark.parametrize(
    "unfinished",
    [
        {"pending": PendingRun(RunState.RETRY, 40, 1.0, due=2.0)},
        {"intent": 40, "intent_at": 1.0},
        {"moving_from": MemberMove("a0" + "x" * 16, "c-new", "a0" + "y" * 16, "a0" + "z" * 16)},
        {"revision": 40, "outcome": "dead_lettered"},
    ],
    ids=["pending_run", "create_intent", "member_move", "dead_letter"],
)
def test_an_echo_of_an_object_with_unfinished_work_is_left_to_the_worker(
    sync_nats: SyncNats, unfinished: dict[str, Any]
) -> None:
    """A pending retry, a V1 create sent, a move half done or a dead letter: the run
    has more to do than record the echo, so the bridge does not settle it."""
    sync_nats.run(ensure_bucket(sync_nats.js, STATE))
    uid = str(uuid.uuid4())
    data = committee_data(uid, "Unfinished")
    sfid = "a0" + uuid.uuid4().hex[:16]
    sync_nats.kv_put(MAPPINGS, f"committee.uid.{uid}", sfid.encode())
    v1_key = f"platform-collaboration__c.{sfid}"
    agreed = SyncState(v1_key, fingerprint=committee_fingerprint(data))
    sync_nats.kv_put(STATE, v1_key, agreed.to_bytes())
    key = f"v2.committee.{uid}"
    state = SyncState(key, epoch=REVERSE_EPOCH, **unfinished)
    sync_nats.kv_put(STATE, key, state.to_bytes())
    assert _settle_directly(sync_nats, uid, data) == [False]
    assert SyncState.from_bytes(sync_nats.kv_get(STATE, key).value, key) == state
    # The same object without the unfinished work: an echo the bridge settles.
    sync_nats.kv_put(STATE, key, SyncState(key, epoch=REVERSE_EPOCH).to_bytes())
    assert _settle_directly(sync_nats, uid, data) == [True]


def test_an_echo_whose_forward_run_ends_within_the_recheck_window_is_settled(
    sync_nats: SyncNats,
) -> None:
    """V2 publishes the event while the forward run holds the V1 key's lease; the bridge
    looks again and settles it once the run recorded its fingerprint and let go."""
    sync_nats.run(ensure_bucket(sync_nats.js, STATE))
    uid = str(uuid.uuid4())
    data = committee_data(uid, "Rechecked")
    sfid = "a0" + uuid.uuid4().hex[:16]
    sync_nats.kv_put(MAPPINGS, f"committee.uid.{uid}", sfid.encode())
    v1_key = f"platform-collaboration__c.{sfid}"
    running = SyncState(v1_key, lease=KeyLease("forward", time.time() + LEASE_SECONDS))
    sync_nats.kv_put(STATE, v1_key, running.to_bytes())
    echoes = V2EchoFilter(sync_nats.js, MAPPINGS, STATE, BridgeMetrics())
    change = KvChange(f"v2.committee.{uid}", 50, "updated")
    msg = FakeMsg("lfx.committee.updated", envelope("committee", "updated", uid, data))
    finished = SyncState(v1_key, fingerprint=committee_fingerprint(data)).to_bytes()

    async def forward_run_finishes_meanwhile() -> list[bool]:
        deciding = asyncio.ensure_future(echoes.settle([(change, msg)]))  # type: ignore[list-item]
        await asyncio.sleep(v2_echoes.RECHECK_SECONDS * 3)
        assert not deciding.done()  # still looking while the lease is live
        await (await sync_nats.js.key_value(STATE)).put(v1_key, finished)
        return await deciding

    assert sync_nats.run(forward_run_finishes_meanwhile()) == [True]
