"""A dry-run ``Runtime``: the task's own code runs, every read is real, no write is made.

``explain`` runs ``tasks.run.sync.run_sync`` on this runtime, so what it
reports is what the task does, by construction. Each port of the runtime that
can write is swapped for one that records the write instead and answers as
the real one would:

- NATS KV (``DryRunNats``): every bucket handle is a ``DryRunBucket``. Reads go
  to the server; writes (put, create, update, delete, purge) go into an
  overlay that later reads of the same run see, with the compare-and-set rules
  of JetStream. So the mappings, the sync state (the key's lease included),
  the parked index and the dead letters run their own code unchanged.
- Redis (``DryRunRedis``): read commands go to the server, every other command
  is recorded; a Lua script that decides something (the delete budget) is
  answered by its read-only twin.
- V2 (``DryRunV2Service``): GETs are sent; POST, PUT and DELETE are recorded
  and answered as V2 accepting them (a create answers with ``NEW_UID``).
  Whether V2 would refuse a write can only be known by sending it.
- The queue (``Runtime.enqueue``): a task the run would enqueue is recorded.
- The user and organization directories read their caches and never write
  them (``cache_writes=False``).

One ``DryRun`` explains one run at a time: ``reset`` forgets the overlay.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import urllib3
from nats.js.errors import (
    InvalidKeyError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue
from redis.client import Pipeline

from sync_core.broker import SYNC_TASK_NAME, task_id_for
from sync_core.keys import is_valid_kv_key
from sync_core.nats_client import SyncNats
from sync_core.nats_kv import LeanKeyValue
from sync_core.settings import WorkerSettings
from tasks.clients.auth0 import token_source_from_settings
from tasks.clients.identity import Identity
from tasks.clients.organizations import organization_directory_from_settings
from tasks.clients.query_service import query_service
from tasks.clients.tokens import minter_from_settings
from tasks.clients.users import user_directory_from_settings
from tasks.clients.v2 import Answer, V2Service, committee_service, project_service
from tasks.run.deletes import TAKE_BUDGET_SCRIPT, DeleteBudget
from tasks.run.runtime import Runtime, redis_client_for
from tasks.run.sync import MARK_SYNCED_SCRIPT
from tasks.stores.dead_letters import DeadLetterStore
from tasks.stores.id_mappings import MappingStore
from tasks.stores.sync_state import StateStore

NATS_CLIENT_NAME = "v1-sync-helper-explain"
# The uid a dry create answers with (a valid KV token: the mappings are written with it).
NEW_UID = "new-uid-from-the-create-answer"
DRY_ETAG = '"dry-run"'
KV_WILDCARD_ONE = "*"
KV_WILDCARD_REST = ">"
# Redis commands that only read: sent to the server. Every other command is recorded.
REDIS_READS = frozenset(
    {
        "GET",
        "MGET",
        "EXISTS",
        "TTL",
        "PTTL",
        "TYPE",
        "TIME",
        "PING",
        "HGET",
        "HGETALL",
        "HMGET",
        "LLEN",
        "LRANGE",
        "SCARD",
        "SISMEMBER",
        "SMEMBERS",
        "ZCARD",
        "ZCOUNT",
        "ZSCORE",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "SCAN",
    }
)
HTTP_CREATED = 201
HTTP_OK = 200
HTTP_NO_CONTENT = 204


@dataclass(frozen=True)
class RecordedWrite:
    """One write the dry run did not make.

    ``target``: ``kv:{bucket}``, ``v2:{service}``, ``redis`` or ``queue``;
    ``action``: the KV operation, the HTTP method, the Redis command, or
    ``enqueue``; ``key``: the KV key, the V2 path, the Redis key or the task
    id; ``value``: what would have been written.
    """

    target: str
    action: str
    key: str
    value: Any = None


class WriteLog:
    """The writes of one dry run, in order (thread-safe: lease renewals record too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writes: list[RecordedWrite] = []

    def add(self, write: RecordedWrite) -> None:
        with self._lock:
            self._writes.append(write)

    def all(self) -> list[RecordedWrite]:
        with self._lock:
            return list(self._writes)

    def clear(self) -> None:
        with self._lock:
            self._writes.clear()


# -- NATS KV -------------------------------------------------------------------


@dataclass(frozen=True)
class Overlaid:
    """A key's value as the dry run left it (``operation``: DEL or PURGE once deleted)."""

    value: bytes | None
    revision: int
    operation: str | None = None


class DryRunBucket(LeanKeyValue):
    """A bucket handle whose writes land in an overlay, not on the server.

    Only the primitives are replaced (``_get``, ``_update``, ``put``, ``delete``,
    ``purge``, ``has_any``): nats-py's ``get`` and ``create`` (the re-create of
    a deleted key) run on top of them as they do on the real handle.
    """

    def __init__(self, real: LeanKeyValue, overlay: dict[str, Overlaid], writes: WriteLog) -> None:
        # The real handle's reply inbox (our own LeanKeyValue's): reads share its subscription.
        super().__init__(real, real._inbox)
        self.real = real
        self._overlay = overlay
        self._writes = writes

    def __repr__(self) -> str:
        return f"DryRunBucket(bucket={self._name!r})"

    async def _get(self, key: str, revision: int | None = None) -> KeyValue.Entry:
        stored = self._overlay.get(key) if revision is None else None
        if stored is None:
            return await self.real._get(key, revision)
        entry = KeyValue.Entry(
            bucket=self._name,
            key=key,
            value=stored.value,
            revision=stored.revision,
            delta=None,
            created=None,
            operation=None,
        )
        if stored.operation is not None:
            raise KeyDeletedError(entry, stored.operation)
        return entry

    async def _current_revision(self, key: str) -> int:
        """The revision a compare-and-set on ``key`` must name (0: never written)."""
        try:
            return int((await self._get(key)).revision or 0)
        except KeyDeletedError as deleted:
            return int(deleted.entry.revision or 0)
        except KeyNotFoundError:
            return 0

    async def _record(
        self, key: str, action: str, value: bytes | None, operation: str | None = None
    ) -> int:
        revision = await self._current_revision(key) + 1
        self._overlay[key] = Overlaid(value, revision, operation)
        text = None if value is None else bytes(value).decode("utf-8", "replace")
        self._writes.add(RecordedWrite(f"kv:{self._name}", action, key, text))
        return revision

    async def put(self, key: str, value: bytes, validate_keys: bool = True) -> int:
        _check_key(key, validate_keys)
        return await self._record(key, "put", value)

    async def _update(
        self,
        key: str,
        value: bytes,
        last: int | None = None,
        validate_keys: bool = True,
        msg_ttl: float | None = None,
    ) -> int:
        _check_key(key, validate_keys)
        if (last or 0) != await self._current_revision(key):
            raise KeyWrongLastSequenceError(description="wrong last sequence (dry run)")
        return await self._record(key, "update" if await self._exists(key) else "create", value)

    async def _exists(self, key: str) -> bool:
        try:
            await self._get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return False
        return True

    async def delete(
        self,
        key: str,
        last: int | None = None,
        validate_keys: bool = True,
        msg_ttl: float | None = None,
    ) -> bool:
        _check_key(key, validate_keys)
        if last and last > 0 and last != await self._current_revision(key):
            raise KeyWrongLastSequenceError(description="wrong last sequence (dry run)")
        await self._record(key, "delete", None, "DEL")
        return True

    async def purge(self, key: str, msg_ttl: float | None = None) -> bool:
        await self._record(key, "purge", None, "PURGE")
        return True

    async def has_any(self, key_filter: str) -> bool:
        if any(_matches(key_filter, key) for key in self._overlay):
            return True
        return await self.real.has_any(key_filter)


def _check_key(key: str, validate: bool) -> None:
    """Refuse a key the server would refuse, as nats-py does."""
    if validate and not is_valid_kv_key(key):
        raise InvalidKeyError(key)


def _matches(key_filter: str, key: str) -> bool:
    """Whether ``key`` matches the subject filter ``key_filter`` (``*`` and ``>``)."""
    wanted, tokens = key_filter.split("."), key.split(".")
    for index, token in enumerate(wanted):
        if token == KV_WILDCARD_REST:
            return len(tokens) > index
        if index >= len(tokens) or (token != KV_WILDCARD_ONE and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


class DryRunNats(SyncNats):
    """A ``SyncNats`` whose bucket handles are ``DryRunBucket``s (requests pass through)."""

    def __init__(self, url: str, name: str, writes: WriteLog) -> None:
        self.writes = writes
        self._overlays: dict[str, dict[str, Overlaid]] = {}
        self._dry: dict[str, DryRunBucket] = {}
        super().__init__(url, name)

    def kv(self, bucket: str) -> LeanKeyValue:
        real = super().kv(bucket)
        dry = self._dry.get(bucket)
        if dry is None or dry.real is not real:
            dry = DryRunBucket(real, self._overlays.setdefault(bucket, {}), self.writes)
            self._dry[bucket] = dry
        return dry

    def overlay(self, bucket: str) -> dict[str, Overlaid]:
        """What the run left in ``bucket``: key -> its value after the run."""
        return dict(self._overlays.get(bucket, {}))

    def stored(self, bucket: str, key: str) -> bytes | None:
        """The value the server holds for ``key`` (None: absent or deleted)."""
        dry = self.kv(bucket)
        assert isinstance(dry, DryRunBucket)
        try:
            entry = self.run(dry.real.get(key))
        except KeyNotFoundError:
            return None
        return None if entry.value is None else bytes(entry.value)

    def forget_writes(self) -> None:
        """Start a new run: the overlay of the previous one is dropped."""
        for overlay in self._overlays.values():
            overlay.clear()


# -- Redis ---------------------------------------------------------------------


@dataclass(frozen=True)
class DryScript:
    """How a dry run answers one Lua script: its name in the record, and a read-only answer.

    ``answer(client, keys, args)`` gets a client that can only read.
    """

    name: str
    answer: Callable[[redis.Redis, Sequence[Any], Sequence[Any]], Any]


def _budget_answer(client: redis.Redis, keys: Sequence[Any], args: Sequence[Any]) -> int:
    """``TAKE_BUDGET_SCRIPT``'s answer (ARGV: task id, budget, window, released)."""
    task_id, budget, _, released = args
    allowed = DeleteBudget(client, int(budget)).would_take(
        str(task_id), released=str(released) == "1"
    )
    return 1 if allowed else 0


# The scripts of the run, answered without running them.
RUN_SCRIPTS: Mapping[str, DryScript] = {
    TAKE_BUDGET_SCRIPT: DryScript("take the delete budget", _budget_answer),
    MARK_SYNCED_SCRIPT: DryScript("mark synced", lambda client, keys, args: 1),
}


class DryRunRedis(redis.Redis):
    """A Redis client on the real one's connections that sends only reads."""

    def __init__(
        self, real: redis.Redis, writes: WriteLog, scripts: Mapping[str, DryScript] = RUN_SCRIPTS
    ) -> None:
        super().__init__(connection_pool=real.connection_pool)
        self._real = real
        self._writes = writes
        self._scripts = scripts

    def execute_command(self, *args: Any, **options: Any) -> Any:
        command = str(args[0]).upper()
        if command in REDIS_READS:
            return super().execute_command(*args, **options)
        if command in ("EVAL", "EVALSHA"):
            script, numkeys = str(args[1]), int(args[2])
            keys, argv = args[3 : 3 + numkeys], args[3 + numkeys :]
            known = self._scripts.get(script)
            name = known.name if known is not None else "script"
            first = str(keys[0]) if keys else ""
            self._writes.add(RecordedWrite("redis", f"EVAL {name}", first, list(argv)))
            return None if known is None else known.answer(self, keys, argv)
        key = str(args[1]) if len(args) > 1 else ""
        self._writes.add(RecordedWrite("redis", command, key, [str(a) for a in args[2:]]))
        return None

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return DryRunPipeline(self, transaction, shard_hint)

    def close(self) -> None:
        self._real.close()


class DryRunPipeline(Pipeline):
    """A pipeline whose commands run one by one through ``DryRunRedis`` when executed."""

    def __init__(self, owner: DryRunRedis, transaction: bool, shard_hint: Any) -> None:
        super().__init__(owner.connection_pool, owner.response_callbacks, transaction, shard_hint)
        self._owner = owner

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, self.command_stack = self.command_stack, []
        return [self._owner.execute_command(*args, **options) for args, options in stack]


# -- V2 ------------------------------------------------------------------------


@dataclass(frozen=True)
class V2Call:
    """One V2 call of the run: sent (GET) or recorded (a write), with its identity."""

    method: str
    service: str
    path: str
    status: int
    body: dict[str, Any] | None
    identity: Identity


class DryRunV2Service(V2Service):
    """A V2 collection that sends GETs and answers writes as V2 accepting them.

    Only the transport of one request (``_send``) is replaced: the token, the
    lease check before a write, and the reading of every answer are the real
    client's. Views below an object (``collection_under``) share ``calls``.
    """

    calls: list[V2Call]
    writes: WriteLog

    @classmethod
    def standing_in_for(
        cls, real: V2Service, calls: list[V2Call], writes: WriteLog
    ) -> DryRunV2Service:
        """The dry twin of ``real`` (same URL, collection, audience, minter, timeout)."""
        dry = cls(
            real.base_url,
            real.collection,
            real.audience,
            real.minter,
            timeout=real.timeout,
            service=real.service,
            create_headers=real.create_headers,
        )
        dry.calls, dry.writes = calls, writes
        return dry

    def _send(
        self,
        method: str,
        path: str,
        identity: Identity,
        json_body: dict[str, Any] | None,
        if_match: str | None,
        extra_headers: Mapping[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        if method == "GET":
            answer = super()._send(
                method, path, identity, json_body, if_match, extra_headers, params
            )
            body = None
            if answer.status_code < 300 and params is None:
                try:
                    body = answer.json()
                except ValueError:
                    body = None
            self.calls.append(
                V2Call(method, self.service, path, answer.status_code, body, identity)
            )
            return answer
        status, content = _accepted(method, json_body)
        self.calls.append(V2Call(method, self.service, path, status, json_body, identity))
        self.writes.add(RecordedWrite(f"v2:{self.service}", method, path, json_body))
        headers = urllib3.HTTPHeaderDict({"ETag": DRY_ETAG, "Content-Type": "application/json"})
        return Answer(status, headers, content)


def _accepted(method: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
    """The status and body of V2 accepting a write."""
    if method == "POST":
        return HTTP_CREATED, json.dumps({**(body or {}), "uid": NEW_UID}).encode()
    if method == "PUT":
        return HTTP_OK, json.dumps(body or {}).encode()
    return HTTP_NO_CONTENT, b""


# -- mappings ------------------------------------------------------------------


class ReadNotingMappings(MappingStore):
    """The mapping store of a dry run: the same store, noting the first value of each read."""

    def __init__(self, nats: SyncNats, bucket: str) -> None:
        super().__init__(nats, bucket)
        self.reads: dict[str, str | None] = {}

    def read(self, key: str) -> str | None:
        value = super().read(key)
        self.reads.setdefault(key, value)
        return value


# -- the runtime -----------------------------------------------------------------


@dataclass
class DryRun:
    """A dry-run runtime and what its run read and would have written."""

    runtime: Runtime
    nats: DryRunNats
    mappings: ReadNotingMappings
    writes: WriteLog
    v2_calls: list[V2Call] = field(default_factory=list)

    def reset(self) -> None:
        """Forget the previous run: its overlay, its writes, its reads and calls."""
        self.nats.forget_writes()
        self.writes.clear()
        self.mappings.reads.clear()
        self.v2_calls.clear()

    def close(self) -> None:
        """Close every connection."""
        self.runtime.close()


def open_dry_run(settings: WorkerSettings) -> DryRun:
    """Open the worker's connections for ``settings`` behind dry-run ports (see the module)."""
    writes = WriteLog()
    calls: list[V2Call] = []
    nats = DryRunNats(settings.nats_url, NATS_CLIENT_NAME, writes)
    try:
        real_redis = redis_client_for(settings.redis_target)
        minter = minter_from_settings(settings)
        auth0 = token_source_from_settings(settings)

        def dry(service: V2Service | None) -> V2Service | None:
            if service is None:
                return None
            return DryRunV2Service.standing_in_for(service, calls, writes)

        projects = dry(project_service(settings, minter))
        assert projects is not None

        def enqueue(key: str, revision: int, operation: str, kwargs: dict[str, Any]) -> None:
            task = {"task": SYNC_TASK_NAME, "args": [key, revision, operation], "kwargs": kwargs}
            writes.add(RecordedWrite("queue", "enqueue", task_id_for(key, revision), task))

        mappings = ReadNotingMappings(nats, settings.v1_mappings_bucket)
        runtime = Runtime(
            settings=settings,
            nats=nats,
            redis=DryRunRedis(real_redis, writes),
            minter=minter,
            projects=projects,
            committees=dry(committee_service(settings, minter)),
            query=dry(query_service(settings, minter)),
            users=user_directory_from_settings(settings, nats, auth0, cache_writes=False),
            organizations=organization_directory_from_settings(
                settings, nats, auth0, cache_writes=False
            ),
            mappings=mappings,
            dead_letters=DeadLetterStore(nats, settings.sync_state_bucket),
            state=StateStore(nats, settings.sync_state_bucket),
            enqueue=enqueue,
        )
    except BaseException:
        nats.close()
        raise
    return DryRun(runtime, nats, mappings, writes, calls)
