"""Operator commands: flower, dlq, requeue, replay, status."""

from __future__ import annotations

import click

NOT_YET = "not implemented yet (issue 7)"


@click.command("flower")
def flower_command() -> None:
    """Run Flower for the sync app, with basic auth."""
    raise click.ClickException(NOT_YET)


@click.group("dlq")
def dlq_group() -> None:
    """List, show, re-queue and purge dead-lettered tasks."""


@click.command("requeue")
@click.argument("keys", nargs=-1, required=True)
def requeue_command(keys: tuple[str, ...]) -> None:
    """Enqueue a sync of each KEY at its current revision."""
    raise click.ClickException(NOT_YET)


@click.command("replay")
def replay_command() -> None:
    """Enqueue every current key of v1-objects (a full resync)."""
    raise click.ClickException(NOT_YET)


@click.command("status")
def status_command() -> None:
    """Consumer, queue, worker and dead-letter health; non-zero when unhealthy."""
    raise click.ClickException(NOT_YET)
