"""One bridge process: connections, the loop, the reconciler, health, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

from nats.aio.client import Client

from bridge.consumer import ConsumerSpec
from bridge.consumer_watch import ConsumerWatch
from bridge.health import HealthServer
from bridge.loop import Bridge, LoopTuning
from bridge.messages import TaskMessageEncoder, producer_app
from bridge.metrics import BridgeMetrics
from bridge.publisher import BrokerPublisher, broker_client, database_of
from bridge.reconciler import Reconciler, ReconcileTuning
from bridge.v2_echoes import V2EchoFilter
from bridge.v2_events import V2EventReader, event_stream_spec
from sync_core.broker import V2_EVENT_TASK_NAME, broker_transport_options
from sync_core.nats_client import connect, ensure_bucket
from sync_core.settings import BridgeSettings
from sync_core.v2_events import capture_from_settings, ensure_v2_event_capture

log = logging.getLogger(__name__)

T = TypeVar("T")

NATS_CLIENT_NAME = "v1-sync-bridge"
NATS_DRAIN_TIMEOUT = 3.0
# How long one cancellation of the first NATS connect gets before the next.
CANCEL_RETRY_SECONDS = 0.2


class BridgeService:
    """Wires a ``Bridge`` to NATS, Redis and the health endpoint."""

    def __init__(
        self,
        settings: BridgeSettings,
        spec: ConsumerSpec | None = None,
        tuning: LoopTuning | None = None,
        serve_http: bool = True,
    ) -> None:
        self.settings = settings
        self.spec = spec or ConsumerSpec(settings.kv_consumer_name, settings.v1_objects_bucket)
        self.tuning = tuning or LoopTuning(
            batch_size=settings.bridge_batch_size,
            max_queue_depth=settings.bridge_max_queue_depth,
        )
        self.reconcile_tuning = ReconcileTuning(
            interval=settings.reconcile_interval,
            grace=settings.reconcile_grace,
            parent_wait=settings.sync_parent_wait,
            max_queue_depth=settings.bridge_max_queue_depth,
        )
        self.reconciler: Reconciler | None = None
        self.metrics = BridgeMetrics()
        self.transport_options: dict[str, Any] = broker_transport_options()
        self.bridge: Bridge | None = None
        # The V2 events' loop and its consumer's gauges (``SYNC_V2_TO_V1``): None while off.
        self.v2_bridge: Bridge | None = None
        self.v2_watch: ConsumerWatch | None = None
        self.health: HealthServer | None = None
        if serve_http:
            self.health = HealthServer(
                settings.bind_host, settings.port, self.readiness, self.metrics.exposition
            )

    def readiness(self) -> dict[str, bool]:
        """What ``/readyz`` reports: not ready until the loop is set up."""
        if self.bridge is None:
            return {"nats": False, "subscription": False, "broker": False}
        checks = self.bridge.readiness()
        if self.settings.sync_v2_to_v1:
            checks["v2_events_subscription"] = (
                self.v2_bridge is not None and self.v2_bridge.subscribed
            )
        return checks

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then finish in-hand work and disconnect."""
        if self.health is not None:
            self.health.start()
        client = broker_client(self.settings.redis_target, self.transport_options)
        publisher = BrokerPublisher(client)
        nc: Client | None = None
        try:
            # nats-py retries the first connection forever: a stop must cut that short.
            nc = await _unless_stopped(connect(self.settings.nats_target, NATS_CLIENT_NAME), stop)
            if nc is None:
                return
            app = producer_app(
                self.settings.redis_target, self.settings.celery_queue, self.transport_options
            )
            encoder = TaskMessageEncoder(app, self.settings.celery_queue, database_of(client))
            self.bridge = Bridge(nc, self.spec, encoder, publisher, self.metrics, self.tuning)
            await ensure_bucket(nc.jetstream(), self.settings.sync_state_bucket)
            v2_encoder = None
            capture = None
            if self.settings.sync_v2_to_v1:
                # From now on V2's committee events are kept even while no bridge runs;
                # with the switch off nothing of the V2 -> V1 direction is created.
                capture = capture_from_settings(self.settings)
                await ensure_v2_event_capture(nc.jetstream(), capture)
                v2_encoder = TaskMessageEncoder(
                    app,
                    self.settings.celery_queue,
                    database_of(client),
                    task_name=V2_EVENT_TASK_NAME,
                )
                self.v2_bridge = Bridge(
                    nc,
                    event_stream_spec(capture),
                    v2_encoder,
                    publisher,
                    self.metrics,
                    self.tuning,
                    reader=V2EventReader(),
                    echoes=V2EchoFilter(
                        nc.jetstream(),
                        self.settings.v1_mappings_bucket,
                        self.settings.sync_state_bucket,
                        self.metrics,
                    ),
                )
                self.v2_watch = ConsumerWatch(
                    nc.jetstream(), capture.stream, capture.consumer, self.metrics
                )
            self.reconciler = Reconciler(
                nc,
                objects_bucket=self.settings.v1_objects_bucket,
                mappings_bucket=self.settings.v1_mappings_bucket,
                state_bucket=self.settings.sync_state_bucket,
                consumer=self.spec.name,
                encoder=encoder,
                publisher=publisher,
                metrics=self.metrics,
                tuning=self.reconcile_tuning,
                v2_encoder=v2_encoder,
                v2_capture=capture,
            )
            reconciling = asyncio.create_task(self.reconciler.run(stop))
            v2_events = None
            v2_watching = None
            if self.v2_bridge is not None:
                v2_events = asyncio.create_task(self._run_v2_events(stop))
            if self.v2_watch is not None:
                v2_watching = asyncio.create_task(self.v2_watch.run(stop))
            try:
                await self.bridge.run(stop)
            finally:
                stop.set()
                await reconciling
                if v2_events is not None:
                    await v2_events
                if v2_watching is not None:
                    await v2_watching
        finally:
            if nc is not None:
                await _drain(nc)
            publisher.close()
            if self.health is not None:
                self.health.stop()
            log.info("bridge stopped")

    async def _run_v2_events(self, stop: asyncio.Event) -> None:
        """The V2 events' loop; its failure stops the process, as the KV loop's does."""
        assert self.v2_bridge is not None
        try:
            await self.v2_bridge.run(stop)
        except Exception:
            log.exception("the V2 events loop failed: stopping the bridge")
            stop.set()
            raise


async def _unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """The result of ``work``, or None when ``stop`` is set first (``work`` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        return task.result()
    # nats-py's connect loop swallows a cancellation that lands inside its own
    # close (``_close`` waits with ``except CancelledError: pass``): cancel
    # again until the task has really ended.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_RETRY_SECONDS)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
    log.info("stopped before connecting to NATS")
    return None


async def _drain(nc: Client) -> None:
    """Flush pending acks and close; never wait long on a sick connection."""
    try:
        await asyncio.wait_for(nc.drain(), NATS_DRAIN_TIMEOUT)
    except Exception as error:
        log.warning("nats drain did not finish", extra={"failure": repr(error)})
        if not nc.is_closed:
            await nc.close()


async def serve(settings: BridgeSettings) -> None:
    """The ``bridge`` command: run until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await BridgeService(settings).run(stop)
