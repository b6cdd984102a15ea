"""``v1-sync-helper dev``: the whole pipeline on an embedded local stack."""

from __future__ import annotations

import click


@click.command("dev")
def dev_command() -> None:
    """Start nats-server, valkey, the sandbox, a bridge, a worker and Flower."""
    raise click.ClickException("the local stack is not implemented yet (issue 6)")
