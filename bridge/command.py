"""``v1-sync-helper bridge``."""

from __future__ import annotations

import click


@click.command("bridge")
def bridge_command() -> None:
    """Pull KV changes from JetStream and enqueue one Celery task per change."""
    import asyncio

    from bridge.service import serve
    from sync_core.logs import configure_logging
    from sync_core.settings import BridgeSettings, load_settings

    settings = load_settings(BridgeSettings)
    configure_logging(settings.debug)
    asyncio.run(serve(settings))
