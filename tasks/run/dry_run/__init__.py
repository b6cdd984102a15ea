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
- V1 (``DryRunV1Writer``, the V2 -> V1 run's ``Runtime.v1_committees``): every
  write is recorded and answered as V1 accepting it (a create with ``NEW_V1_SFID``).
- The queue (``Runtime.send_task``): a task the run would enqueue is recorded.
- The user and organization directories read their caches and never write
  them (``cache_writes=False``).

One ``DryRun`` explains one run at a time: ``reset`` forgets the overlay.
The ports: ``kv_buckets``, ``redis_commands``, ``v2_calls``, ``v1_calls``; what they record:
``write_log``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sync_core.nats_client import Connector, SyncNats, connect
from sync_core.settings import WorkerSettings
from tasks.clients.auth0 import token_source_from_settings
from tasks.clients.organizations import organization_directory_from_settings
from tasks.clients.query_service import query_service
from tasks.clients.tokens import minter_from_settings
from tasks.clients.users import user_directory_from_settings
from tasks.clients.v2 import V2Service
from tasks.run.dry_run.kv_buckets import DryRunBucket, DryRunNats
from tasks.run.dry_run.redis_commands import DryRunRedis
from tasks.run.dry_run.v1_calls import NEW_CONTACT_ID, NEW_V1_SFID, DryRunV1Writer, V1Call
from tasks.run.dry_run.v2_calls import NEW_UID, DryRunV2Service, V2Call
from tasks.run.dry_run.write_log import RecordedWrite, WriteLog
from tasks.run.runtime import Runtime, open_services, redis_client_for
from tasks.stores.dead_letters import DeadLetterStore
from tasks.stores.id_mappings import MappingStore
from tasks.stores.sync_state import StateStore

__all__ = [
    "NEW_CONTACT_ID",
    "NEW_UID",
    "NEW_V1_SFID",
    "DryRun",
    "DryRunBucket",
    "DryRunNats",
    "DryRunRedis",
    "DryRunV1Writer",
    "DryRunV2Service",
    "RecordedWrite",
    "V1Call",
    "V2Call",
    "WriteLog",
    "open_dry_run",
]

NATS_CLIENT_NAME = "v1-sync-helper-explain"


class ReadNotingMappings(MappingStore):
    """The mapping store of a dry run: the same store, noting the first value of each read."""

    def __init__(self, nats: SyncNats, bucket: str) -> None:
        super().__init__(nats, bucket)
        self.reads: dict[str, str | None] = {}

    def read(self, key: str) -> str | None:
        value = super().read(key)
        self.reads.setdefault(key, value)
        return value


@dataclass
class DryRun:
    """A dry-run runtime and what its run read and would have written."""

    runtime: Runtime
    nats: DryRunNats
    mappings: ReadNotingMappings
    writes: WriteLog
    v2_calls: list[V2Call] = field(default_factory=list)
    # The V1 writes of a V2 -> V1 run (``DryRunV1Writer``).
    v1_calls: list[V1Call] = field(default_factory=list)

    def reset(self) -> None:
        """Forget the previous run: its overlay, its writes, its reads and calls."""
        self.nats.forget_writes()
        self.writes.clear()
        self.mappings.reads.clear()
        self.v2_calls.clear()
        self.v1_calls.clear()

    def close(self) -> None:
        """Close every connection."""
        self.runtime.close()


def open_dry_run(settings: WorkerSettings, connector: Connector = connect) -> DryRun:
    """Open the worker's connections for ``settings`` behind dry-run ports (see the module).

    ``connector``: how NATS is reached (``explain`` passes its fail-fast one).
    """
    writes = WriteLog()
    calls: list[V2Call] = []
    v1_calls: list[V1Call] = []
    nats = DryRunNats(settings.nats_target, NATS_CLIENT_NAME, writes, connector)
    try:
        real_redis = redis_client_for(settings.redis_target)
        minter = minter_from_settings(settings)
        auth0 = token_source_from_settings(settings)

        def dry(service: V2Service | None) -> V2Service | None:
            if service is None:
                return None
            return DryRunV2Service.standing_in_for(service, calls, writes)

        def send_task(
            name: str,
            args: list[Any] | None = None,
            kwargs: dict[str, Any] | None = None,
            task_id: str | None = None,
            **_options: Any,
        ) -> None:
            task = {"task": name, "args": list(args or []), "kwargs": dict(kwargs or {})}
            writes.add(RecordedWrite("queue", "enqueue", task_id or "", task))

        mappings = ReadNotingMappings(nats, settings.v1_mappings_bucket)
        services = {name: dry(service) for name, service in open_services(settings, minter).items()}
        runtime = Runtime(
            settings=settings,
            nats=nats,
            redis=DryRunRedis(real_redis, writes),
            minter=minter,
            services=services,
            query=dry(query_service(settings, minter)),
            users=user_directory_from_settings(settings, nats, auth0, cache_writes=False),
            organizations=organization_directory_from_settings(
                settings, nats, auth0, cache_writes=False
            ),
            mappings=mappings,
            dead_letters=DeadLetterStore(nats, settings.sync_state_bucket),
            state=StateStore(nats, settings.sync_state_bucket),
            send_task=send_task,
            # The V2 -> V1 run's V1 client (made on first use in a worker): a recording one.
            _v1_writer=DryRunV1Writer(settings, v1_calls, writes, token_source=auth0),
        )
    except BaseException:
        nats.close()
        raise
    return DryRun(runtime, nats, mappings, writes, calls, v1_calls)
