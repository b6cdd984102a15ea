"""The NATS responder of the projects API: ``lfx.projects-api.slug_to_uid``.

The request payload is a project slug; the reply is that project's UID as
text, or an empty body when no project has the slug. Runs its own asyncio
loop in a daemon thread so the sandbox can be used from blocking code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

SLUG_TO_UID_SUBJECT = "lfx.projects-api.slug_to_uid"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class SlugResponder:
    """Answers ``slug_to_uid`` requests with ``lookup(slug)`` (a UID or ``None``)."""

    def __init__(self, nats_url: str, lookup: Callable[[str], str | None]) -> None:
        self.nats_url = nats_url
        self._lookup = lookup
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sandbox-slug-responder", daemon=True
        )
        self._nc: Client | None = None
        self._subscription: Subscription | None = None

    def start(self) -> None:
        """Connect and subscribe; returns once the subscription reached the server."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            future.result(START_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    async def _start(self) -> None:
        self._nc = await nats.connect(
            servers=[u.strip() for u in self.nats_url.split(",")],
            name="sandbox-slug-responder",
            connect_timeout=5,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
        )
        self._subscription = await self._nc.subscribe(SLUG_TO_UID_SUBJECT, cb=self._answer)
        await self._nc.flush()

    async def _answer(self, msg: Msg) -> None:
        slug = msg.data.decode(errors="replace").strip()
        uid = self._lookup(slug) if slug else None
        log.debug("slug_to_uid", extra={"slug": slug, "project_uid": uid})
        if msg.reply:
            await msg.respond((uid or "").encode())

    async def _stop(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except Exception:  # a broken connection still has to be closed
                await self._nc.close()
        self._nc = None

    def stop(self) -> None:
        """Drain the connection, stop the loop and join its thread."""
        if not self._thread.is_alive():
            self._loop.close()
            return
        future = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        try:
            future.result(STOP_TIMEOUT)
        except Exception:  # stopping must not fail
            log.warning("slug responder did not drain cleanly")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()
