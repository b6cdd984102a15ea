"""Flower's task events leave the worker in batches, a few times a second.

Celery's worker buffers task events (``task-received``, ``task-started``,
``task-succeeded``…) and asks its event loop to flush the buffer as soon as
one is added (``Consumer.on_send_event_buffered``): nearly one ``PUBLISH`` of
one to three events per task, about 8% of a busy worker's CPU. This consumer
step flushes on a timer every ``FLUSH_INTERVAL_SECONDS`` instead (and Celery
still flushes by itself once ``buffer_limit`` events wait), so one publish
carries the events of many tasks. Flower shows every event as before, at most
that interval later. The buffer is flushed when the consumer stops, before
Celery's own ``Events`` step closes the dispatcher.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 0.1


class EventBatching(bootsteps.StartStopStep):
    """Consumer step: flush task events on a timer, not once per event."""

    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._timer: Any = None
        # Read by the Events step whenever it builds the dispatcher (each connect).
        c.on_send_event_buffered = _no_immediate_flush

    def start(self, c: Any) -> None:
        if c.hub is not None and self._timer is None:
            self._timer = c.hub.call_repeatedly(FLUSH_INTERVAL_SECONDS, _flush, c)

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        _flush(c)

    def shutdown(self, c: Any) -> None:
        self.stop(c)


def _no_immediate_flush() -> None:
    """The dispatcher's ``on_send_buffered``: the timer flushes instead."""


def _flush(c: Any) -> None:
    try:
        c._flush_events()
    except Exception:
        # A broker hiccup: the dispatcher keeps what it could not send for the next flush.
        log.debug("task event flush failed", exc_info=True)
