"""Operator commands: flower, dlq, requeue, replay, status.

Each command loads its settings from the environment (exit 2 on bad
configuration), turns expected failures (broker or NATS down, unknown key)
into one ``Error:`` line and a non-zero exit, and imports its heavy modules
only when run, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from bridge.changes import KvChange
    from operations.enqueue import TaskQueue
    from sync_core.settings import BridgeSettings

CONFIG_ERROR_EXIT_CODE = 2
UNHEALTHY_EXIT_CODE = 1
# Tasks per broker round trip for replay and ``dlq requeue --all``.
ENQUEUE_BATCH = 500


def _settings() -> BridgeSettings:
    from sync_core.settings import BridgeSettings, load_settings

    return load_settings(BridgeSettings)


@contextmanager
def _expected_failures() -> Iterator[None]:
    """Turn an unreachable broker or NATS into one clear line and exit 1."""
    from operations.current_keys import KvUnavailable
    from operations.enqueue import BrokerUnavailable

    try:
        yield
    except (BrokerUnavailable, KvUnavailable) as error:
        raise click.ClickException(str(error)) from None


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


# --------------------------------------------------------------------- flower


@click.command("flower")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port of the web UI and API. Default: FLOWER_PORT (5555).",
)
@click.option(
    "--address",
    default=None,
    help="Address to listen on. Default: BIND ('*', every interface).",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Run without authentication (local use only). Without this flag "
    "FLOWER_BASIC_AUTH=user:password is required.",
)
@click.option(
    "--persistent",
    is_flag=True,
    help="Keep the task history in a file across restarts (see --db).",
)
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="State file of --persistent (implies it). Default: ./flower-state.db.",
)
def flower_command(
    port: int | None, address: str | None, no_auth: bool, persistent: bool, db_path: Path | None
) -> None:
    """Run Flower, the Celery web UI, for the sync workers.

    Flower shows every sync task (id KEY@REVISION) as it is queued, started,
    retried, succeeded or failed, and lets you re-queue one through its HTTP
    API. The UI and API need basic auth: set FLOWER_BASIC_AUTH=user:password
    (several pairs separated by commas). /metrics and /healthcheck answer
    without authentication.
    """
    from operations.flower import (
        CredentialsError,
        FlowerOptions,
        check_app_importable,
        check_basic_auth,
        run_flower,
    )
    from sync_core.logs import configure_logging
    from sync_core.settings import FlowerSettings, load_settings

    settings = load_settings(FlowerSettings)
    basic_auth: str | None = None
    if not no_auth:
        try:
            basic_auth = check_basic_auth(settings.flower_basic_auth)
        except CredentialsError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(CONFIG_ERROR_EXIT_CODE)
    configure_logging(settings.debug)
    try:
        check_app_importable()
    except Exception as error:
        raise click.ClickException(f"cannot load the Celery app: {error}") from None
    if no_auth:
        click.echo("Warning: Flower runs WITHOUT authentication (--no-auth).", err=True)
    options = FlowerOptions(
        port=settings.flower_port if port is None else port,
        address=settings.bind_host if address is None else address,
        persistent=persistent or db_path is not None,
        db_path=db_path,
    )
    run_flower(options, basic_auth)


# ------------------------------------------------------------------------ dlq


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters: tasks that failed for good, kept for an operator.

    A task lands here when V2 rejects it (400, 401, 403…), its record cannot
    be decoded, or its retries are spent. Each dead letter is named by its task
    id KEY@REVISION. Fix the cause, then `dlq requeue` it.
    """


@contextmanager
def _open_store(settings: BridgeSettings) -> Iterator[Any]:
    """The dead letters (in JetStream), on a fail-fast NATS connection closed afterwards."""
    from operations.current_keys import open_nats
    from sync_core.nats_client import SyncNats
    from tasks.stores.dead_letters import DeadLetterStore

    nats = SyncNats(settings.nats_url, "v1-sync-helper-dlq", connector=open_nats)
    try:
        yield DeadLetterStore(nats, settings.sync_state_bucket)
    finally:
        nats.close()


@contextmanager
def _store_errors() -> Iterator[None]:
    import nats.errors
    import redis

    from operations.current_keys import KvUnavailable

    try:
        yield
    except KvUnavailable as error:
        raise click.ClickException(str(error)) from None
    except (nats.errors.Error, TimeoutError) as error:
        raise click.ClickException(
            f"cannot read the dead letters from NATS: {error or type(error).__name__}"
        ) from None
    except (redis.RedisError, OSError) as error:
        raise click.ClickException(f"cannot reach the broker (Redis): {error}") from None


@dlq_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print every field as JSON.")
def dlq_list_command(as_json: bool) -> None:
    """List dead letters, newest first.

    Columns: key, revision, error kind, attempts, age of the last failure and
    the start of the error message.
    """
    from operations.deadletter_view import as_dict, render_table

    settings = _settings()
    with _store_errors(), _open_store(settings) as store:
        letters = store.list()
    if as_json:
        _echo_json([as_dict(letter) for letter in letters])
    else:
        click.echo(render_table(letters, time.time()))


@dlq_group.command("show")
@click.argument("task_id", metavar="KEY@REV")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def dlq_show_command(task_id: str, as_json: bool) -> None:
    """Show every field of one dead letter.

    KEY@REV is the task id, the key and revision `dlq list` prints.
    """
    from operations.deadletter_view import as_dict, render_one

    settings = _settings()
    with _store_errors(), _open_store(settings) as store:
        letter = store.get(task_id)
    if letter is None:
        raise click.ClickException(f"no dead letter {task_id!r} (see `v1-sync-helper dlq list`)")
    if as_json:
        _echo_json(as_dict(letter))
    else:
        click.echo(render_one(letter, time.time()))


@dlq_group.command("requeue")
@click.argument("task_ids", nargs=-1, metavar="[KEY@REV]...")
@click.option("--all", "requeue_all", is_flag=True, help="Re-queue every dead letter.")
def dlq_requeue_command(task_ids: tuple[str, ...], requeue_all: bool) -> None:
    """Put dead-lettered tasks back into the Celery queue.

    Each task is enqueued again with its original key, revision, operation and
    task id; its dead letter is removed only once the broker has accepted the
    task. If the key has changed since, the task ends as `superseded` and the
    newer revision's own task does the work. A re-queued delete runs even when
    SYNC_DELETE_BUDGET is spent (this is how a delete held back as
    `delete_budget_exceeded` is released).
    """
    if requeue_all == bool(task_ids):
        raise click.UsageError("give one or more KEY@REV ids, or --all (not both)")
    from operations.dlq import requeue_letters
    from operations.enqueue import DEAD_LETTER_TASK_KWARGS, TaskQueue

    settings = _settings()
    missing: list[str] = []
    requeued = 0

    def report(batch: Sequence[Any]) -> None:
        nonlocal requeued
        requeued += len(batch)
        for letter in batch:
            click.echo(f"re-queued {letter.id}")

    with (
        _expected_failures(),
        _store_errors(),
        TaskQueue(settings.redis_target, settings.celery_queue, DEAD_LETTER_TASK_KWARGS) as queue,
        _open_store(settings) as store,
    ):
        if requeue_all:
            letters = store.list()
            max_depth: int | None = settings.bridge_max_queue_depth
        else:
            letters = []
            for task_id in dict.fromkeys(task_ids):
                letter = store.get(task_id)
                if letter is None:
                    missing.append(task_id)
                else:
                    letters.append(letter)
            max_depth = None
        requeue_letters(queue, store, letters, max_depth, _say_waiting(max_depth or 0), report)
    if requeue_all and not requeued:
        click.echo("No dead letters to re-queue.")
    for task_id in missing:
        click.echo(f"Error: no dead letter {task_id!r}", err=True)
    if missing:
        sys.exit(1)


@dlq_group.command("purge")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge_command(yes: bool) -> None:
    """Delete every dead letter for good (asks first unless --yes)."""
    settings = _settings()
    with _store_errors(), _open_store(settings) as store:
        count = store.count()
        if count == 0:
            click.echo("No dead letters.")
            return
        if not yes:
            click.confirm(f"Delete all {count} dead letter(s)? This cannot be undone", abort=True)
        store.purge()
    click.echo(f"Purged {count} dead letter(s).")


# -------------------------------------------------------------------- requeue


@click.command("requeue")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@click.option(
    "--undelete",
    is_flag=True,
    help="First clear the tombstone of each key's deleted V2 object, so that the sync "
    "creates it again (a new V2 object with a new uid).",
)
def requeue_command(keys: tuple[str, ...], undelete: bool) -> None:
    """Sync KEY(s) of v1-objects again, at their current revision.

    Example: v1-sync-helper requeue salesforce-project__c.a0941000002wBz4AAE

    Each key gets a sync_kv_entry task with id KEY@REVISION (a deleted key is
    queued as its delete). An unknown key is reported and the command exits
    1, but the other keys are still queued.

    A V2 object deleted because its V1 record was deleted leaves a tombstone,
    and later puts of that record are skipped as `tombstoned`. --undelete
    removes the tombstone first (on purpose: the record is wanted again).
    """
    from operations.current_keys import current_changes
    from operations.enqueue import REQUEUE_TASK_KWARGS, TaskQueue
    from sync_core.broker import task_id_for

    settings = _settings()
    with _expected_failures():
        if undelete:
            from operations.undelete import clear_tombstones

            for key, cleared in clear_tombstones(
                settings.nats_url, settings.v1_mappings_bucket, keys
            ).items():
                click.echo(f"{'cleared the tombstone of' if cleared else 'no tombstone for'} {key}")
        found = current_changes(settings.nats_url, settings.v1_objects_bucket, keys)
        requests = [request for request in found.values() if request is not None]
        with TaskQueue(settings.redis_target, settings.celery_queue, REQUEUE_TASK_KWARGS) as queue:
            queue.publish(requests)
    for request in requests:
        suffix = "" if request.operation == "PUT" else f" ({request.operation})"
        click.echo(f"queued {task_id_for(request.key, request.revision)}{suffix}")
    unknown = [key for key, request in found.items() if request is None]
    for key in unknown:
        click.echo(f"Error: key {key!r} is not in {settings.v1_objects_bucket}", err=True)
    if unknown:
        sys.exit(1)


# --------------------------------------------------------------------- replay


def _say_waiting(max_depth: int) -> Any:
    def on_wait(depth: int) -> None:
        click.echo(
            f"\nqueue holds {depth} tasks (limit BRIDGE_MAX_QUEUE_DEPTH={max_depth}): "
            "waiting for the workers to drain it (Ctrl-C to stop)",
            err=True,
        )

    return on_wait


def _enqueue_with_progress(queue: TaskQueue, requests: Sequence[KvChange], max_depth: int) -> None:
    from operations.enqueue import wait_for_room

    with click.progressbar(
        length=len(requests), label="enqueueing", file=sys.stderr, show_pos=True
    ) as bar:
        for start in range(0, len(requests), ENQUEUE_BATCH):
            batch = requests[start : start + ENQUEUE_BATCH]
            wait_for_room(queue, max_depth, on_wait=_say_waiting(max_depth))
            queue.publish(batch)
            bar.update(len(batch))


@click.command("replay")
@click.option(
    "--prefix",
    default="",
    help="Only keys starting with this, e.g. salesforce-project__c. (default: every key).",
)
def replay_command(prefix: str) -> None:
    """Re-sync every current key of v1-objects (a full resync).

    Run it after a mapping fix. Each live key gets a sync_kv_entry task at its
    current revision; deleted keys are left out. While the Celery queue holds
    more than BRIDGE_MAX_QUEUE_DEPTH tasks the replay pauses until the workers
    drain it. Safe to run twice: a task that finds nothing changed does nothing.
    """
    from operations.current_keys import list_current
    from operations.enqueue import TaskQueue

    settings = _settings()
    with _expected_failures():
        click.echo(f"listing keys of {settings.v1_objects_bucket}…", err=True)
        requests = list_current(settings.nats_url, settings.v1_objects_bucket, prefix)
        with TaskQueue(settings.redis_target, settings.celery_queue) as queue:
            _enqueue_with_progress(queue, requests, settings.bridge_max_queue_depth)
    where = f" with prefix {prefix!r}" if prefix else ""
    click.echo(f"queued {len(requests)} key(s){where}")


# --------------------------------------------------------------------- status


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option(
    "--ping-timeout",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds to wait for workers to answer the ping.",
)
def status_command(as_json: bool, ping_timeout: float) -> None:
    """Health of the pipeline; exits 1 when unhealthy, so it serves as a probe.

    Shows the JetStream consumer's pending, awaiting-ack and redelivered
    counts, the Celery queue depth, the workers that answer a ping, the
    dead-letter count and the task outcomes of the last hour. Unhealthy: the
    broker is down, NATS or the consumer is missing, or no worker answers.
    """
    from operations.status import collect, render

    settings = _settings()
    status = collect(settings, ping_timeout)
    if as_json:
        _echo_json(status.as_dict())
    else:
        click.echo(render(status))
    if not status.healthy:
        sys.exit(UNHEALTHY_EXIT_CODE)
