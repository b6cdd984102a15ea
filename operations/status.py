"""``v1-sync-helper status``: one look at the whole pipeline, usable as a probe.

Each part is collected on its own, so one dead dependency is reported next to
everything else that could still be read. The pipeline is unhealthy when the
broker is down, NATS, the durable consumer or the sync state bucket is
missing, or no worker answers. The dead letters and the reconciler's last
sweep (keys behind, when, how long) come from the sync state in JetStream.

It also shows the life (epoch, ``sync_core.epochs``) of ``v1-objects`` and the
one the state was last compared against, and warns, without calling the
pipeline unhealthy, when state entries of an older life remain: after a
rebuilt bucket the reconciler re-drives those keys on its own.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from kombu.exceptions import OperationalError
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError, NotFoundError

from bridge.messages import producer_app
from operations.current_keys import KvUnavailable, open_nats
from operations.enqueue import queue_depth, redis_client
from sync_core.epochs import bucket_epoch, format_epoch
from sync_core.nats_client import SyncNats
from sync_core.settings import CommonSettings
from sync_core.sync_state import RECONCILER_SWEEP_KEY, SweepSummary
from tasks.run.outcomes import recent_outcomes
from tasks.stores.dead_letters import DeadLetterStore

OUTCOME_WINDOW_MINUTES = 60
DEFAULT_PING_TIMEOUT = 1.0
CONSUMER_INFO_TIMEOUT = 5.0


@dataclass
class ConsumerStatus:
    """The durable JetStream consumer the bridges share."""

    stream: str
    name: str
    found: bool = False
    num_pending: int | None = None
    num_ack_pending: int | None = None
    num_redelivered: int | None = None
    error: str | None = None


@dataclass
class SyncStateStatus:
    """JetStream's durable sync state: the dead letters and the reconciler's last sweep."""

    found: bool = False
    dead_letters: int | None = None
    last_sweep: SweepSummary | None = None
    # The epoch of ``v1-objects`` now (None: could not be read).
    objects_epoch: int | None = None
    error: str | None = None

    def warnings(self) -> list[str]:
        """What the operator should know about older lives of ``v1-objects`` in the state."""
        sweep = self.last_sweep
        if sweep is None or self.objects_epoch is None:
            return []
        found = []
        if sweep.epoch != self.objects_epoch:
            found.append(
                "v1-objects was rebuilt since the last reconciler sweep (that sweep compared "
                f"against the life of {format_epoch(sweep.epoch)}): the next sweep re-drives "
                "every key of the new life; nothing to do"
            )
        elif sweep.other_life_in_bucket:
            # Entries of keys no longer in the bucket stay for good (harmless): the
            # state section counts them, a warning would never clear.
            found.append(
                f"{sweep.other_life_in_bucket} sync state entries of keys in v1-objects are of "
                "an older life of the bucket (rebuilt, or written before epochs): the "
                "reconciler is syncing them again; nothing to do"
            )
        return found


@dataclass
class BrokerStatus:
    """Redis: the Celery queue and the outcome counters."""

    up: bool = False
    queue: str = "celery"
    queue_depth: int | None = None
    outcomes_last_hour: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Status:
    """Everything ``status`` reports, and why it is unhealthy if it is."""

    consumer: ConsumerStatus
    broker: BrokerStatus
    sync_state: SyncStateStatus
    workers: list[str]
    problems: list[str]
    # Worth knowing, not unhealthy (an older life of v1-objects in the state).
    warnings: list[str] = field(default_factory=list)
    # The V2 events consumer (``SYNC_V2_TO_V1``); None while the switch is off.
    v2_events: ConsumerStatus | None = None

    @property
    def healthy(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of ``status --json``."""
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


async def _consumer_info(settings: CommonSettings, status: ConsumerStatus) -> None:
    nc = await open_nats(settings.nats_target, "v1-sync-helper-status")
    try:
        info = await nc.jetstream(timeout=CONSUMER_INFO_TIMEOUT).consumer_info(
            status.stream, status.name
        )
    except NotFoundError:
        status.error = f"consumer {status.name!r} on stream {status.stream!r} does not exist"
        return
    finally:
        await nc.close()
    status.found = True
    status.num_pending = int(info.num_pending or 0)
    status.num_ack_pending = int(info.num_ack_pending or 0)
    status.num_redelivered = int(info.num_redelivered or 0)


def collect_consumer(settings: CommonSettings) -> ConsumerStatus:
    """Pending, awaiting-ack and redelivered counts of the bridge's consumer."""
    return _collect(
        settings,
        ConsumerStatus(stream=f"KV_{settings.v1_objects_bucket}", name=settings.kv_consumer_name),
    )


def collect_v2_events(settings: CommonSettings) -> ConsumerStatus | None:
    """The same counts of the V2 events consumer, when ``SYNC_V2_TO_V1`` is on."""
    if not settings.sync_v2_to_v1:
        return None
    return _collect(
        settings,
        ConsumerStatus(stream=settings.v2_events_stream, name=settings.v2_events_consumer_name),
    )


def _collect(settings: CommonSettings, status: ConsumerStatus) -> ConsumerStatus:
    try:
        asyncio.run(_consumer_info(settings, status))
    except KvUnavailable as error:
        status.error = str(error)
    except (NatsError, OSError, TimeoutError) as error:
        status.error = f"cannot read the consumer: {error or type(error).__name__}"
    return status


def collect_broker(settings: CommonSettings) -> BrokerStatus:
    """Queue depth, dead-letter count and recent outcomes from Redis."""
    status = BrokerStatus(queue=settings.celery_queue)
    client = redis_client(settings.redis_target)
    try:
        client.ping()
        status.up = True
        status.queue_depth = queue_depth(client, settings.celery_queue)
        status.outcomes_last_hour = dict(
            sorted(recent_outcomes(client, OUTCOME_WINDOW_MINUTES).items())
        )
    except (redis.RedisError, OSError) as error:
        status.error = f"cannot reach the broker: {error}"
    finally:
        client.close()
    return status


def collect_sync_state(settings: CommonSettings) -> SyncStateStatus:
    """The dead-letter count and the reconciler's last sweep, from the state bucket."""
    status = SyncStateStatus()
    try:
        nats = SyncNats(settings.nats_target, "v1-sync-helper-status", connector=open_nats)
    except (KvUnavailable, NatsError, OSError, TimeoutError) as error:
        status.error = str(error) or type(error).__name__
        return status
    try:
        status.dead_letters = DeadLetterStore(nats, settings.sync_state_bucket).count()
        entry = nats.kv_get(settings.sync_state_bucket, RECONCILER_SWEEP_KEY)
        status.found = True
        if entry is not None:
            status.last_sweep = SweepSummary.from_bytes(bytes(entry.value or b""))
        try:
            status.objects_epoch = nats.run(bucket_epoch(nats.js, settings.v1_objects_bucket))
        except (NatsError, NotFoundError):
            status.objects_epoch = None  # the consumer part reports a missing bucket
    except BucketNotFoundError:
        status.error = f"KV bucket {settings.sync_state_bucket!r} does not exist (no bridge ran)"
    except (NatsError, OSError, TimeoutError, ValueError) as error:
        status.error = f"cannot read the sync state: {error or type(error).__name__}"
    finally:
        nats.close()
    return status


def ping_workers(settings: CommonSettings, timeout: float) -> list[str]:
    """The names of the workers that answer a broadcast ping within ``timeout`` seconds."""
    app = producer_app(settings.redis_target, settings.celery_queue)
    try:
        replies = app.control.ping(timeout=timeout) or []
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)


def collect(settings: CommonSettings, ping_timeout: float = DEFAULT_PING_TIMEOUT) -> Status:
    """Read every part of the status and list what is unhealthy."""
    consumer = collect_consumer(settings)
    v2_events = collect_v2_events(settings)
    broker = collect_broker(settings)
    sync_state = collect_sync_state(settings)
    workers: list[str] = []
    ping_error = None
    if broker.up:
        try:
            workers = ping_workers(settings, ping_timeout)
        except (OperationalError, redis.RedisError, OSError) as error:
            ping_error = f"cannot ping the workers: {error}"
    problems = []
    if not consumer.found:
        problems.append(consumer.error or "the JetStream consumer is missing")
    if v2_events is not None and not v2_events.found:
        problems.append(v2_events.error or "the V2 events consumer is missing")
    if not broker.up:
        problems.append(broker.error or "the broker is down")
    elif ping_error:
        problems.append(ping_error)
    elif not workers:
        problems.append(f"no worker answered a ping within {ping_timeout:g}s")
    if not sync_state.found:
        problems.append(sync_state.error or "the sync state bucket cannot be read")
    return Status(
        consumer=consumer,
        broker=broker,
        sync_state=sync_state,
        workers=workers,
        problems=problems,
        warnings=sync_state.warnings(),
        v2_events=v2_events,
    )


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def render(status: Status) -> str:
    """The human-readable report, one fact per line."""
    broker = status.broker
    lines = _render_consumer(status.consumer)
    if status.v2_events is not None:
        lines += _render_consumer(status.v2_events, " V2 -> V1")
    lines.append("Broker (Redis)")
    if broker.up:
        outcomes = ", ".join(f"{k} {v}" for k, v in broker.outcomes_last_hour.items()) or "none"
        lines += [
            f"  queue {broker.queue:<11} {_count(broker.queue_depth)} waiting",
            f"  last hour         {outcomes}",
        ]
    else:
        lines.append(f"  unavailable: {broker.error}")
    lines += _render_sync_state(status.sync_state)
    names = ", ".join(status.workers)
    lines.append(f"Workers online     {len(status.workers)}" + (f" ({names})" if names else ""))
    lines += [f"Warning: {warning}" for warning in status.warnings]
    if status.healthy:
        lines.append("Healthy")
    else:
        lines.append("UNHEALTHY")
        lines += [f"  - {problem}" for problem in status.problems]
    return "\n".join(lines)


def _render_consumer(consumer: ConsumerStatus, direction: str = "") -> list[str]:
    lines = [f"JetStream consumer {consumer.name} (stream {consumer.stream}){direction}"]
    if consumer.found:
        lines += [
            f"  pending           {_count(consumer.num_pending)}",
            f"  awaiting ack      {_count(consumer.num_ack_pending)}",
            f"  redelivered       {_count(consumer.num_redelivered)}",
        ]
    else:
        lines.append(f"  unavailable: {consumer.error}")
    return lines


def _render_sync_state(state: SyncStateStatus) -> list[str]:
    lines = ["Sync state (JetStream)"]
    if not state.found:
        return [*lines, f"  unavailable: {state.error}"]
    lines.append(f"  dead letters      {_count(state.dead_letters)}")
    if state.objects_epoch is not None:
        lines.append(f"  v1-objects life   since {format_epoch(state.objects_epoch)}")
    sweep = state.last_sweep
    if sweep is None:
        return [*lines, "  last sweep        none yet"]
    ago = max(0, int(time.time() - sweep.at))
    lines += [
        f"  keys behind       {sweep.behind} of {sweep.keys}",
        f"  state refers to   the life since {format_epoch(sweep.epoch)}"
        + (
            f" ({sweep.other_life} entries of an older one: {sweep.other_life_in_bucket} "
            "being synced again, the rest of keys no longer in the bucket)"
            if sweep.other_life
            else ""
        ),
        f"  last sweep        {ago}s ago, {sweep.duration:.2f}s, re-enqueued {sweep.reenqueued}"
        + (f", deferred {sweep.deferred}" if sweep.deferred else ""),
    ]
    return lines
