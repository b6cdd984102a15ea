"""The NATS responders of the fake V2 services.

- ``lfx.projects-api.slug_to_uid``: the payload is a project slug; the reply
  that project's UID as text, or an empty body when no project has the slug.
- ``lfx.committee-api.list_members``: the payload is a committee UID; the reply
  the committee's members as a JSON list (``[]`` for an unknown committee).

Runs its own asyncio loop in a daemon thread so the sandbox can be used from
blocking code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sync_core.nats_connection import NatsTarget, connect_options, new_client

log = logging.getLogger(__name__)

SLUG_TO_UID_SUBJECT = "lfx.projects-api.slug_to_uid"
LIST_MEMBERS_SUBJECT = "lfx.committee-api.list_members"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class NatsResponder:
    """Answers ``slug_to_uid`` with ``lookup(slug)`` (a UID or ``None``) and
    ``list_members`` with ``members(committee_uid)`` (the API view of each member)."""

    def __init__(
        self,
        nats_url: NatsTarget | str,
        lookup: Callable[[str], str | None],
        members: Callable[[str], list[dict[str, Any]]],
    ) -> None:
        self.nats_url = nats_url
        self._lookup = lookup
        self._members = members
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sandbox-nats-responder", daemon=True
        )
        self._nc: Client | None = None
        self._subscriptions: list[Subscription] = []

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
        options = connect_options(self.nats_url)
        # (nats-py annotates the wait as int; a float works and is what we mean.)
        options.update(connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self._nc = new_client(self.nats_url)
        await self._nc.connect(**options, name="sandbox-nats-responder")
        self._subscriptions = [
            await self._nc.subscribe(SLUG_TO_UID_SUBJECT, cb=self._answer),
            await self._nc.subscribe(LIST_MEMBERS_SUBJECT, cb=self._answer_members),
        ]
        await self._nc.flush()

    async def _answer_members(self, msg: Msg) -> None:
        committee_uid = msg.data.decode(errors="replace").strip()
        members = self._members(committee_uid) if committee_uid else []
        log.debug("list_members", extra={"committee_uid": committee_uid, "count": len(members)})
        if msg.reply:
            await msg.respond(json.dumps(members).encode())

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
            log.warning("NATS responder did not drain cleanly")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()
