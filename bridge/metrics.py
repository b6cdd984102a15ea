"""The bridge's Prometheus metrics, in a registry of their own.

Each bridge instance owns its registry, so several bridges can run in one
process (the tests do) without clashing over the global default registry. The
registry carries the process's own ``process_*`` and ``python_info`` series
and ``v1sync_build_info`` too (the default registry has the first two; ours
must add them).

The reconciler's verdict on keys behind is the lease holder's alone: a bridge
exports ``v1sync_reconcile_keys_behind`` only while it holds the lease (it is
unregistered when the lease is lost), so no stale value of a former holder
stays in Prometheus beside the current one. The V2 events consumer's gauges
(``bridge.consumer_watch``) are registered only while ``SYNC_V2_TO_V1`` is on:
with the direction off there is no such consumer to report on.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from sync_core.build_info import register_build_info

# Batch enqueue latency, from a few hundred microseconds (a healthy pipelined
# round trip) up to the broker socket timeout.
# A sweep over a few keys takes milliseconds; over 100,000, seconds.
SWEEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ENQUEUE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class BridgeMetrics:
    """Counters and gauges of one bridge."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.fetched = Counter(
            "v1sync_bridge_messages_fetched",
            "KV stream messages fetched from the JetStream consumer.",
            registry=registry,
        )
        self.enqueued = Counter(
            "v1sync_bridge_tasks_enqueued", "Celery tasks written to the broker.", registry=registry
        )
        self.acked = Counter(
            "v1sync_bridge_messages_acked", "KV stream messages acknowledged.", registry=registry
        )
        self.skipped = Counter(
            "v1sync_bridge_messages_skipped",
            "KV stream messages acknowledged without a task, by reason.",
            ["reason"],
            registry=registry,
        )
        self.v2_echoes_skipped = Counter(
            "v1sync_bridge_v2_echoes_skipped",
            "V2 events the bridge recognised as echoes of the forward path and settled "
            "as skipped without a Celery task (bridge.v2_echoes), by object type.",
            ["object_type"],
            registry=registry,
        )
        self.enqueue_seconds = Histogram(
            "v1sync_bridge_enqueue_seconds",
            "Time to write one batch of tasks to the broker (one pipelined round trip).",
            buckets=ENQUEUE_BUCKETS,
            registry=registry,
        )
        self.enqueue_failures = Counter(
            "v1sync_bridge_enqueue_failures",
            "Failed attempts to write a batch to the broker (each is retried).",
            registry=registry,
        )
        self.broker_down = Gauge(
            "v1sync_bridge_broker_down",
            "1 while the broker does not answer, else 0.",
            registry=registry,
        )
        self.backpressure_pauses = Counter(
            "v1sync_bridge_backpressure_pauses",
            "Times fetching paused because the Celery queue was too deep.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "v1sync_bridge_queue_depth",
            "Length of the Celery queue at the last look.",
            registry=registry,
        )
        self.in_progress = Counter(
            "v1sync_bridge_in_progress_sent",
            "in_progress() signals sent for held messages while the broker was down.",
            registry=registry,
        )
        self.resubscribes = Counter(
            "v1sync_bridge_resubscribes",
            "Times the pull subscription was recreated (NATS reconnect or repeated errors).",
            registry=registry,
        )

        # Registered while this bridge holds the reconciler lease (``reconciler_leads``).
        self.reconcile_keys_behind = Gauge(
            "v1sync_reconcile_keys_behind",
            "Keys behind their latest v1-objects revision for longer than the grace at the "
            "last sweep, neither in flight, parked, waiting for a retry, nor still on their "
            "way (unacked or queued); exported by the reconciler lease holder only.",
            registry=None,
        )
        self.reconcile_leader = Gauge(
            "v1sync_reconcile_leader",
            "1 while this bridge holds the reconciler lease, else 0.",
            registry=registry,
        )
        self.reconcile_last_sweep = Gauge(
            "v1sync_reconcile_last_sweep_timestamp_seconds",
            "Unix time of this bridge's last reconcile sweep (its start before the first).",
            registry=registry,
        )
        self.reconcile_last_sweep.set(time.time())
        self._leading = False
        self._lead_lock = threading.Lock()
        self.reconcile_reenqueued = Counter(
            "v1sync_reconcile_reenqueued",
            "Tasks the reconciler enqueued for keys behind longer than the grace period.",
            registry=registry,
        )
        # Registered by ``export_v2_events_consumer`` (``SYNC_V2_TO_V1`` on).
        self.v2_events_pending = Gauge(
            "v1sync_bridge_v2_events_pending",
            "Events of the V2 events stream the bridges have not fetched yet "
            "(the consumer's num_pending at the last look).",
            registry=None,
        )
        self.v2_events_ack_pending = Gauge(
            "v1sync_bridge_v2_events_ack_pending",
            "Events of the V2 events stream fetched and not acked yet "
            "(the consumer's num_ack_pending at the last look).",
            registry=None,
        )
        self._v2_events_exported = False
        self._v2_events_lock = threading.Lock()
        self.reconcile_sweep_seconds = Histogram(
            "v1sync_reconcile_sweep_seconds",
            "Duration of one reconcile sweep (reading NATS, deciding, enqueuing).",
            buckets=SWEEP_BUCKETS,
            registry=registry,
        )

        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        register_build_info(registry)

    def reconciler_leads(self, leading: bool) -> None:
        """Whether this bridge holds the reconciler lease: export the holder's gauges or not."""
        with self._lead_lock:
            self.reconcile_leader.set(1 if leading else 0)
            if leading and not self._leading:
                self.registry.register(self.reconcile_keys_behind)
            elif not leading and self._leading:
                self.registry.unregister(self.reconcile_keys_behind)
                # A later lease starts from its own first sweep, not this value.
                self.reconcile_keys_behind.set(0)
            self._leading = leading

    def export_v2_events_consumer(self) -> None:
        """Serve the V2 events consumer's gauges from now on (once; the direction is on)."""
        with self._v2_events_lock:
            if not self._v2_events_exported:
                self.registry.register(self.v2_events_pending)
                self.registry.register(self.v2_events_ack_pending)
                self._v2_events_exported = True

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
