"""The ``v1-sync-helper`` command: one entry point for every process.

The top of the layout: each subcommand lives beside the code it runs (``bridge``,
``tasks``, ``operations``, ``sandbox`` for ``dev``) and imports its heavy modules
only when invoked, so ``--help`` stays fast.
"""

from __future__ import annotations

import click

from bridge.command import bridge_command
from operations.commands import (
    dlq_group,
    flower_command,
    replay_command,
    requeue_command,
    status_command,
)
from operations.explain_command import explain_command
from sandbox.command import dev_command
from tasks.worker.command import worker_command
from v1_sync_helper import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="v1-sync-helper")
def main() -> None:
    """Sync V1 records from NATS KV into the LFX V2 Project and Committee services."""


for command in (
    bridge_command,
    worker_command,
    flower_command,
    dev_command,
    requeue_command,
    dlq_group,
    replay_command,
    status_command,
    explain_command,
):
    main.add_command(command)
