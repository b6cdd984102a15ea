"""``LeanKeyValue`` answers exactly as nats-py's ``KeyValue`` (real nats-server).

Every case runs the same calls through both handles of the same bucket and
compares results and exception types, so a drift of either side shows here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import pytest
from nats.js.api import KeyValueConfig
from nats.js.errors import (
    InvalidKeyError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from sandbox.servers import NatsServer
from sync_core.nats_client import SyncNats, connect
from sync_core.nats_kv import LeanKeyValue, ReplyInbox

BUCKET = "lean-test"
Call = Callable[[KeyValue], Awaitable[Any]]


async def outcome(call: Call, kv: KeyValue) -> tuple[str, Any]:
    """What ``call`` did on ``kv``: ("ok", a comparable result) or ("error", the exception type)."""
    try:
        result = await call(kv)
    except Exception as error:
        return "error", type(error)
    if isinstance(result, KeyValue.Entry):
        return "ok", (result.key, result.value, result.revision)
    return "ok", result


def run_both(
    server: NatsServer, steps: list[tuple[Call, Call | None]], direct: bool = False
) -> list[tuple[Any, Any]]:
    """Run each step's call through nats-py, then the same through the lean handle.

    A step's second call, when given, undoes what the first did (so both
    handles start from the same state); results are returned in pairs.
    """

    async def scenario() -> list[tuple[Any, Any]]:
        nc = await connect(server.url, "lean-test")
        try:
            js = nc.jetstream()
            config = KeyValueConfig(bucket=BUCKET, history=5, direct=direct)
            plain = await js.create_key_value(config)
            lean = LeanKeyValue(plain, ReplyInbox(nc))
            pairs = []
            for call, undo in steps:
                first = await outcome(call, plain)
                if undo is not None:
                    await undo(plain)
                pairs.append((first, await outcome(call, lean)))
            return pairs
        finally:
            await nc.close()

    return asyncio.run(scenario())


@pytest.mark.parametrize("direct", [False, True], ids=["msg-get", "direct-get"])
def test_reads_match_nats_py(nats_server: NatsServer, direct: bool) -> None:
    async def put_a(kv: KeyValue) -> Any:
        return await kv.put("a", b"one")

    async def delete_b(kv: KeyValue) -> Any:
        await kv.put("b", b"x")
        return await kv.delete("b")

    async def purge_c(kv: KeyValue) -> Any:
        await kv.put("c", b"x")
        return await kv.purge("c")

    async def empty_d(kv: KeyValue) -> Any:
        return await kv.put("d", b"")

    setup = [(put_a, None), (delete_b, None), (purge_c, None), (empty_d, None)]
    reads: list[tuple[Call, Call | None]] = [
        (lambda kv, key=key: kv.get(key), None) for key in ("a", "b", "c", "d", "missing", "a.b")
    ]
    reads.append((lambda kv: kv.get("a", revision=1), None))
    pairs = run_both(nats_server, setup + reads, direct=direct)
    for plain, lean in pairs[len(setup) :]:
        assert plain == lean
    # The cases are the ones meant: a value, two deleted keys, an empty value, absent keys.
    results = [plain for plain, _ in pairs[len(setup) :]]
    assert results[0][0] == "ok"
    assert results[0][1][1] == b"one"
    assert results[1] == results[2] == results[4] == results[5] == ("error", KeyNotFoundError)
    assert results[3][0] == "ok"
    assert not results[3][1][1]


def test_writes_match_nats_py(nats_server: NatsServer) -> None:
    def purge(key: str) -> Call:
        async def undo(kv: KeyValue) -> Any:
            return await kv.purge(key)

        return undo

    async def create_new(kv: KeyValue) -> Any:
        return type(await kv.create("fresh", b"1"))

    async def create_existing(kv: KeyValue) -> Any:
        await kv.put("taken", b"1")
        return await kv.create("taken", b"2")

    async def create_after_delete(kv: KeyValue) -> Any:
        await kv.put("gone", b"1")
        await kv.delete("gone")
        await kv.create("gone", b"2")
        return (await kv.get("gone")).value

    async def update_right(kv: KeyValue) -> Any:
        revision = await kv.put("u", b"1")
        updated = await kv.update("u", b"2", last=revision)
        return updated - revision, (await kv.get("u")).value

    async def update_wrong(kv: KeyValue) -> Any:
        revision = await kv.put("w", b"1")
        return await kv.update("w", b"2", last=revision - 1)

    async def put_revision_grows(kv: KeyValue) -> Any:
        first = await kv.put("p", b"1")
        second = await kv.put("p", b"2")
        return second > first

    async def bad_key(kv: KeyValue) -> Any:
        return await kv.put("a b", b"1")

    pairs = run_both(
        nats_server,
        [
            (create_new, purge("fresh")),
            (create_existing, purge("taken")),
            (create_after_delete, purge("gone")),
            (update_right, purge("u")),
            (update_wrong, purge("w")),
            (put_revision_grows, None),
            (bad_key, None),
        ],
    )
    for plain, lean in pairs:
        assert plain == lean
    assert [plain for plain, _ in pairs] == [
        ("ok", int),
        ("error", KeyWrongLastSequenceError),
        ("ok", b"2"),
        ("ok", (1, b"2")),
        ("error", KeyWrongLastSequenceError),
        ("ok", True),
        ("error", InvalidKeyError),
    ]


def test_random_operations_read_back_the_same(nats_server: NatsServer) -> None:
    """Seeded puts, deletes and compare-and-sets through the lean handle read as nats-py's."""
    rng = random.Random(7)

    async def scenario() -> None:
        nc = await connect(nats_server.url, "lean-random")
        try:
            plain = await nc.jetstream().create_key_value(KeyValueConfig(bucket=BUCKET))
            lean = LeanKeyValue(plain, ReplyInbox(nc))
            keys = [f"k.{n}" for n in range(6)]
            for _ in range(200):
                key = rng.choice(keys)
                action = rng.choice(("put", "delete", "update"))
                if action == "put":
                    await lean.put(key, str(rng.random()).encode())
                elif action == "delete":
                    await plain.delete(key)
                else:
                    try:
                        current = await lean.get(key)
                    except KeyNotFoundError:
                        continue
                    await lean.update(key, b"cas", last=current.revision)
                for probe in keys:
                    assert await outcome(lambda kv, p=probe: kv.get(p), lean) == await outcome(
                        lambda kv, p=probe: kv.get(p), plain
                    )
        finally:
            await nc.close()

    asyncio.run(scenario())


def test_missing_stream_and_timeouts_raise_like_nats_py(nats_server: NatsServer) -> None:
    async def scenario() -> None:
        nc = await connect(nats_server.url, "lean-errors")
        try:
            plain = await nc.jetstream().create_key_value(KeyValueConfig(bucket=BUCKET))
            await nc.jetstream().delete_key_value(BUCKET)
            lean = LeanKeyValue(plain, ReplyInbox(nc))
            # The stream is gone: nobody answers the subject of a put.
            with pytest.raises(NoStreamResponseError):
                await plain.put("a", b"1")
            with pytest.raises(NoStreamResponseError):
                await lean.put("a", b"1")
            # A read of a missing stream is the API's own 404 (no such stream).
            with pytest.raises(NotFoundError):
                await plain.get("a")
            with pytest.raises(NotFoundError):
                await lean.get("a")
            # Someone subscribed who never answers: a timeout, not a hang.
            await nc.subscribe("silent.subject", cb=_ignore)
            inbox = ReplyInbox(nc)
            with pytest.raises(nats.errors.TimeoutError):
                await inbox.request("silent.subject", b"", timeout=0.2)
        finally:
            await nc.close()

    asyncio.run(scenario())


async def _ignore(_: Any) -> None:
    return None


def test_sync_nats_hands_out_lean_handles(sync_nats: SyncNats) -> None:
    from tests.conftest import MAPPINGS_BUCKET

    kv = sync_nats.kv(MAPPINGS_BUCKET)
    assert isinstance(kv, LeanKeyValue)
    revision = sync_nats.kv_put(MAPPINGS_BUCKET, "project.sfid.x", b"uid-1")
    entry = sync_nats.kv_get(MAPPINGS_BUCKET, "project.sfid.x")
    assert entry is not None
    assert entry.value == b"uid-1"
    assert entry.revision == revision
    assert sync_nats.kv_get(MAPPINGS_BUCKET, "project.sfid.absent") is None


def test_has_any_sees_values_and_delete_markers_under_a_filter(nats_server: NatsServer) -> None:
    async def scenario() -> list[bool]:
        nc = await connect(nats_server.url, "lean-has-any")
        try:
            plain = await nc.jetstream().create_key_value(KeyValueConfig(bucket=BUCKET))
            lean = LeanKeyValue(plain, ReplyInbox(nc))
            await plain.put("parked.p.one.child", b"1")
            await plain.put("parked.p.two.child", b"1")
            await plain.delete("parked.p.two.child")
            return [
                await lean.has_any("parked.p.one.>"),
                await lean.has_any("parked.p.two.>"),  # only a delete marker left
                await lean.has_any("parked.p.three.>"),
                await lean.has_any("parked.>"),
            ]
        finally:
            await nc.close()

    assert asyncio.run(scenario()) == [True, True, False, True]


@pytest.mark.parametrize("direct", [False, True], ids=["msg-get", "direct-get"])
def test_entries_carry_their_write_time(nats_server: NatsServer, direct: bool) -> None:
    # The worker's sync-lag histogram starts at Entry.created (nats-py's get leaves it None).
    from datetime import UTC, datetime, timedelta

    async def scenario() -> tuple[datetime, datetime, list[Any]]:
        nc = await connect(nats_server.url, "lean-test")
        try:
            js = nc.jetstream()
            config = KeyValueConfig(bucket=BUCKET, history=5, direct=direct)
            lean = LeanKeyValue(await js.create_key_value(config), ReplyInbox(nc))
            before = datetime.now(UTC)
            revision = await lean.put("timed", b"1")
            after = datetime.now(UTC)
            latest = await lean.get("timed")
            at_revision = await lean.get("timed", revision=revision)
            return before, after, [latest.created, at_revision.created]
        finally:
            await nc.close()

    before, after, created = asyncio.run(scenario())
    # One machine, one clock: the server stamps the write between the two reads.
    slack = timedelta(milliseconds=5)
    for stamp in created:
        assert isinstance(stamp, datetime)
        assert before - slack <= stamp <= after + slack


def test_stored_time_reads_rfc3339_nanoseconds() -> None:
    from datetime import UTC, datetime

    from sync_core.nats_kv import _stored_time

    assert _stored_time("2026-12-06T23:59:01.123456789Z") == datetime(
        2026, 12, 6, 23, 59, 1, 123456, tzinfo=UTC
    )
    assert _stored_time("2026-12-06T23:59:01Z") == datetime(2026, 12, 6, 23, 59, 1, tzinfo=UTC)
    assert _stored_time("2026-12-06T23:59:01.5+01:00") == datetime(
        2026, 12, 6, 22, 59, 1, 500000, tzinfo=UTC
    )
    assert _stored_time(None) is None
    assert _stored_time("yesterday") is None
