"""The sandbox's committee fakes publish the V2 indexer's events, as the real indexer does.

Real nats-server: after each committee or member write through the API the
sandbox publishes ``lfx.committee.*`` / ``lfx.committee_member.*`` on core
NATS with the envelope of ``reverse-sync.md`` (principals from the request's
JWT); the events parse with the direction's own parser and the stream of
the V2 events captures them. Without ``publish_indexer_events`` nothing is
published.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from sandbox.servers import NatsServer
from sandbox.service import Sandbox
from sandbox.v2_edits import COMMITTEE_READ_ONLY, MEMBER_READ_ONLY
from sync_core.indexer_events import V2Action, V2Event, V2ObjectType, parse_v2_event
from sync_core.nats_client import SyncNats
from sync_core.v2_events import V2EventCapture, ensure_v2_event_capture
from tasks.clients.identity import Identity
from tasks.clients.tokens import TokenMinter
from tasks.clients.v2 import V2Service
from tasks.kinds.committees import COMMITTEE_AUDIENCE

KID = "sandbox-kid"
TIMEOUT = 5.0
# How long an empty subscription queue is waited on before it counts as empty.
QUEUE_EMPTY_WAIT = 0.2
USER = Identity(principal="jdoe", sub="jdoe", email="jdoe@example.org", on_behalf_of="jdoe")
CAPTURE = V2EventCapture(
    stream="committee_events",
    subjects=("lfx.committee.>", "lfx.committee_member.>"),
    max_age=3600.0,
    consumer="v2-events",
)


class Listener:
    """Every message on ``lfx.>`` as core NATS delivers it."""

    def __init__(self, sync_nats: SyncNats) -> None:
        self.sync_nats = sync_nats
        self.received: list[Msg] = []
        self._subscription = sync_nats.run(sync_nats.nc.subscribe("lfx.>"))
        sync_nats.run(sync_nats.nc.flush())

    def events(self) -> list[V2Event]:
        """What arrived so far, parsed.

        The sandbox publishes (and flushes) before it answers, so after one
        round trip of ours every event is in this subscription's queue.
        """
        self.sync_nats.run(self.sync_nats.nc.flush())

        async def drain() -> None:
            while True:
                try:
                    self.received.append(await self._subscription.next_msg(QUEUE_EMPTY_WAIT))
                except NatsTimeoutError:
                    return

        self.sync_nats.run(drain())
        parsed = [parse_v2_event(m.data, m.subject) for m in self.received]
        assert all(isinstance(p, V2Event) for p in parsed), parsed
        return [p for p in parsed if isinstance(p, V2Event)]


def start_sandbox(nats: NatsServer, key: RSAPrivateKey, publish: bool) -> Sandbox:
    sandbox = Sandbox(
        heimdall_keys={KID: key.public_key()},
        auth0_clients={},
        nats_url=nats.url,
        publish_indexer_events=publish,
    )
    sandbox.start()
    return sandbox


@pytest.fixture
def committees(
    buckets: NatsServer, heimdall_key: RSAPrivateKey
) -> Iterator[tuple[Sandbox, V2Service]]:
    sandbox = start_sandbox(buckets, heimdall_key, publish=True)
    minter = TokenMinter(heimdall_key, key_id=None, jwks_url=sandbox.env()["HEIMDALL_JWKS_URL"])
    service = V2Service(
        sandbox.url, "committees", COMMITTEE_AUDIENCE, minter, timeout=TIMEOUT, service="committee"
    )
    try:
        yield sandbox, service
    finally:
        service.close()
        sandbox.stop()


def editable(record: dict[str, Any], *read_only: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in read_only}


def test_each_committee_and_member_write_publishes_its_indexer_event(
    committees: tuple[Sandbox, V2Service], sync_nats: SyncNats
) -> None:
    sandbox, service = committees
    listener = Listener(sync_nats)
    project_uid = sandbox.add_project("Alpha", "alpha")
    committee = service.create(
        {"name": "Board", "category": "Board", "project_uid": project_uid},
        USER,
    )
    uid = committee["uid"]
    current = service.get(uid, USER)
    service.update(
        uid,
        {**editable(current.record, *COMMITTEE_READ_ONLY), "description": "d"},
        current.etag,
        USER,
    )
    members = service.collection_under(uid, "members")
    member = members.create({"email": "jane@example.com", "role": {"name": "Chair"}}, USER)
    got = members.get(member["uid"], USER)
    members.update(
        member["uid"],
        {**editable(got.record, *MEMBER_READ_ONLY), "job_title": "CTO"},
        got.etag,
        USER,
    )
    members.delete(member["uid"], members.get(member["uid"], USER).etag, USER)
    service.delete(uid, service.get(uid, USER).etag, USER)

    events = listener.events()
    assert [(e.object_type, e.action) for e in events] == [
        (V2ObjectType.COMMITTEE, V2Action.CREATED),
        (V2ObjectType.COMMITTEE, V2Action.UPDATED),
        (V2ObjectType.COMMITTEE_MEMBER, V2Action.CREATED),
        (V2ObjectType.COMMITTEE_MEMBER, V2Action.UPDATED),
        (V2ObjectType.COMMITTEE_MEMBER, V2Action.DELETED),
        (V2ObjectType.COMMITTEE, V2Action.DELETED),
    ]
    created, updated, member_created, member_updated, member_deleted, deleted = events
    assert created.object_id == uid
    assert (created.data["name"], created.data["category"]) == ("Board", "Board")
    assert created.parent_refs == (f"project:{project_uid}",)
    assert updated.data["description"] == "d"
    assert member_created.data["role"]["name"] == "Chair"
    assert member_created.parent_refs == (f"committee:{uid}",)
    assert member_updated.data["job_title"] == "CTO"
    assert (member_deleted.data, deleted.data) == ({}, {})
    # The principals are the request's JWT principal.
    assert {e.principals for e in events} == {("jdoe",)}


CAPTURE_WAIT_SECONDS = 5.0


def test_the_stream_captures_what_the_sandbox_publishes(
    committees: tuple[Sandbox, V2Service], sync_nats: SyncNats
) -> None:
    sandbox, service = committees
    sync_nats.run(ensure_v2_event_capture(sync_nats.js, CAPTURE))
    project_uid = sandbox.add_project("Alpha", "alpha")
    service.create({"name": "Board", "category": "Board", "project_uid": project_uid}, USER)
    # JetStream stores a core NATS message a moment after the publisher flushed it.
    deadline = time.monotonic() + CAPTURE_WAIT_SECONDS
    messages = 0
    while time.monotonic() < deadline:
        messages = sync_nats.run(sync_nats.js.stream_info(CAPTURE.stream)).state.messages
        if messages:
            break
        time.sleep(0.02)
    assert messages == 1


def test_without_the_flag_no_event_is_published(
    buckets: NatsServer, heimdall_key: RSAPrivateKey, sync_nats: SyncNats
) -> None:
    listener = Listener(sync_nats)
    sandbox = start_sandbox(buckets, heimdall_key, publish=False)
    minter = TokenMinter(heimdall_key, key_id=None, jwks_url=sandbox.env()["HEIMDALL_JWKS_URL"])
    service = V2Service(
        sandbox.url, "committees", COMMITTEE_AUDIENCE, minter, timeout=TIMEOUT, service="committee"
    )
    try:
        project_uid = sandbox.add_project("Alpha", "alpha")
        service.create({"name": "Board", "category": "Board", "project_uid": project_uid}, USER)
    finally:
        service.close()
        sandbox.stop()
    assert listener.events() == []
    assert json.dumps([m.subject for m in listener.received]) == "[]"
