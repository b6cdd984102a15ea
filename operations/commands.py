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

from operations.bulk import dry_run_option, json_option, kind_option, type_option, yes_option

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

    nats = SyncNats(settings.nats_target, "v1-sync-helper-dlq", connector=open_nats)
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
@kind_option
@type_option
def dlq_list_command(as_json: bool, kinds: tuple[str, ...], object_types: tuple[str, ...]) -> None:
    """List dead letters, newest first (--kind/--type narrow the list).

    Columns: key, revision, error kind, attempts, age of the last failure and
    the start of the error message.
    """
    from operations.deadletter_view import as_dict, render_table

    settings = _settings()
    with _store_errors(), _open_store(settings) as store:
        letters = _letter_selection(store.list(), kinds, object_types)
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


def _letter_selection(
    letters: Sequence[Any], kinds: Sequence[str], object_types: Sequence[str]
) -> list[Any]:
    """The dead letters of the given error kinds and object types (all when none given)."""
    from operations.bulk import object_type_of

    return [
        letter
        for letter in letters
        if (not kinds or letter.error_kind in kinds)
        and (not object_types or object_type_of(letter.key) in object_types)
    ]


def _letters_summary(letters: Sequence[Any]) -> dict[str, Any]:
    from operations.bulk import count_by, object_type_of

    return {
        "count": len(letters),
        "by_kind": count_by(letters, lambda letter: letter.error_kind),
        "by_type": count_by(letters, lambda letter: object_type_of(letter.key)),
    }


@dlq_group.command("requeue")
@click.argument("task_ids", nargs=-1, metavar="[KEY@REV]...")
@click.option("--all", "requeue_all", is_flag=True, help="Re-queue every dead letter.")
@kind_option
@type_option
@dry_run_option
@yes_option
@json_option
def dlq_requeue_command(
    task_ids: tuple[str, ...],
    requeue_all: bool,
    kinds: tuple[str, ...],
    object_types: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Put dead-lettered tasks back into the Celery queue.

    Give KEY@REV ids, or select in bulk: --all, or --kind/--type (each
    repeatable; with --all they narrow it). A bulk re-queue asks for
    confirmation unless --yes; --dry-run shows what would be re-queued.

    Each task is enqueued again with its original key, revision, operation and
    task id; its dead letter is removed only once the broker has accepted the
    task. If the key has changed since, the task ends as `superseded` and the
    newer revision's own task does the work. A re-queued delete runs even when
    SYNC_DELETE_BUDGET is spent (this is how a delete held back as
    `delete_budget_exceeded` is released).
    """
    bulk = requeue_all or bool(kinds) or bool(object_types)
    if bulk == bool(task_ids):
        raise click.UsageError(
            "give one or more KEY@REV ids, or --all / --kind / --type (not both)"
        )
    from operations.bulk import confirm_bulk, describe_counts
    from operations.dlq import requeue_letters
    from operations.enqueue import DEAD_LETTER_TASK_KWARGS, TaskQueue

    settings = _settings()
    missing: list[str] = []
    requeued: list[str] = []

    def report(batch: Sequence[Any]) -> None:
        for letter in batch:
            requeued.append(letter.id)
            if not as_json:
                click.echo(f"re-queued {letter.id}")

    with _expected_failures(), _store_errors(), _open_store(settings) as store:
        if bulk:
            letters = _letter_selection(store.list(), kinds, object_types)
        else:
            letters = []
            for task_id in dict.fromkeys(task_ids):
                letter = store.get(task_id)
                if letter is None:
                    missing.append(task_id)
                else:
                    letters.append(letter)
        summary = _letters_summary(letters)
        if dry_run:
            _report_dry_letters("re-queue", letters, summary, missing, as_json)
        else:
            if bulk and letters:
                confirm_bulk(
                    f"Re-queue {len(letters)} dead letter(s) "
                    f"(by kind: {describe_counts(summary['by_kind'])})",
                    yes,
                )
            max_depth = settings.bridge_max_queue_depth if bulk else None
            with TaskQueue(
                settings.redis_target, settings.celery_queue, DEAD_LETTER_TASK_KWARGS
            ) as queue:
                requeue_letters(
                    queue, store, letters, max_depth, _say_waiting(max_depth or 0), report
                )
    if not dry_run:
        if as_json:
            _echo_json({"dry_run": False, **summary, "requeued": requeued, "missing": missing})
        elif bulk and not requeued:
            click.echo("No dead letters to re-queue.")
        else:
            click.echo(f"re-queued {len(requeued)} dead letter(s)")
    for task_id in missing:
        click.echo(f"Error: no dead letter {task_id!r}", err=True)
    if missing:
        sys.exit(1)


def _report_dry_letters(
    verb: str,
    letters: Sequence[Any],
    summary: dict[str, Any],
    missing: Sequence[str],
    as_json: bool,
) -> None:
    from operations.bulk import describe_counts

    if as_json:
        _echo_json(
            {
                "dry_run": True,
                **summary,
                "letters": [letter.id for letter in letters],
                "missing": list(missing),
            }
        )
        return
    for letter in letters:
        click.echo(f"would {verb} {letter.id} ({letter.error_kind})")
    click.echo(
        f"dry run: {len(letters)} dead letter(s) would be {verb}d "
        f"(by kind: {describe_counts(summary['by_kind'])}; "
        f"by type: {describe_counts(summary['by_type'])}); nothing was changed"
    )


@dlq_group.command("purge")
@kind_option
@type_option
@dry_run_option
@yes_option
@json_option
def dlq_purge_command(
    kinds: tuple[str, ...],
    object_types: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete dead letters for good: all of them, or those of --kind/--type.

    Asks first unless --yes; --dry-run shows what would be deleted. A letter
    rewritten by a new failure while the command runs is kept.
    """
    from operations.bulk import confirm_bulk, describe_counts

    settings = _settings()
    with _store_errors(), _open_store(settings) as store:
        letters = _letter_selection(store.list(), kinds, object_types)
        summary = _letters_summary(letters)
        if dry_run:
            _report_dry_letters("purge", letters, summary, [], as_json)
            return
        if not letters:
            if as_json:
                _echo_json({"dry_run": False, **summary, "purged": []})
            else:
                click.echo("No dead letters.")
            return
        confirm_bulk(
            f"Delete {len(letters)} dead letter(s) for good "
            f"(by kind: {describe_counts(summary['by_kind'])}); this cannot be undone",
            yes,
        )
        purged = store.remove_unchanged(letters)
    if as_json:
        _echo_json({"dry_run": False, **summary, "purged": purged})
    else:
        click.echo(f"Purged {len(purged)} dead letter(s).")


# -------------------------------------------------------------------- requeue


@click.command("requeue")
@click.argument("keys", nargs=-1, required=True, metavar="KEY[@REV]...")
@click.option(
    "--undelete",
    is_flag=True,
    help="First clear the tombstone of each key's deleted V2 object, so that the sync "
    "creates it again (a new V2 object with a new uid). Asks first unless --yes.",
)
@dry_run_option
@yes_option
@json_option
def requeue_command(
    keys: tuple[str, ...], undelete: bool, dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Sync KEY(s) of v1-objects again, at their current revision.

    Example: v1-sync-helper requeue salesforce-project__c.a0941000002wBz4AAE

    KEY@REV (a task id as Flower shows it) is accepted: the revision is only
    informational. A sync always runs at the key's current revision (an older
    one would end as `superseded`); when it differs, the output says so.

    A V2 object's key, v2.committee.UID or v2.committee_member.UID (V2 -> V1,
    SYNC_V2_TO_V1), gets a sync_v2_event task for its latest event in the V2
    events stream (KEY@SEQUENCE: where the search for it may start); an object
    without an event there is reported as unknown.

    Each key gets a sync_kv_entry task with id KEY@REVISION (a deleted key is
    queued as its delete). An unknown key is reported and the command exits
    1, but the other keys are still queued.

    A V2 object deleted because its V1 record was deleted leaves a tombstone,
    and later puts of that record are skipped as `tombstoned`. --undelete
    removes the tombstone first (on purpose: the record is wanted again).
    """
    from operations.bulk import confirm_bulk, parse_task_ref
    from operations.current_keys import current_changes
    from operations.enqueue import REQUEUE_TASK_KWARGS, TaskQueue
    from operations.v2_latest import current_v2_changes, is_v2_key
    from sync_core.broker import task_id_for

    asked: dict[str, int | None] = {}
    for ref in keys:
        key, revision = parse_task_ref(ref)
        asked.setdefault(key, revision)
    asked_v2 = {key: revision for key, revision in asked.items() if is_v2_key(key)}
    asked_v1 = {key: revision for key, revision in asked.items() if key not in asked_v2}
    if undelete and asked_v2:
        raise click.UsageError("--undelete is for keys of v1-objects, not V2 objects (v2.…)")
    settings = _settings()
    tombstones: dict[str, bool] = {}
    with _expected_failures():
        if undelete:
            from operations.undelete import clear_tombstones, find_tombstones

            tombstones = find_tombstones(settings.nats_target, settings.v1_mappings_bucket, asked)
        found: dict[str, KvChange | None] = {}
        if asked_v1:
            found = current_changes(settings.nats_target, settings.v1_objects_bucket, asked_v1)
        if asked_v2:
            found |= current_v2_changes(
                settings.nats_target,
                settings.v2_events_stream,
                settings.sync_state_bucket,
                asked_v2,
            )
        requests = [request for request in found.values() if request is not None]
        to_clear = [key for key, tombstoned in tombstones.items() if tombstoned]
        if to_clear and not dry_run:
            confirm_bulk(
                f"Clear the tombstone of {len(to_clear)} deleted V2 object(s); the sync then "
                "creates each again under a new uid",
                yes,
            )
            tombstones = clear_tombstones(
                settings.nats_target, settings.v1_mappings_bucket, to_clear
            )
            tombstones.update({key: False for key in asked if key not in tombstones})
        if not dry_run:
            with TaskQueue(
                settings.redis_target, settings.celery_queue, REQUEUE_TASK_KWARGS
            ) as queue:
                queue.publish(requests)
    unknown = [key for key, request in found.items() if request is None]
    tasks = [
        {
            "id": task_id_for(request.key, request.revision),
            "key": request.key,
            "revision": request.revision,
            "operation": request.operation,
            "requested_revision": asked[request.key],
        }
        for request in requests
    ]
    if as_json:
        _echo_json(
            {
                "dry_run": dry_run,
                "count": len(tasks),
                "tasks": tasks,
                "unknown": unknown,
                "tombstones": sorted(key for key, cleared in tombstones.items() if cleared),
            }
        )
    else:
        would = "would " if dry_run else ""
        for key, tombstoned in tombstones.items():
            if tombstoned:
                click.echo(f"{would}{'clear' if dry_run else 'cleared'} the tombstone of {key}")
            else:
                click.echo(f"no tombstone for {key}")
        for task in tasks:
            suffix = "" if task["operation"] == "PUT" else f" ({task['operation']})"
            requested = task["requested_revision"]
            if requested is not None and requested != task["revision"]:
                suffix += f" (asked for @{requested}; the key is at {task['revision']} now)"
            click.echo(f"{would}{'queue' if dry_run else 'queued'} {task['id']}{suffix}")
        if dry_run:
            click.echo(f"dry run: {len(tasks)} task(s) would be queued; nothing was changed")
    for key in unknown:
        if key in asked_v2:
            click.echo(
                f"Error: no event of {key!r} in the stream {settings.v2_events_stream} "
                "(not a V2 committee or committee_member key, or its events are older "
                "than V2_EVENTS_MAX_AGE)",
                err=True,
            )
        else:
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
    help="Only keys starting with this, e.g. salesforce-project__c. (default: every key); "
    "v2. replays the V2 objects of the V2 -> V1 direction instead.",
)
@type_option
@dry_run_option
@yes_option
@json_option
def replay_command(
    prefix: str, object_types: tuple[str, ...], dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Re-sync every current key of v1-objects (a full resync).

    Run it after a mapping fix. Each live key gets a sync_kv_entry task at its
    current revision; deleted keys are left out. --prefix and --type narrow
    it; --dry-run counts the keys by type and changes nothing; it asks for
    confirmation unless --yes. While the Celery queue holds more than
    BRIDGE_MAX_QUEUE_DEPTH tasks the replay pauses until the workers drain it.
    Safe to run twice: a task that finds nothing changed does nothing.

    --prefix v2. (or v2.committee., v2.committee_member.) replays the V2
    objects of the V2 -> V1 direction instead: the latest event of every V2
    object in the V2 events stream whose sync state has not settled it
    (never run, retrying, parked, or its task lost) gets its sync_v2_event
    task; settled ones are left alone (`dlq requeue` runs dead letters again).
    """
    from operations.bulk import confirm_bulk, count_by, describe_counts, object_type_of
    from operations.current_keys import list_current
    from operations.enqueue import TaskQueue
    from operations.v2_latest import is_v2_key

    if is_v2_key(prefix):
        _replay_v2(prefix, object_types, dry_run, yes, as_json)
        return
    settings = _settings()
    with _expected_failures():
        click.echo(f"listing keys of {settings.v1_objects_bucket}…", err=True)
        requests = [
            request
            for request in list_current(settings.nats_target, settings.v1_objects_bucket, prefix)
            if not object_types or object_type_of(request.key) in object_types
        ]
        by_type = count_by(requests, lambda request: object_type_of(request.key))
        result = {
            "dry_run": dry_run,
            "bucket": settings.v1_objects_bucket,
            "prefix": prefix,
            "types": list(object_types),
            "count": len(requests),
            "by_type": by_type,
        }
        if not dry_run and requests:
            confirm_bulk(
                f"Re-sync {len(requests)} key(s) of {settings.v1_objects_bucket} "
                f"({describe_counts(by_type)})",
                yes,
            )
            with TaskQueue(settings.redis_target, settings.celery_queue) as queue:
                _enqueue_with_progress(queue, requests, settings.bridge_max_queue_depth)
    if as_json:
        _echo_json(result)
        return
    where = f" with prefix {prefix!r}" if prefix else ""
    if dry_run:
        click.echo(
            f"dry run: {len(requests)} key(s){where} would be queued "
            f"({describe_counts(by_type)}); nothing was changed"
        )
    else:
        click.echo(f"queued {len(requests)} key(s){where} ({describe_counts(by_type)})")


def _replay_v2(
    prefix: str, object_types: tuple[str, ...], dry_run: bool, yes: bool, as_json: bool
) -> None:
    """``replay --prefix v2.…``: re-drive the V2 objects whose latest event is not settled."""
    from bridge.v2_events import V2_OBJECT_TYPES
    from operations.bulk import confirm_bulk, count_by, describe_counts
    from operations.enqueue import REPLAY_V2_TASK_KWARGS, TaskQueue
    from operations.v2_latest import list_unsettled, parse_v2_key
    from sync_core.broker import task_id_for

    wanted = [t for t in sorted(V2_OBJECT_TYPES) if not object_types or t in object_types]
    if not wanted:
        raise click.UsageError(f"--type: V2 objects are of {', '.join(sorted(V2_OBJECT_TYPES))}")
    settings = _settings()
    with _expected_failures():
        click.echo(f"scanning the stream {settings.v2_events_stream}…", err=True)
        requests = list_unsettled(
            settings.nats_target,
            settings.v2_events_stream,
            settings.sync_state_bucket,
            wanted,
            prefix,
        )

        def type_of(change: KvChange) -> str:
            parsed = parse_v2_key(change.key)
            return "v2 " + (parsed.object_type if parsed else "other")

        by_type = count_by(requests, type_of)
        result = {
            "dry_run": dry_run,
            "stream": settings.v2_events_stream,
            "prefix": prefix,
            "types": list(object_types),
            "count": len(requests),
            "by_type": by_type,
            "tasks": [task_id_for(change.key, change.revision) for change in requests],
        }
        if not dry_run and requests:
            confirm_bulk(
                f"Re-drive {len(requests)} V2 object(s) of {settings.v2_events_stream} "
                f"({describe_counts(by_type)})",
                yes,
            )
            with TaskQueue(
                settings.redis_target, settings.celery_queue, REPLAY_V2_TASK_KWARGS
            ) as queue:
                _enqueue_with_progress(queue, requests, settings.bridge_max_queue_depth)
    if as_json:
        _echo_json(result)
        return
    where = f" with prefix {prefix!r}, not settled at their latest event"
    if dry_run:
        click.echo(
            f"dry run: {len(requests)} V2 object(s){where} would be queued "
            f"({describe_counts(by_type)}); nothing was changed"
        )
    else:
        click.echo(f"queued {len(requests)} V2 object(s){where} ({describe_counts(by_type)})")


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
