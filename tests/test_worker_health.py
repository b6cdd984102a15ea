"""The worker's health record (``tasks.worker.health``) on a driven clock.

The real-process behaviour (valkey outage, wedged consumer) is in
tests/test_worker_probes.py; these pin each rule of the verdicts.
"""

from __future__ import annotations

import inspect
from collections.abc import MutableSet

from tasks.worker.health import WorkerHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health(clock: Clock) -> WorkerHealth:
    return WorkerHealth(stale_after=10.0, stall_after=100.0, clock=clock)


def test_a_starting_worker_is_alive_and_not_ready() -> None:
    clock = Clock()
    record = health(clock)
    clock.now += 1000  # however long the first connection takes
    assert record.liveness().ok
    assert not record.readiness().ok
    assert record.readiness().checks["broker"] is False


def test_a_consuming_worker_lives_while_its_loop_beats() -> None:
    clock = Clock()
    record = health(clock)
    record.consuming(slots=4)
    for _ in range(5):
        clock.now += 9
        record.beat()
        assert record.liveness().ok
        assert record.readiness().ok
    clock.now += 11
    live = record.liveness()
    assert not live.ok
    assert live.checks["loop"] is False
    assert live.checks["heartbeat_age_seconds"] == 11
    assert not record.readiness().ok


def test_reconnecting_is_alive_however_long_and_never_ready() -> None:
    clock = Clock()
    record = health(clock)
    record.consuming(slots=4)
    record.connecting()
    clock.now += 3600
    assert record.liveness().ok
    assert record.liveness().checks["consumer"] == "connecting"
    assert not record.readiness().ok
    record.consuming(slots=4)  # connected again: the beat starts afresh
    assert record.liveness().ok
    assert record.readiness().ok


def test_a_warm_shutdown_stays_alive_and_unready() -> None:
    clock = Clock()
    record = health(clock)
    record.consuming(slots=2)
    record.stopped()
    clock.now += 120
    assert record.liveness().ok
    assert not record.readiness().ok


def test_slots_held_by_the_same_runs_too_long_are_not_alive() -> None:
    clock = Clock()
    record = health(clock)
    record.consuming(slots=2)
    stuck = frozenset({"a@1", "b@1"})
    record.beat(stuck)
    for _ in range(10):
        clock.now += 9
        record.beat(stuck)
    assert record.liveness().ok  # 90 s: within the stall threshold
    clock.now += 11
    record.beat(stuck)
    live = record.liveness()
    assert not live.ok
    assert live.checks["slots"] is False
    assert live.checks["loop"] is True
    # One run finishing (another takes its slot) is progress.
    record.beat(frozenset({"a@1", "c@1"}))
    assert record.liveness().ok


def test_busy_slots_that_turn_over_or_are_not_all_taken_are_alive() -> None:
    clock = Clock()
    record = health(clock)
    record.consuming(slots=3)
    for index in range(30):
        clock.now += 9
        record.beat(frozenset({"a@1", "b@1"}))  # one slot free: never stalled
        assert record.liveness().ok, index
    for index in range(30):
        clock.now += 9
        record.beat(frozenset({f"x@{index}", "a@1", "b@1"}))
        assert record.liveness().ok, index


def test_a_consumer_without_an_event_loop_is_not_judged_by_beats() -> None:
    clock = Clock()
    record = health(clock)
    record.consuming(slots=2, beats=False)
    clock.now += 3600
    assert record.liveness().ok
    assert record.readiness().ok


def test_the_celery_parts_the_health_step_relies_on() -> None:
    # Named here so a Celery or kombu upgrade that moves them fails loudly.
    from celery import bootsteps
    from celery.worker import state as worker_state
    from celery.worker.consumer.tasks import Tasks
    from celery.worker.worker import WorkController
    from kombu.asynchronous import Hub

    from tasks.worker.app import app
    from tasks.worker.health import HealthStep

    # celery.worker.state.active_requests: the runs holding slots (a WeakSet today).
    assert isinstance(worker_state.active_requests, MutableSet)
    assert callable(Hub.call_repeatedly)  # kombu.asynchronous.Hub.call_repeatedly
    # WorkController.concurrency (the step reads c.controller.concurrency).
    assert "self.concurrency" in inspect.getsource(WorkController.setup_defaults)
    assert issubclass(HealthStep, bootsteps.StartStopStep)
    # A worker built in this process resolves the names into the step classes.
    required = [
        name if isinstance(name, str) else f"{name.__module__}:{name.__name__}"
        for name in HealthStep.requires
    ]
    assert required == [f"{Tasks.__module__}:{Tasks.__name__}"]
    assert HealthStep in app.steps["consumer"]


def test_an_unknown_slot_set_keeps_the_last_one_known() -> None:
    clock = Clock()
    record = health(clock)
    record.consuming(slots=1)
    record.beat(frozenset({"a@1"}))
    clock.now += 60
    record.beat(None)  # the copy raced with a pool thread: no news, but the loop turned
    clock.now += 41
    record.beat(None)
    live = record.liveness()
    assert live.checks["loop"] is True
    assert live.checks["slots"] is False  # still the same run, 101 s on


def test_running_request_ids_reads_celerys_active_requests() -> None:
    from celery.worker import state as worker_state

    from tasks.worker.health import running_request_ids

    class Request:
        def __init__(self, request_id: str) -> None:
            self.id = request_id

    held = [Request("k@1"), Request("k@2")]
    for request in held:
        worker_state.active_requests.add(request)
    try:
        assert running_request_ids() == frozenset({"k@1", "k@2"})
    finally:
        for request in held:
            worker_state.active_requests.discard(request)
    assert running_request_ids() == frozenset()
