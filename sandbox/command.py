"""``v1-sync-helper dev``: the whole pipeline on an embedded local stack."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import click

DEFAULT_RUN_DIR = ".run"
DEFAULT_SYNC_TIMEOUT = 300.0


@click.group("dev", invoke_without_command=True)
@click.option(
    "--exit-when-synced",
    is_flag=True,
    help="Stop after the summary: exit 0 when every valid sample object reached the "
    "sandbox and exactly the malformed ones are in the dead letters.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=DEFAULT_SYNC_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the sample data to sync.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_RUN_DIR,
    show_default=True,
    help="Where keys, server data and logs live.",
)
@click.option(
    "--dump-state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="After the summary, write the sandbox's objects and the dead letters to this JSON file.",
)
@click.pass_context
def dev_command(
    ctx: click.Context,
    exit_when_synced: bool,
    timeout: float,
    run_dir: Path,
    dump_state: Path | None,
) -> None:
    """Start nats-server, valkey, the sandbox, a bridge, a worker and Flower.

    Loads the sample V1 data and shows it syncing. With NATS_URL, REDIS_URL
    and PROJECT_SERVICE_URL set, runs only the bridge, a worker and Flower
    against those services.
    """
    if ctx.invoked_subcommand is not None:
        return
    from sandbox.dev_session import run

    sys.exit(run(run_dir, timeout, exit_when_synced, dump_state))


@dev_command.command("put")
@click.argument("key")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_RUN_DIR,
    show_default=True,
)
def put_command(key: str, file: BinaryIO, run_dir: Path) -> None:
    """Write FILE (JSON or msgpack) as KEY into v1-objects of the running local stack."""
    import asyncio

    from sandbox.stack import read_stack_file
    from sync_core.nats_client import connect

    try:
        nats_url = read_stack_file(run_dir)["nats_url"]
    except FileNotFoundError:
        raise click.ClickException("no local stack runs here: start it with `make run`") from None
    value = file.read()

    async def put() -> int:
        nc = await connect(nats_url, "dev-put")
        try:
            kv = await nc.jetstream().key_value("v1-objects")
            return int(await kv.put(key, value))
        finally:
            await nc.close()

    revision = asyncio.run(put())
    click.echo(f"put {key} at revision {revision}")
