"""The worker's own liveness and readiness, answered without the broker.

Kubernetes used to probe a worker with ``celery inspect ping``: a new 78 MB
Python process that asks the worker through Redis, so every worker failed its
probe (and was restarted) during a Redis outage, which the worker is built to
wait out. Here the worker's main process keeps its own health, and the
metrics HTTP server (``tasks.worker.probes``) reads it on ``/livez`` and
``/readyz``.

- The consumer beats: a timer of its event loop (``HEARTBEAT_INTERVAL_SECONDS``)
  stamps the time while the loop turns. A loop that stopped turning (a handler
  that blocks it, a deadlock) stops the beats: after ``stale_after`` seconds the
  worker is not alive.
- Between a lost broker connection and the next successful connect, Celery's
  consumer sits in its reconnect loop (kombu retries with backoff, bounded
  socket timeouts) and its event loop does not run: that state is alive (the
  worker waits the broker out, however long) and not ready.
- The task slots: when every slot is taken and the same runs hold them for
  ``stall_after`` seconds (longer than the task hard time limit, which the
  threads pool does not enforce), the worker is not alive either: a restart
  frees the slots, Redis redelivers the runs.

Ready means connected to the broker with a beating loop: it can take work.
The state machine is driven by one consumer bootstep (``HealthStep``, public
Celery API): ``start`` runs once the consumer has connected and consumes
(after Celery's ``Tasks`` step), ``stop`` when it loses the connection or
shuts down. A worker that has not connected yet counts as connecting.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

HEARTBEAT_INTERVAL_SECONDS = 1.0
DEFAULT_STALE_AFTER_SECONDS = 60.0
DEFAULT_STALL_AFTER_SECONDS = 600.0
COPY_ATTEMPTS = 3


class ConsumerState(enum.StrEnum):
    """Where the consumer is."""

    CONNECTING = "connecting"
    CONSUMING = "consuming"
    STOPPED = "stopped"


@dataclass(frozen=True)
class HealthReport:
    """One answer of a probe: the verdict, and what it rests on (the body of the reply)."""

    ok: bool
    checks: dict[str, Any]


class WorkerHealth:
    """The consumer's state, its last beat, and the task slots' progress; thread-safe."""

    def __init__(
        self,
        stale_after: float = DEFAULT_STALE_AFTER_SECONDS,
        stall_after: float = DEFAULT_STALL_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after = stale_after
        self.stall_after = stall_after
        self._clock = clock
        self._lock = threading.Lock()
        self._state = ConsumerState.CONNECTING
        self._beats = True
        self._last_beat = clock()
        self._slots = 0
        self._held: frozenset[str] = frozenset()
        self._held_since = clock()

    def configure(self, stale_after: float, stall_after: float) -> None:
        """Set the thresholds (from the worker's settings)."""
        with self._lock:
            self.stale_after = stale_after
            self.stall_after = stall_after

    def consuming(self, slots: int, beats: bool = True) -> None:
        """The consumer connected and consumes, with ``slots`` task slots.

        ``beats`` False: the consumer has no event loop to beat from (Celery runs
        without one off the default environment, e.g. under eventlet): the loop
        is not judged then.
        """
        with self._lock:
            self._state = ConsumerState.CONSUMING
            self._slots = slots
            self._beats = beats
            self._last_beat = self._clock()

    def connecting(self) -> None:
        """The consumer lost its connection (or has not made one): it reconnects."""
        with self._lock:
            self._state = ConsumerState.CONNECTING

    def stopped(self) -> None:
        """The worker shuts down (alive until it exits: a warm shutdown is not killed)."""
        with self._lock:
            self._state = ConsumerState.STOPPED

    def beat(self, running: frozenset[str] | None = frozenset()) -> None:
        """The event loop turned; ``running``: ids of the runs holding slots now (None: unknown)."""
        now = self._clock()
        with self._lock:
            self._last_beat = now
            if running is not None and running != self._held:
                self._held = running
                self._held_since = now

    def liveness(self) -> HealthReport:
        """Alive: the loop beats (or the consumer is reconnecting) and the slots make progress."""
        now = self._clock()
        with self._lock:
            beat_age = now - self._last_beat
            slots_full = self._slots > 0 and len(self._held) >= self._slots
            stalled_for = now - self._held_since if slots_full else 0.0
            state = self._state
            beats = self._beats
        # Only a consuming loop beats: reconnecting, or shutting down warm, is alive.
        loop_ok = state is not ConsumerState.CONSUMING or not beats or beat_age <= self.stale_after
        slots_ok = stalled_for <= self.stall_after
        ok = loop_ok and slots_ok
        return HealthReport(
            ok,
            {
                "consumer": state.value,
                "heartbeat_age_seconds": round(beat_age, 3),
                "loop": loop_ok,
                "slots": slots_ok,
                "slots_stalled_seconds": round(stalled_for, 3),
            },
        )

    def readiness(self) -> HealthReport:
        """Ready: connected to the broker with a beating loop."""
        now = self._clock()
        with self._lock:
            beat_age = now - self._last_beat
            state = self._state
            beats = self._beats
        broker = state is ConsumerState.CONSUMING
        loop_ok = not beats or beat_age <= self.stale_after
        return HealthReport(
            broker and loop_ok,
            {"consumer": state.value, "broker": broker, "loop": loop_ok},
        )


# The worker process's one health record: the bootstep writes it, the HTTP server reads it.
HEALTH = WorkerHealth()


def running_request_ids() -> frozenset[str] | None:
    """Ids of the runs holding a task slot in this process (Celery's worker state).

    None when the set kept changing while it was copied: pool threads add and
    remove runs (it is a ``WeakSet``, iterated in Python).
    """
    for _ in range(COPY_ATTEMPTS):
        try:
            return frozenset(request.id for request in list(worker_state.active_requests))
        except RuntimeError:  # "Set changed size during iteration"
            continue
    return None


class HealthStep(bootsteps.StartStopStep):
    """Consumer step: beat from the event loop while consuming; mark reconnects and stops."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._timer: Any = None

    def start(self, c: Any) -> None:
        HEALTH.consuming(int(getattr(c.controller, "concurrency", 0) or 0), c.hub is not None)
        if c.hub is not None and self._timer is None:
            self._timer = c.hub.call_repeatedly(HEARTBEAT_INTERVAL_SECONDS, _beat)

    def stop(self, c: Any) -> None:
        # Celery stops the consumer's steps on a lost connection, then reconnects.
        self._cancel()
        HEALTH.connecting()

    def shutdown(self, c: Any) -> None:
        self._cancel()
        HEALTH.stopped()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _beat() -> None:
    HEALTH.beat(running_request_ids())
