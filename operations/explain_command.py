"""``v1-sync-helper explain KEY``: the command and its text rendering.

The work is in ``operations.explain``; this module loads the worker's
settings, opens a dry-run runtime, and prints the ``Explanation`` for people
or, with ``--json``, as one JSON object.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import click

from sync_core.v2_events import V2_KEY_PREFIX

if TYPE_CHECKING:
    from operations.explain import Explanation

INDENT = "  "
# Longest rendering of one value in the text output (the JSON output is complete).
VALUE_CHARS = 120
# Writes listed as they are (the V2 bodies, mappings and sync state have sections of their own).
OTHER_WRITE_TARGETS = frozenset({"redis", "queue"})


@click.command("explain")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
def explain_command(key: str, as_json: bool) -> None:
    """Show what syncing KEY would do, without writing anything.

    A dry run of the sync task for the key's current revision in v1-objects:
    the decoded V1 record, the V2 body after mapping (and every V1 value the
    mapping dropped or changed), the identity the V2 calls would be made as,
    the mappings read and written, the current V2 object and the field-by-field
    difference, and the outcome: create, update, unchanged, delete, retry,
    parked, dead_letter (with the reason) or skip.

    It runs the sync task's own code with every write recorded instead of
    made: no KV put, no Redis write, no V2 write (V2 gets only GETs, with a
    minted token), no task enqueued; the output lists what the run would
    write. What V2 would answer to a write cannot be known without sending it
    (a delete V2 refused before is reported from its dead letter).
    KEY may also be a task id KEY@REVISION, as
    Flower and the dead letters show it. Needs the worker's environment
    (PROJECT_SERVICE_URL, HEIMDALL_PRIVATE_KEY, AUTH0_*); run it in a worker pod.
    Exits 0 after explaining, 1 when the key is unknown or a service cannot be
    reached.

    KEY may be a V2 object, v2.committee.UID or v2.committee_member.UID
    (V2 -> V1, SYNC_V2_TO_V1): the V2 -> V1 run of its latest event in the V2
    events stream (KEY@SEQUENCE: of that event) is shown the same way, with
    the V1 calls it would make (none is sent) and the outcome: create, update,
    delete, skip (echo, not_in_v1, tombstoned…), superseded, retry, parked or
    dead_letter.
    """
    from operations.current_keys import open_nats
    from operations.explain import UnknownKey, explain_key, open_dry_run
    from operations.explain_v2 import explain_v2_key
    from operations.v2_latest import is_v2_key
    from sync_core.logs import configure_logging
    from sync_core.settings import WorkerSettings, load_settings

    settings = load_settings(WorkerSettings)
    configure_logging(settings.debug)
    if not settings.debug:
        # The output says everything the task's run would log (mapping warnings,
        # the dead letter it would write): its log lines would read as if it had.
        logging.getLogger().setLevel(logging.CRITICAL)
    key, _, asked_revision = key.partition("@")
    reverse = is_v2_key(key)
    try:
        dry = open_dry_run(settings, open_nats)
    except Exception as error:
        raise click.ClickException(f"cannot open the worker's connections: {error}") from None
    try:
        if reverse:
            # A V2 object's task id names its event: that event is explained.
            sequence = int(asked_revision) if asked_revision.isdigit() else None
            found = explain_v2_key(dry, key, sequence)
        else:
            found = explain_key(dry, key)
    except UnknownKey as error:
        raise click.ClickException(str(error)) from None
    except Exception as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from None
    finally:
        dry.close()
    if not reverse and asked_revision.isdigit() and int(asked_revision) != found.revision:
        found.notes.insert(
            0,
            f"the task {key}@{asked_revision} ends as superseded: this is the current "
            f"revision {found.revision}",
        )
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2, sort_keys=True, default=str))
    else:
        click.echo(render(found))


def render(found: Explanation) -> str:
    """The explanation as text, sections in the order an operator reads them."""
    reverse = found.key.startswith(V2_KEY_PREFIX)
    head = f"{found.key}  ({found.object_type}"
    if found.revision is not None:
        place = "stream sequence" if reverse else "revision"
        head += f", {place} {found.revision}, {found.operation}"
    lines = [head + ")"]
    outcome = f"Outcome: {found.outcome}"
    if found.reason:
        outcome += f" ({found.reason})"
    if found.message:
        outcome += f": {found.message}"
    lines.append(outcome)
    lines += [f"{INDENT}note: {note}" for note in found.notes]
    if found.dead_letter:
        letter = found.dead_letter
        lines.append(
            f"{INDENT}in the dead letters: [{letter['error_kind']}] {letter['error_message']}"
        )
    if found.record is not None:
        lines += _section("V2 event data" if reverse else "V1 record", _pairs(found.record))
    if found.warnings:
        lines += _section("Mapping warnings (dropped or changed)", found.warnings)
    if found.identity:
        identity = found.identity
        lines += _section(
            "Identity",
            [
                f"principal {identity['principal']}  sub {identity['sub']}  "
                f"email {identity['email'] or '-'}  on-behalf-of {identity['on_behalf_of'] or '-'}",
                str(identity["source"]),
            ],
        )
    if found.mappings_read:
        lines += _section(
            "Mappings read",
            [f"{k} = {v if v is not None else '(absent)'}" for k, v in found.mappings_read.items()],
        )
    if found.mappings_written:
        lines += _section(
            "Mappings it would write", [f"{k} = {v}" for k, v in found.mappings_written.items()]
        )
    if found.state_written:
        lines += _section(
            "Sync state it would write",
            [
                f"{k} = {_show(_state_fields(v)) if v is not None else '(removed)'}"
                for k, v in found.state_written.items()
            ],
        )
    other = [w for w in found.writes if w["target"] in OTHER_WRITE_TARGETS]
    if other:
        lines += _section(
            "Other writes it would make",
            [f"{w['target']} {w['action']} {w['key']}" for w in other],
        )
    for call in found.v1_calls:
        title = f"V1 call it would make: {call['method']} {call['path']}"
        lines += _section(title, _json_lines(call["body"]) if call["body"] else ["(no body)"])
    if reverse:
        return "\n".join(lines)
    if found.v2_uid:
        lines += _section(f"Current V2 object {found.v2_uid}", _pairs(found.v2_current or {}))
    if found.changes:
        lines += _section(
            "Changes (V2 now -> after the write)",
            [f"{c['field']}: {_show(c['before'])} -> {_show(c['after'])}" for c in found.changes],
        )
    if found.settings_changes:
        lines += _section(
            "Settings changes (V2 now -> after the write)",
            [
                f"{c['field']}: {_show(c['before'])} -> {_show(c['after'])}"
                for c in found.settings_changes
            ],
        )
    if found.outcome == "create" and found.body is not None:
        lines += _section("V2 body (POST)", _json_lines(found.body))
    elif found.write is not None:
        lines += _section("V2 body (PUT with If-Match)", _json_lines(found.write))
    elif found.body is not None:
        lines += _section("V2 body (from V1)", _json_lines(found.body))
    return "\n".join(lines)


def _section(title: str, rows: list[str]) -> list[str]:
    return ["", title, *(INDENT + row for row in rows)]


def _pairs(values: dict[str, Any]) -> list[str]:
    return [f"{name}: {_show(value)}" for name, value in values.items()]


def _json_lines(body: dict[str, Any]) -> list[str]:
    return json.dumps(body, indent=2, sort_keys=True, default=str).splitlines()


# The fields of a sync state an operator reads first (the key is the line's label).
STATE_FIELDS_FIRST = ("revision", "outcome", "pending", "uid", "epoch", "at")


def _state_fields(state: Any) -> Any:
    """A sync state for the text: its key left out, the telling fields first."""
    if not isinstance(state, dict):
        return state
    first = {name: state[name] for name in STATE_FIELDS_FIRST if name in state}
    rest = {name: value for name, value in state.items() if name not in first and name != "key"}
    return first | rest


def _show(value: Any) -> str:
    text = "(absent)" if value is None else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"
