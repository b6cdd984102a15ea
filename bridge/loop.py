"""The bridge loop: fetch a batch, enqueue its tasks in one round trip, then ack.

Guarantees:

- A message is acked only after the pipeline carrying its task returned, so
  every acked change has its task in Redis. A lost ack means the message
  comes again and the task runs twice; the task is idempotent.
- While the broker is unreachable the loop stops fetching, retries the batch
  in hand with capped backoff and keeps its messages alive with
  ``in_progress()`` well inside the ack wait, so JetStream neither redelivers
  them nor spends their max-deliver budget. It never NAKs for broker trouble.
- When the Celery queue grows past the high-water mark, fetching pauses
  until it drains below the low-water mark: updates wait in JetStream.
- After a NATS reconnect, or after repeated fetch errors or a long idle
  stretch, the pull subscription is recreated (a pull subscription has been
  seen to go deaf after a server restart).
- On stop: no new fetches; the batch in hand and whatever the subscription
  had already buffered are enqueued and acked, within a deadline.
- Every task carries the epoch of ``v1-objects`` (``sync_core.epochs``: its
  revisions restart at 1 when the bucket is rebuilt), read when the
  subscription is made and again when the consumer's delivery sequence goes
  back (a consumer created anew, by this bridge or another, on a rebuilt
  bucket): one stream-info request then, none per message.

Redis calls are blocking; they run on one dedicated thread so the event loop
(NATS pings, acks, in-progress signals) never waits on a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bridge.changes import ChangeReader, KvChange, KvChangeReader, Skip
from bridge.consumer import ConsumerSpec, ensure_consumer
from bridge.messages import EncodedBatch, TaskMessageEncoder
from bridge.metrics import BridgeMetrics
from bridge.publisher import BrokerPublisher
from bridge.v2_echoes import V2EchoFilter
from sync_core.epochs import bucket_epoch

log = logging.getLogger(__name__)

T = TypeVar("T")

FETCH_TIMEOUT = 1.0
FINISH_FETCH_TIMEOUT = 0.1
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 2.0
# in_progress() at most this often and at least three times per ack wait.
IN_PROGRESS_INTERVAL_MAX = 10.0
IDLE_BROKER_CHECK_INTERVAL = 2.0
BROKER_DOWN_CHECK_INTERVAL = 1.0
DRAIN_POLL_INTERVAL = 0.25
LOW_WATER_FRACTION = 0.75
FETCH_ERRORS_BEFORE_RESUBSCRIBE = 3
IDLE_FETCHES_BEFORE_RESUBSCRIBE = 60
# On stop, how long to keep retrying the batch in hand. With a broker
# timeout (5 s) on top, a fetch in flight (1 s) and the NATS drain (3 s),
# the process still exits within the 25 s Kubernetes gives it.
STOP_GRACE = 14.0
FINISH_ROUNDS = 5

BROKER_FAILURES: tuple[type[Exception], ...] = (redis.RedisError, OSError)


@dataclass(frozen=True, slots=True)
class LoopTuning:
    """Flow-control knobs of one bridge."""

    batch_size: int = 500
    max_queue_depth: int = 10_000
    fetch_timeout: float = FETCH_TIMEOUT
    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX
    stop_grace: float = STOP_GRACE
    idle_broker_check: float = IDLE_BROKER_CHECK_INTERVAL

    @property
    def low_water(self) -> int:
        """Fetching resumes once the queue is shorter than this."""
        return int(self.max_queue_depth * LOW_WATER_FRACTION)


class Bridge:
    """One bridge: a pull subscription on the shared consumer and one broker client."""

    def __init__(
        self,
        nc: Client,
        spec: ConsumerSpec,
        encoder: TaskMessageEncoder,
        publisher: BrokerPublisher,
        metrics: BridgeMetrics,
        tuning: LoopTuning,
        reader: ChangeReader | None = None,
        echoes: V2EchoFilter | None = None,
    ) -> None:
        """``reader``: what a message means (the KV bucket's changes by default;
        ``bridge.v2_events.V2EventReader`` for the V2 events consumer).
        ``echoes``: settles the V2 events that echo the forward path before the
        rest of the batch is enqueued (``bridge.v2_echoes``; the V2 events loop only)."""
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.spec = spec
        self.encoder = encoder
        self.publisher = publisher
        self.metrics = metrics
        self.tuning = tuning
        self.reader: ChangeReader = reader or KvChangeReader(spec.bucket)
        self.echoes = echoes
        self.in_progress_interval = min(IN_PROGRESS_INTERVAL_MAX, spec.ack_wait / 3)
        # None until the first contact: the first failure is logged either way.
        self.broker_up: bool | None = None
        self.subscribed = False
        self._sub: JetStreamContext.PullSubscription | None = None
        self._reconnects_seen = 0
        self._last_broker_contact = 0.0
        self._queue_depth = 0
        self._stop_deadline: float | None = None
        self._fetch_errors = 0
        self._idle_fetches = 0
        self._redis_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-redis")
        # The epoch of ``v1-objects`` stamped on the tasks (None: unknown, unstamped),
        # and the last delivery sequence seen of the consumer.
        self.epoch: int | None = None
        self._stamped = encoder
        self._delivered = 0

    # -- state -------------------------------------------------------------

    def ready(self) -> bool:
        """NATS connected, subscription in place, broker answering."""
        return bool(self.nc.is_connected and self.subscribed and self.broker_up)

    def readiness(self) -> dict[str, bool]:
        """Each readiness check by name (the body of ``/readyz``)."""
        return {
            "nats": bool(self.nc.is_connected),
            "subscription": self.subscribed,
            "broker": bool(self.broker_up),
        }

    def _broker_ok(self, depth: int) -> None:
        if self.broker_up is not True:
            log.info("broker reachable", extra={"queue_depth": depth})
        self.broker_up = True
        self.metrics.broker_down.set(0)
        self._last_broker_contact = time.monotonic()
        self._queue_depth = depth
        self.metrics.queue_depth.set(depth)

    def _broker_failed(self, error: Exception) -> None:
        if self.broker_up is not False:
            log.warning("broker unreachable", extra={"failure": repr(error)})
        self.broker_up = False
        self.metrics.broker_down.set(1)

    async def _on_redis_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._redis_thread, fn, *args)

    # -- subscription ------------------------------------------------------

    async def _subscribe(self) -> None:
        await ensure_consumer(self.js, self.spec)
        self._sub = await self.js.pull_subscribe_bind(self.spec.name, stream=self.spec.stream)
        self._reconnects_seen = self.nc.stats["reconnects"]
        self.subscribed = True
        # After the consumer: its stream is the life read, or an older one that is
        # gone (its messages then carry a newer stamp, which the worker takes as the
        # current life: it syncs the bucket's current value, never the message's).
        await self._read_epoch()
        self._delivered = 0

    async def _read_epoch(self) -> None:
        """Read the epoch of ``v1-objects`` and stamp the tasks with it from now on."""
        if not self.reader.stamps_epoch:
            return
        try:
            epoch = await bucket_epoch(self.js, self.spec.bucket)
        except Exception as error:  # keep the last one; the worker checks stamps anyway
            log.warning("could not read the bucket epoch", extra={"failure": repr(error)})
            return
        if epoch != self.epoch:
            if self.epoch is not None:
                log.warning(
                    "v1-objects was rebuilt: new epoch",
                    extra={"epoch": epoch, "previous_epoch": self.epoch},
                )
            self.epoch = epoch
            self._stamped = self.encoder.with_epoch(epoch)

    async def _resubscribe(self, reason: str) -> None:
        self.metrics.resubscribes.inc()
        log.warning("recreating pull subscription", extra={"reason": reason})
        await self._unsubscribe()
        await self._subscribe()

    async def _unsubscribe(self) -> None:
        self.subscribed = False
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as error:  # the subscription may be gone already
                log.debug("unsubscribe failed", extra={"failure": repr(error)})
            self._sub = None

    # -- the loop ----------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch, enqueue and ack until ``stop`` is set; then finish what is in hand.

        Start-up failures (no stream, a consumer the server will not update)
        raise; after that the loop rides out NATS and broker trouble.
        """
        stop_watch = asyncio.create_task(self._note_stop(stop))
        try:
            await self._subscribe()
            await self._check_broker()
            log.info(
                "bridge running",
                extra={"consumer": self.spec.name, "batch_size": self.tuning.batch_size},
            )
            while not stop.is_set():
                await self._step(stop)
            await self._finish_buffered()
        finally:
            stop_watch.cancel()
            await self._unsubscribe()
            self._redis_thread.shutdown(wait=False)

    async def _step(self, stop: asyncio.Event) -> None:
        """One turn: wait for the broker or for the queue to drain, or handle one batch."""
        if not self.broker_up:
            # Nothing is fetched while the broker is known to be down.
            await _wait(stop, BROKER_DOWN_CHECK_INTERVAL)
            await self._check_broker()
            return
        if self._queue_depth > self.tuning.max_queue_depth:
            await self._wait_for_drain(stop)
            return
        if self.nc.stats["reconnects"] != self._reconnects_seen:
            await self._try_resubscribe("nats reconnected")
        try:
            msgs = await self._fetch(self.tuning.batch_size)
        except TimeoutError:
            await self._on_idle()
            return
        except Exception as error:
            await self._on_fetch_error(error, stop)
            return
        self._fetch_errors = self._idle_fetches = 0
        await self.handle(msgs)

    async def _on_idle(self) -> None:
        """Nothing to fetch: look at the broker now and then, renew a long-idle subscription."""
        self._idle_fetches += 1
        if self._idle_fetches >= IDLE_FETCHES_BEFORE_RESUBSCRIBE:
            self._idle_fetches = 0
            await self._try_resubscribe("idle")
        await self._check_broker_when_idle()

    async def _on_fetch_error(self, error: Exception, stop: asyncio.Event) -> None:
        """A fetch failed (NATS away, consumer gone): back off, resubscribe after a few."""
        self._fetch_errors += 1
        log.warning("fetch failed", extra={"failure": repr(error)})
        if self._fetch_errors >= FETCH_ERRORS_BEFORE_RESUBSCRIBE:
            self._fetch_errors = 0
            await self._try_resubscribe("repeated fetch errors")
        await _wait(stop, self.tuning.backoff_max)

    async def _fetch(self, batch: int) -> list[Msg]:
        if self._sub is None:
            raise RuntimeError("no pull subscription")
        return await self._sub.fetch(batch, timeout=self.tuning.fetch_timeout)

    async def _try_resubscribe(self, reason: str) -> None:
        try:
            await self._resubscribe(reason)
        except Exception as error:
            log.warning("resubscribe failed", extra={"failure": repr(error)})

    async def _finish_buffered(self) -> None:
        """Enqueue and ack what the subscription already received before the stop."""
        for _ in range(FINISH_ROUNDS):
            if self._sub is None or self._sub.pending_msgs == 0 or self._past_deadline():
                return
            # Mostly these are status messages of expired pull requests, which
            # fetch() discards; a short timeout keeps the stop quick then.
            try:
                msgs = await self._sub.fetch(
                    max(2, self._sub.pending_msgs), timeout=FINISH_FETCH_TIMEOUT
                )
            except Exception:
                return
            await self.handle(msgs)

    async def _note_stop(self, stop: asyncio.Event) -> None:
        """Start the stop's grace period the moment it is asked for."""
        await stop.wait()
        self._stop_deadline = time.monotonic() + self.tuning.stop_grace
        log.info("stopping: finishing the messages in hand")

    def _past_deadline(self) -> bool:
        """True once a stop was asked for and its grace period is over."""
        return self._stop_deadline is not None and time.monotonic() > self._stop_deadline

    # -- one batch ---------------------------------------------------------

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Turn a fetched batch into tasks, enqueue them, then ack every message."""
        self.metrics.fetched.inc(len(msgs))
        changes: list[KvChange] = []
        held: list[Msg] = []
        delivered_before = self._delivered
        for msg in msgs:
            meta = msg.metadata
            self._delivered = meta.sequence.consumer
            result = self.reader(msg)
            if isinstance(result, Skip):
                self.metrics.skipped.labels(result.reason).inc()
                log.warning(
                    "message skipped", extra={"subject": msg.subject, "reason": result.reason}
                )
                await self._ack([msg])
                continue
            changes.append(result)
            held.append(msg)
        if self.echoes is not None and changes:
            changes, held = await self._settle_echoes(changes, held)
        if not changes:
            return
        if msgs and msgs[0].metadata.sequence.consumer <= delivered_before:
            # A new consumer (deliveries count from 1 again): maybe a rebuilt bucket.
            await self._read_epoch()
        batch = self._stamped.encode(changes)
        if not await self._enqueue(batch, held):
            log.warning("stopping with messages not enqueued", extra={"count": len(held)})
            return
        self.metrics.enqueued.inc(len(changes))
        await self._ack(held)
        log.debug("batch enqueued", extra={"count": len(changes), "queue_depth": self._queue_depth})

    async def _settle_echoes(
        self, changes: list[KvChange], held: list[Msg]
    ) -> tuple[list[KvChange], list[Msg]]:
        """Ack the echoes ``self.echoes`` settled; the rest, to enqueue."""
        assert self.echoes is not None
        settled = await self.echoes.settle(list(zip(changes, held, strict=True)))
        echoes = [msg for msg, done in zip(held, settled, strict=True) if done]
        if echoes:
            await self._ack(echoes)
        kept = [i for i, done in enumerate(settled) if not done]
        return [changes[i] for i in kept], [held[i] for i in kept]

    async def _ack(self, msgs: Sequence[Msg]) -> None:
        """Ack without waiting for the server; a lost ack only means a redelivery."""
        try:
            for msg in msgs:
                await msg.ack()
        except Exception as error:  # NATS closed under us: JetStream will redeliver
            log.warning("ack failed", extra={"failure": repr(error), "count": len(msgs)})
            return
        self.metrics.acked.inc(len(msgs))

    async def _enqueue(self, batch: EncodedBatch, held: Sequence[Msg]) -> bool:
        """Push until the broker accepts the batch; False only when a stop ran out of time."""
        delay = self.tuning.backoff_initial
        last_signal = time.monotonic()
        while True:
            started = time.perf_counter()
            try:
                depth = await self._on_redis_thread(self.publisher.push, batch)
            except BROKER_FAILURES as error:
                self.metrics.enqueue_failures.inc()
                self._broker_failed(error)
            else:
                self.metrics.enqueue_seconds.observe(time.perf_counter() - started)
                self._broker_ok(depth)
                return True
            if self._past_deadline():
                return False
            if time.monotonic() - last_signal >= self.in_progress_interval:
                await self._keep_alive(held)
                last_signal = time.monotonic()
            await asyncio.sleep(min(delay, self.in_progress_interval))
            delay = min(delay * 2, self.tuning.backoff_max)

    async def _keep_alive(self, held: Sequence[Msg]) -> None:
        """Reset the ack wait of every held message (no delivery is spent)."""
        try:
            for msg in held:
                await msg.in_progress()
        except Exception as error:  # NATS down too: the next round tries again
            log.warning("in_progress failed", extra={"failure": repr(error)})
            return
        self.metrics.in_progress.inc(len(held))
        log.info("holding messages while the broker is down", extra={"count": len(held)})

    # -- broker checks and backpressure -------------------------------------

    async def _check_broker(self) -> bool:
        try:
            depth = await self._on_redis_thread(self.publisher.depth, self.encoder.queue)
        except BROKER_FAILURES as error:
            self._broker_failed(error)
            return False
        self._broker_ok(depth)
        return True

    async def _check_broker_when_idle(self) -> None:
        if time.monotonic() - self._last_broker_contact >= self.tuning.idle_broker_check:
            await self._check_broker()

    async def _wait_for_drain(self, stop: asyncio.Event) -> None:
        """Pause fetching until the queue is below the low-water mark."""
        self.metrics.backpressure_pauses.inc()
        log.warning(
            "queue too deep, pausing fetches",
            extra={"queue_depth": self._queue_depth, "limit": self.tuning.max_queue_depth},
        )
        while not stop.is_set():
            await _wait(stop, DRAIN_POLL_INTERVAL)
            if await self._check_broker() and self._queue_depth < self.tuning.low_water:
                log.info("queue drained, fetching again", extra={"queue_depth": self._queue_depth})
                return


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, returning early when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
