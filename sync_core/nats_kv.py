"""A nats-py KV handle whose hot calls are bare JetStream API requests.

A worker run reads and writes a handful of KV keys, and nats-py's general
path costs about twice the request itself per call: ``asyncio.wait_for`` (a
task and a timer per request), the JetStream manager's dataclasses, and the
``email`` parser for the headers of every message it reads. ``LeanKeyValue``
is nats-py's ``KeyValue`` with ``get`` (latest revision), ``put``, ``create``
and ``update`` sent as the same API requests over one reply subscription
(``ReplyInbox``) and parsed directly; everything else (deletes, purges,
watches, reads of a given revision, direct-get buckets) is nats-py's own.

Same requests, same answers, same exceptions as nats-py (``KeyNotFoundError``,
``KeyWrongLastSequenceError``, ``APIError``, ``NoStreamResponseError``,
``nats.errors.TimeoutError``): ``tests/test_nats_kv.py`` runs both side by
side against a real server. Reads go to the stream leader (``STREAM.MSG.GET``,
as nats-py does for a bucket without direct get), so a read after a write
sees it.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from datetime import datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import (
    APIError,
    InvalidKeyError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue, _is_key_valid

DEFAULT_API_PREFIX = "$JS.API"
DEFAULT_TIMEOUT = 5.0
# nats-py's reply status for a request nobody subscribed to.
NO_RESPONDERS_STATUS = "503"
# JetStream's error codes of a compare-and-set that lost (JSStreamWrongLastSequence…).
WRONG_LAST_SEQUENCE_CODES = frozenset({10071, 10164})
NOT_FOUND_CODE = 404
KV_OPERATION_HEADER = b"kv-operation"
# nats-py's parsed form of the same header (a direct get's headers).
KV_OPERATION = "KV-Operation"
KV_DELETE = "DEL"
KV_PURGE = "PURGE"
DELETE_OPERATIONS = {b"DEL": "DEL", b"PURGE": "PURGE"}


class ReplyInbox:
    """Request-reply on one wildcard subscription of a connection.

    Each request waits on a plain future, timed out by one loop timer; the
    subscription is made on first use (and nats-py renews it after a
    reconnect). Loop-side only: call it from coroutines on the connection's loop.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._ready: asyncio.Future[None] | None = None
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._tokens = itertools.count()

    async def request(
        self,
        subject: str,
        payload: bytes,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> Msg:
        """The reply to ``payload`` on ``subject``; ``NoRespondersError``, ``TimeoutError``."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._subscribe())
        try:
            await self._ready
        except BaseException:
            self._ready = None
            raise
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = reply
        timer = loop.call_later(timeout, _expire, reply)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            msg = await reply
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        if msg.headers and msg.headers.get(Header.STATUS.value) == NO_RESPONDERS_STATUS:
            raise NoRespondersError
        return msg

    async def _subscribe(self) -> None:
        prefix = self._nc.new_inbox() + "."
        await self._nc.subscribe(prefix + "*", cb=self._on_reply)
        self._prefix = prefix

    async def _on_reply(self, msg: Msg) -> None:
        reply = self._waiting.get(msg.subject[len(self._prefix) :])
        if reply is not None and not reply.done():
            reply.set_result(msg)


def _expire(reply: asyncio.Future[Msg]) -> None:
    if not reply.done():
        reply.set_exception(NatsTimeoutError())


class LeanKeyValue(KeyValue):
    """nats-py's ``KeyValue`` for one bucket with the hot calls on a ``ReplyInbox``.

    Parameters:
        handle: nats-py's handle of the bucket (``js.key_value(bucket)``).
        inbox: the connection's reply inbox.
    """

    def __init__(self, handle: KeyValue, inbox: ReplyInbox) -> None:
        super().__init__(handle._name, handle._stream, handle._pre, handle._js, handle._direct)
        self._inbox = inbox
        js: JetStreamContext = handle._js
        self._api_prefix = str(getattr(js, "_prefix", DEFAULT_API_PREFIX))
        self._timeout = float(getattr(js, "_timeout", DEFAULT_TIMEOUT))

    def __repr__(self) -> str:
        return f"LeanKeyValue(bucket={self._name!r})"

    async def _get(self, key: str, revision: int | None = None) -> KeyValue.Entry:
        if revision is not None or self._direct:
            return await self._get_stored(key, revision)
        subject = self._pre + key
        message = await self._stream_message({"last_by_subj": subject})
        if message is None:
            raise KeyNotFoundError
        stored = message.get("subject")
        if stored != subject:
            raise KeyNotFoundError(message=f"expected '{subject}', but got '{stored}'")
        data = message.get("data")
        entry = KeyValue.Entry(
            bucket=self._name,
            key=key,
            value=base64.b64decode(data) if data else None,
            revision=int(message["seq"]),
            delta=None,
            # When the value was written: the worker's sync-lag histogram starts there.
            created=_stored_time(message.get("time")),  # type: ignore[arg-type]
            operation=None,
        )
        operation = _delete_operation(message.get("hdrs"))
        if operation is not None:
            raise KeyDeletedError(entry, operation)
        return entry

    async def _get_stored(self, key: str, revision: int | None) -> KeyValue.Entry:
        """nats-py's own read (``js.get_msg``: direct get, or a given revision), time kept.

        The same steps as nats-py's ``KeyValue._get``, which drops the stored
        time that ``get_msg`` parses (``RawStreamMsg.time``); the worker's
        sync-lag histogram starts there, and buckets made by the Go client or
        the nats CLI allow direct gets.
        """
        subject = self._pre + key
        try:
            if revision:
                msg = await self._js.get_msg(self._stream, seq=revision, direct=self._direct)
            else:
                msg = await self._js.get_msg(self._stream, subject=subject, direct=self._direct)
        except NotFoundError:
            raise KeyNotFoundError from None
        if subject != msg.subject:
            raise KeyNotFoundError(message=f"expected '{subject}', but got '{msg.subject}'")
        entry = KeyValue.Entry(
            bucket=self._name,
            key=key,
            value=msg.data,
            revision=msg.seq,
            delta=None,
            created=msg.time,  # type: ignore[arg-type]
            operation=None,
        )
        operation = (msg.headers or {}).get(KV_OPERATION)
        if operation in (KV_DELETE, KV_PURGE):
            raise KeyDeletedError(entry, operation)
        return entry

    async def has_any(self, key_filter: str) -> bool:
        """Whether any message (a value or a delete marker) is stored under ``key_filter``.

        One message lookup (``next_by_subj`` from the first sequence); ``key_filter``
        may end in a wildcard (``parked.project.sfid.X.>``).
        """
        found = await self._stream_message({"seq": 1, "next_by_subj": self._pre + key_filter})
        return found is not None

    async def put(self, key: str, value: bytes, validate_keys: bool = True) -> int:
        if validate_keys and not _is_key_valid(key):
            raise InvalidKeyError(key)
        return await self._publish(key, value, None)

    async def _update(
        self,
        key: str,
        value: bytes,
        last: int | None = None,
        validate_keys: bool = True,
        msg_ttl: float | None = None,
    ) -> int:
        if msg_ttl is not None:
            return int(await super()._update(key, value, last, validate_keys, msg_ttl))
        if validate_keys and not _is_key_valid(key):
            raise InvalidKeyError(key)
        headers = {Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(last or 0)}
        try:
            return await self._publish(key, value, headers)
        except APIError as error:
            if error.err_code in WRONG_LAST_SEQUENCE_CODES:
                raise KeyWrongLastSequenceError(description=error.description) from None
            raise

    async def _publish(self, key: str, value: bytes, headers: dict[str, str] | None) -> int:
        try:
            msg = await self._inbox.request(self._pre + key, value, self._timeout, headers)
        except NoRespondersError:
            raise NoStreamResponseError from None
        response = json.loads(msg.data)
        if "error" in response:
            APIError.from_error(response["error"])  # raises
        return int(response["seq"])

    async def _stream_message(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The stream's ``STREAM.MSG.GET`` answer's message; None when there is none (404)."""
        subject = f"{self._api_prefix}.STREAM.MSG.GET.{self._stream}"
        try:
            msg = await self._inbox.request(subject, json.dumps(request).encode(), self._timeout)
        except NoRespondersError:
            raise ServiceUnavailableError from None
        response = json.loads(msg.data)
        error = response.get("error")
        if error is None:
            return dict(response["message"])
        if error.get("code") == NOT_FOUND_CODE:
            return None
        APIError.from_error(error)  # raises the matching APIError
        raise AssertionError("unreachable")  # from_error always raises


def _stored_time(text: Any) -> datetime | None:
    """The stored message's ``time`` (RFC 3339, nanoseconds), to the microsecond; None if absent.

    A ``datetime`` as nats-py's own watchers give ``Entry.created`` (its
    ``get`` leaves it None).
    """
    if not isinstance(text, str) or not text:
        return None
    head, dot, fraction = text.partition(".")
    if dot:
        # Python reads at most six fraction digits: cut the nanoseconds, keep the zone.
        digits = len(fraction) - len(fraction.lstrip("0123456789"))
        text = f"{head}.{fraction[: min(digits, 6)]}{fraction[digits:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _delete_operation(encoded_headers: Any) -> str | None:
    """``DEL`` or ``PURGE`` when the stored message's headers mark a deleted key."""
    if not encoded_headers:
        return None
    # "NATS/1.0\r\nKV-Operation: DEL\r\n\r\n", base64-encoded by the API.
    for line in base64.b64decode(encoded_headers).split(b"\r\n")[1:]:
        name, separator, value = line.partition(b":")
        if separator and name.strip().lower() == KV_OPERATION_HEADER:
            return DELETE_OPERATIONS.get(value.strip())
    return None
