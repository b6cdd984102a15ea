"""``v1-sync-helper worker``."""

from __future__ import annotations

import click


@click.command("worker")
def worker_command() -> None:
    """Run a Celery worker for the sync tasks."""
    from v1_sync_helper.logs import configure_logging
    from v1_sync_helper.settings import WorkerSettings, load_settings

    settings = load_settings(WorkerSettings)
    configure_logging(settings.debug)
    raise click.ClickException("the worker is not implemented yet (issue 4)")
