"""The V2 events consumer's backlog as bridge gauges (``SYNC_V2_TO_V1``, issue 24).

The KV consumer's pending count comes from the NATS exporter
(``monitoring.consumerPending``), which not every installation scrapes for a
stream of its own. The V2 events consumer's is cheap to read here: one
``CONSUMER.INFO`` request every ``CONSUMER_WATCH_SECONDS`` per bridge (a
reply of a few hundred bytes), whose ``num_pending`` (events the bridges have
not fetched yet) and ``num_ack_pending`` (fetched, not acked yet) become
``v1sync_bridge_v2_events_pending`` and ``v1sync_bridge_v2_events_ack_pending``.
Every bridge reads the same durable consumer, so every bridge reports the same
numbers; the alert and the dashboard take the maximum.

A failed look keeps the last values and logs once until a look succeeds
again: NATS away is the loop's own trouble, and its readiness says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js import JetStreamContext

from bridge.metrics import BridgeMetrics

log = logging.getLogger(__name__)

# Twice per default scrape interval (30 s): each scrape sees a value at most 15 s old.
CONSUMER_WATCH_SECONDS = 15.0
CONSUMER_INFO_TIMEOUT = 5.0


class ConsumerWatch:
    """Reads one durable consumer's pending counts into the bridge's gauges, periodically."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        consumer: str,
        metrics: BridgeMetrics,
        interval: float = CONSUMER_WATCH_SECONDS,
    ) -> None:
        self.js = js
        self.stream = stream
        self.consumer = consumer
        self.metrics = metrics
        self.interval = interval
        self._failing = False

    async def run(self, stop: asyncio.Event) -> None:
        """Look now and every ``interval`` seconds until ``stop`` is set."""
        self.metrics.export_v2_events_consumer()
        while not stop.is_set():
            await self.look()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def look(self) -> bool:
        """Read the consumer's counts into the gauges; False (values kept) when it failed."""
        try:
            info = await self.js.consumer_info(
                self.stream, self.consumer, timeout=CONSUMER_INFO_TIMEOUT
            )
        except Exception as error:  # NATS away, the consumer deleted: the loop handles both
            if not self._failing:
                log.warning(
                    "could not read the V2 events consumer's pending counts",
                    extra={"consumer": self.consumer, "failure": repr(error)},
                )
            self._failing = True
            return False
        self._failing = False
        self.metrics.v2_events_pending.set(int(info.num_pending or 0))
        self.metrics.v2_events_ack_pending.set(int(info.num_ack_pending or 0))
        return True
