"""The safety net of the commands that change something: dry runs, confirmation, filters.

``requeue``, ``replay``, ``dlq requeue`` and ``dlq purge`` share these options:

- ``--dry-run``: read everything, print what would be done (with counts), change nothing;
- ``--yes``: skip the confirmation a bulk action asks for. Without a terminal on
  standard input (a script, CI, ``kubectl exec`` without ``-t``) there is no one
  to ask: the command refuses, exit 1, and says to pass ``--yes``;
- ``--type``: only keys of these object types (project, committee, committee_member);
- ``--kind``: only dead letters of these error kinds;
- ``--json``: one JSON document on stdout saying what was (or would be) done.

``KEY@REVISION`` (the task ids Flower and ``dlq list`` show) is split by
``parse_task_ref``: a key never contains ``@`` (the KV key alphabet has none).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from sync_core.keys import key_specs, parse_key

OTHER_TYPE = "other"

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class ConfirmationNeeded(click.ClickException):
    """A bulk action without --yes and without a terminal to ask on."""


def object_type_of(key: str) -> str:
    """The object type a ``v1-objects`` key names, or ``other``."""
    object_type, _ = parse_key(key)
    return object_type or OTHER_TYPE


def registered_types() -> list[str]:
    """The object types of the registered kinds (read at call time: a kind may be added)."""
    return [spec.object_type for spec in key_specs()]


def check_object_types(
    _context: click.Context, _parameter: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    """``--type`` values, each one a registered object type."""
    known = registered_types()
    for value in values:
        if value not in known:
            raise click.BadParameter(f"{value!r} is not one of {', '.join(known)}")
    return values


def count_by(items: Iterable[T], label: Callable[[T], str]) -> dict[str, int]:
    """How many items carry each label, largest first."""
    return dict(Counter(label(item) for item in items).most_common())


def describe_counts(counts: dict[str, int]) -> str:
    """``project 12, committee 3`` (or ``none``)."""
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def parse_task_ref(text: str) -> tuple[str, int | None]:
    """``KEY`` or ``KEY@REVISION`` -> (key, revision or None).

    Raises ``click.BadParameter`` for ``KEY@`` followed by anything but a revision number.
    """
    key, at, revision = text.strip().rpartition("@")
    if not at:
        return text.strip(), None
    if not key or not revision.isdigit():
        raise click.BadParameter(f"{text!r} is neither KEY nor KEY@REVISION")
    return key, int(revision)


def stdin_is_terminal() -> bool:
    """Whether someone can answer a prompt on standard input."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed or detached
        return False


def confirm_bulk(action: str, yes: bool) -> None:
    """Ask before ``action`` (a sentence with the counts) unless ``yes``.

    Without a terminal on stdin: ``ConfirmationNeeded`` (exit 1); a "no" aborts (exit 1).
    """
    if yes:
        return
    if not stdin_is_terminal():
        raise ConfirmationNeeded(
            f"{action}: this needs a confirmation, and standard input is not a terminal. "
            "Pass --yes to go ahead, or --dry-run to see what would be done."
        )
    click.confirm(f"{action}. Go ahead?", abort=True, err=True)


def echo_json(data: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def dry_run_option(command: F) -> F:
    """``--dry-run``: show what would be done, with counts; change nothing."""
    return click.option(
        "--dry-run",
        is_flag=True,
        help="Print what would be done, with counts, and change nothing.",
    )(command)


def yes_option(command: F) -> F:
    """``--yes``: no confirmation prompt (required when stdin is not a terminal)."""
    return click.option(
        "--yes",
        "-y",
        is_flag=True,
        help="Do not ask for confirmation (required without a terminal on stdin).",
    )(command)


def json_option(command: F) -> F:
    """``--json``: the result as one JSON document on stdout."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print what was (or would be) done as JSON."
    )(command)


def type_option(command: F) -> F:
    """``--type``: restrict to object types (repeatable)."""
    return click.option(
        "--type",
        "object_types",
        multiple=True,
        metavar="TYPE",
        callback=check_object_types,
        help="Only keys of this object type (repeatable): project, committee, committee_member.",
    )(command)


def kind_option(command: F) -> F:
    """``--kind``: restrict to dead-letter error kinds (repeatable)."""
    return click.option(
        "--kind",
        "kinds",
        multiple=True,
        metavar="KIND",
        help="Only dead letters of this error kind, e.g. validation (repeatable; "
        "`dlq list` shows the kinds).",
    )(command)
