"""The phased sample loader: a phase is written only once the keys before it settled.

Real nats-server; the workers are played by writing the durable sync state
(``StateStore.finish``) by hand, so the test decides when a key settles.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError, NotFoundError

from sandbox.sample_loader import PhaseNotSettled, load_in_phases, wait_until_settled
from sandbox.samples import SampleRecord, encode
from sandbox.servers import NatsServer
from sync_core.nats_client import SyncNats, connect
from sync_core.sync_state import DEFAULT_STATE_BUCKET
from tasks.stores.sync_state import StateStore

OBJECTS = "v1-objects"
A = "salesforce-project__c.a0941000002AAAAAAA"
B = "platform-collaboration__c.5e6e0bc4-69df-4aeb-9e7d-8e743b6c5763"
OTHER = "salesforce-account.0014100000ABCDEFGH"  # not synced: never waited for
DEADLINE = 15.0


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def put(key: str, value: dict[str, Any], phase: int = 1) -> SampleRecord:
    return SampleRecord(key, "json", value, "PUT", phase)


@pytest.fixture
def state(sync_nats: SyncNats) -> StateStore:
    return StateStore(sync_nats, DEFAULT_STATE_BUCKET)


class LoaderThread:
    """``load_in_phases`` in a thread, recording the phases it reports."""

    def __init__(self, url: str, phases: list[list[SampleRecord]]) -> None:
        self.written: list[str] = []
        self.result: int | BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(url, phases), daemon=True)

    def _run(self, url: str, phases: list[list[SampleRecord]]) -> None:
        try:
            self.result = asyncio.run(
                load_in_phases(url, OBJECTS, phase_timeout=DEADLINE, phases=phases, say=self.say)
            )
        except BaseException as error:
            self.result = error

    def say(self, text: str) -> None:
        self.written.append(text)


@pytest.fixture
def loader_of(buckets: NatsServer) -> Iterator[Callable[[list[list[SampleRecord]]], LoaderThread]]:
    started: list[LoaderThread] = []

    def start(phases: list[list[SampleRecord]]) -> LoaderThread:
        loader = LoaderThread(buckets.url, phases)
        loader.thread.start()
        started.append(loader)
        return loader

    yield start
    for loader in started:
        loader.thread.join(DEADLINE + 5)


def last_message(sync_nats: SyncNats, key: str) -> tuple[int, str | None]:
    """(revision, KV-Operation header or None for a put) of the key's latest entry."""

    async def read() -> tuple[int, str | None]:
        js = sync_nats.live().jetstream()
        message = await js.get_last_msg(f"KV_{OBJECTS}", f"$KV.{OBJECTS}.{key}")
        return message.seq, (message.headers or {}).get("KV-Operation")

    return sync_nats.run(read())


def test_each_phase_waits_until_every_synced_key_before_it_settled(
    sync_nats: SyncNats, state: StateStore, loader_of: Callable[..., LoaderThread]
) -> None:
    first = [put(A, {"sfid": "a"}), put(B, {"sfid": "b"}), put(OTHER, {"sfid": "o"})]
    deletes = [
        SampleRecord(A, None, None, "DEL", 2),
        SampleRecord(B, None, None, "PURGE", 2),
    ]
    reput = [put(A, {"sfid": "a", "again": True}, 3)]
    loader = loader_of([first, deletes, reput])
    wait_for(lambda: len(loader.written) == 1, "phase 1")
    revision_a, operation = last_message(sync_nats, A)
    assert operation is None
    revision_b, _ = last_message(sync_nats, B)
    # Only A settles: the deletes must not be written while B has no terminal outcome.
    state.finish(A, revision_a, "created", time.time(), "uid-a", None, epoch=1)
    with pytest.raises(PhaseNotSettled, match=B):
        sync_nats.run(
            wait_until_settled(
                sync_nats.kv(DEFAULT_STATE_BUCKET), {A: revision_a, B: revision_b}, 0.6
            )
        )
    assert last_message(sync_nats, A) == (revision_a, None)
    assert len(loader.written) == 1
    # B settles (a dead letter counts: it is terminal): phase 2 goes out, as KV deletes.
    state.finish(B, revision_b, "dead_lettered", time.time(), None, None, epoch=1)
    wait_for(lambda: len(loader.written) == 2, "phase 2")
    deleted_at, operation = last_message(sync_nats, A)
    assert operation == "DEL"
    purged_at, operation = last_message(sync_nats, B)
    assert operation == "PURGE"
    with pytest.raises(KeyNotFoundError):
        sync_nats.run(sync_nats.kv(OBJECTS).get(A))
    assert len(loader.written) == 2  # the re-put waits for the delete's own revision
    state.finish(A, deleted_at, "deleted", time.time(), None, None, epoch=1)
    state.finish(B, purged_at, "skipped", time.time(), None, None, epoch=1)
    wait_for(lambda: len(loader.written) == 3, "phase 3")
    loader.thread.join(DEADLINE)
    assert loader.result == 6
    entry = sync_nats.run(sync_nats.kv(OBJECTS).get(A))
    assert entry.value == encode(reput[0])


def test_a_phase_that_never_settles_ends_the_load_with_an_error(
    buckets: NatsServer, sync_nats: SyncNats
) -> None:
    phases = [[put(A, {"sfid": "a"})], [SampleRecord(A, None, None, "DEL", 2)]]

    async def load() -> int:
        return await load_in_phases(buckets.url, OBJECTS, phase_timeout=0.5, phases=phases)

    with pytest.raises(PhaseNotSettled, match=A):
        asyncio.run(load())
    assert last_message(sync_nats, A)[1] is None  # the delete was never written


def test_the_loader_never_creates_the_state_bucket(nats_server: NatsServer) -> None:
    async def only_objects() -> None:
        nc = await connect(nats_server.url, "test")
        await nc.jetstream().create_key_value(bucket=OBJECTS, history=20)
        await nc.close()

    asyncio.run(only_objects())
    phases = [[put(A, {"sfid": "a"})], [SampleRecord(A, None, None, "DEL", 2)]]
    with pytest.raises(PhaseNotSettled, match="no bucket"):
        asyncio.run(load_in_phases(nats_server.url, OBJECTS, phase_timeout=0.5, phases=phases))


def test_settle_last_returns_only_once_the_last_phase_settled(
    buckets: NatsServer, sync_nats: SyncNats, state: StateStore
) -> None:
    """What the dev stack's V2 edits wait for: every forward write done, the last phase's too."""
    phases = [[put(A, {"sfid": "a"})], [put(B, {"sfid": "b"}, 2)]]

    async def load() -> int:
        return await load_in_phases(
            buckets.url, OBJECTS, phase_timeout=DEADLINE, phases=phases, settle_last=True
        )

    done: list[int | BaseException] = []

    def run() -> None:
        try:
            done.append(asyncio.run(load()))
        except BaseException as error:
            done.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    revision_a = wait_for(lambda: last_message_or_none(sync_nats, A), "phase 1")
    state.finish(A, revision_a, "created", time.time(), "uid-a", None, epoch=1)
    revision_b = wait_for(lambda: last_message_or_none(sync_nats, B), "phase 2")
    # Phase 2 is written, not settled: the load has not returned.
    with pytest.raises(PhaseNotSettled, match=B):
        sync_nats.run(wait_until_settled(sync_nats.kv(DEFAULT_STATE_BUCKET), {B: revision_b}, 0.6))
    assert done == []
    state.finish(B, revision_b, "created", time.time(), "uid-b", None, epoch=1)
    thread.join(DEADLINE)
    assert done == [2]


def last_message_or_none(sync_nats: SyncNats, key: str) -> int | None:
    """The revision of the key's latest entry, None before it has one."""
    try:
        return last_message(sync_nats, key)[0]
    except NotFoundError:
        return None
