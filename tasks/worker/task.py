"""The Celery binding of the sync: the tasks ``sync_kv_entry`` and ``sync_v2_event``.

The task opens (or finds) the process's runtime, runs ``tasks.run.sync.run_sync``
and turns its answer into Celery's terms: a retry with its countdown and
keyword arguments, a dead letter as a FAILURE (``DeadLettered``, declared in
``throws``: one INFO line, no traceback), else the outcome as the result.
``tasks.worker.app`` includes this module (``TASK_MODULES``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task

from sync_core.broker import SYNC_TASK_NAME, V2_EVENT_TASK_NAME
from sync_core.epochs import EPOCH_TASK_KWARG
from tasks.errors import DeadLettered
from tasks.run.backoff import retry_countdown
from tasks.run.outcomes import Outcome, ends_in_dead_letter
from tasks.run.report import RunReport
from tasks.run.reverse import emit_reverse, run_reverse
from tasks.run.runtime import Runtime
from tasks.run.sync import emit, run_sync, runtime_unavailable
from tasks.worker.app import APP_SETTINGS, app
from tasks.worker.process import get_runtime


# shared=False: a shared task would join every Celery app of the process.
# throws: a dead letter ends the run as FAILURE, logged as one INFO line (no traceback).
@app.task(
    name=SYNC_TASK_NAME,
    bind=True,
    max_retries=None,
    ignore_result=True,
    shared=False,
    throws=(DeadLettered,),
)
def sync_kv_entry(
    self: Task,
    key: str,
    revision: int,
    operation: str = "PUT",
    attempt: int = 0,
    lock_waits: int = 0,
    force: bool = False,
    release_delete_budget: bool = False,
    fresh_budget: bool = False,
    epoch: int | None = None,
) -> str:
    """Sync revision ``revision`` of V1 key ``key`` to V2; returns the outcome.

    A dead-lettered run raises ``DeadLettered`` instead (FAILURE in Flower).

    ``attempt`` counts the error retries so far, ``lock_waits`` the returns
    after finding the key locked; ``force`` (re-syncs by hand) ignores the
    "already synced" marker, but still makes no PUT when nothing changed;
    ``release_delete_budget`` (``dlq requeue``: an operator's decision) lets a
    delete past ``SYNC_DELETE_BUDGET``; ``epoch``: the life of ``v1-objects``
    ``revision`` belongs to (``sync_core.epochs``; None: the current one).

    The retry budget is durable: a run resumes the count the key's sync state
    holds for the revision when it is higher than ``attempt`` (the run's
    retry was lost, and the reconciler, a replay or a parent's release sent
    it again). ``fresh_budget`` (``requeue``, ``dlq requeue``: an operator's
    decision) makes ``attempt`` the count, a fresh budget on purpose.
    """
    report = RunReport(
        key=key,
        revision=int(revision),
        operation=operation,
        attempt=attempt,
        epoch=None if epoch is None else int(epoch),
    )
    return _run(
        self,
        report,
        lambda runtime: run_sync(
            runtime,
            report,
            force=force,
            lock_waits=lock_waits,
            release_delete_budget=release_delete_budget,
            fresh_budget=fresh_budget,
        ),
        emit,
    )


@app.task(
    name=V2_EVENT_TASK_NAME,
    bind=True,
    max_retries=None,
    ignore_result=True,
    shared=False,
    throws=(DeadLettered,),
)
def sync_v2_event(
    self: Task,
    key: str,
    sequence: int,
    action: str = "updated",
    attempt: int = 0,
    lock_waits: int = 0,
    fresh_budget: bool = False,
    force: bool = False,
    release_delete_budget: bool = False,
    epoch: int | None = None,
) -> str:
    """Bring V2 event ``sequence`` of object ``key`` (``v2.{object_type}.{uid}``) into V1.

    The V2 -> V1 direction (``SYNC_V2_TO_V1``; ``tasks.run.reverse``). ``action``
    is the event's (``created``…), for people reading Flower: the run reads
    the event itself from the V2 events stream. Retries, the durable budget
    and dead letters work as ``sync_kv_entry``'s do, and so do the operator's
    ``force``, ``fresh_budget`` and ``release_delete_budget`` (``dlq requeue``);
    ``epoch`` is accepted and ignored (V2 events belong to no life of ``v1-objects``).
    """
    report = RunReport(key=key, revision=int(sequence), operation=action, attempt=attempt)
    return _run(
        self,
        report,
        lambda runtime: run_reverse(
            runtime,
            report,
            lock_waits=lock_waits,
            fresh_budget=fresh_budget,
            force=force,
            release_delete_budget=release_delete_budget,
        ),
        emit_reverse,
    )


def _run(
    task: Task,
    report: RunReport,
    run: Callable[[Runtime], tuple[Outcome, dict[str, Any] | None]],
    emit_outcome: Callable[[RunReport, Outcome], None],
) -> str:
    """One run of either task on the process's runtime: emit, retry or dead-letter.

    ``run`` is the direction's run; a retry keeps the task's keyword arguments
    (and its life of ``v1-objects``), a dead letter ends as FAILURE in Flower.
    """
    try:
        runtime = get_runtime()
    except Exception as error:
        # NATS or Redis unreachable when the process opened its connections.
        report.error_kind, report.error_message = "runtime_unavailable", type(error).__name__
        backoff = retry_countdown(
            report.attempt,
            APP_SETTINGS.sync_retry_backoff_base,
            APP_SETTINGS.sync_retry_backoff_max,
        )
        runtime_unavailable(report, max(1.0, backoff))
        raise task.retry(countdown=report.countdown, kwargs=_retry_kwargs(task)) from None

    outcome, retry_kwargs = run(runtime)
    emit_outcome(report, outcome)
    if retry_kwargs is not None:
        if report.epoch is not None:
            # The retry stays in the life it started in.
            retry_kwargs = {**retry_kwargs, EPOCH_TASK_KWARG: report.epoch}
        raise task.retry(
            countdown=report.countdown,
            max_retries=None,
            kwargs={**_retry_kwargs(task), **retry_kwargs},
        )
    if ends_in_dead_letter(outcome):
        # The dead letter is stored: FAILURE in Flower, with its kind and message.
        raise DeadLettered(report.error_kind or "unknown", report.error_message or "")
    return outcome.value


def _retry_kwargs(task: Task) -> dict[str, Any]:
    """The current run's keyword arguments, so a retry keeps ``force`` and friends."""
    return dict(task.request.kwargs or {})
