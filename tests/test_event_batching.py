"""Task events leave the worker on a timer, in batches (tasks.worker.patches.event_batching).

That Flower still sees every event of a real worker is shown by
tests/test_flower_failures.py and tests/test_operations_flower.py.
"""

from __future__ import annotations

from typing import Any

from tasks.worker.patches.event_batching import FLUSH_INTERVAL_SECONDS, EventBatching


class FakeHub:
    def __init__(self) -> None:
        self.timers: list[tuple[float, Any, tuple[Any, ...]]] = []

    def call_repeatedly(self, delay: float, callback: Any, *args: Any) -> Any:
        self.timers.append((delay, callback, args))
        hub = self

        class Entry:
            def cancel(self) -> None:
                hub.timers.clear()

        return Entry()


class FakeConsumer:
    def __init__(self) -> None:
        self.hub = FakeHub()
        self.flushes = 0
        self.on_send_event_buffered = self.flush_now

    def flush_now(self) -> None:
        raise AssertionError("an event must not trigger a flush of its own")

    def _flush_events(self) -> None:
        self.flushes += 1


def test_the_worker_app_has_the_step() -> None:
    from tasks.worker.app import app

    assert EventBatching in app.steps["consumer"]


def test_events_are_flushed_by_the_timer_and_on_stop_not_per_event() -> None:
    consumer = FakeConsumer()
    step = EventBatching(consumer)
    consumer.on_send_event_buffered()  # what the dispatcher calls per buffered event
    step.start(consumer)
    step.start(consumer)  # a reconnect starts the step again: still one timer
    assert len(consumer.hub.timers) == 1
    delay, callback, args = consumer.hub.timers[0]
    assert delay == FLUSH_INTERVAL_SECONDS
    callback(*args)
    assert consumer.flushes == 1
    step.stop(consumer)
    assert consumer.flushes == 2
    assert consumer.hub.timers == []
