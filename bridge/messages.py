"""Celery task messages (``sync_kv_entry``, ``sync_v2_event``), as ``apply_async`` writes them.

``apply_async`` costs about 0.4 ms of CPU per task; most of it goes to work
that is the same for every task of the bridge. So the encoder runs Celery's
and kombu's own code once, at start-up, on a task whose variable fields hold
placeholders: ``app.amqp.as_task_v2`` for the protocol-2 headers, properties
and body; kombu's JSON serializer for the body; the virtual channel's
envelope (base64 body, delivery info, priority, delivery tag) as the Redis
transport stores it; and the ``task-sent`` event as Celery's event dispatcher
builds it. The serialized texts become templates; per message only the
placeholders are filled in with JSON-encoded values (the id, the arguments,
their repr, a fresh delivery tag, the event clock and timestamp).

The tests prove the result equals what ``send_task`` writes to Redis, and
that a real worker and a real event receiver understand it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.events import Event
from celery.utils.saferepr import saferepr
from celery.utils.time import utcoffset
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps as kombu_dumps
from kombu.utils.json import dumps as json_dumps

from bridge.changes import KvChange
from sync_core.broker import SYNC_TASK_NAME, broker_transport_options, task_id_for
from sync_core.epochs import EPOCH_TASK_KWARG
from sync_core.redis_connection import RedisTarget, celery_broker_config

TASK_SENT_EVENT = "task-sent"
TASK_SENT_ROUTING_KEY = "task.sent"
SERIALIZER = "json"
# The virtual transport's envelope encodes bodies in base64 (kombu's default).
BODY_ENCODING = "base64"
# kombu's Redis transport default: fanout topics are prefixed with "/{db}.".
DEFAULT_FANOUT_PREFIX = "/{db}."

_SLOT = "@@bridge-slot-{}@@"
_SLOT_PATTERN = re.compile(r'"@@bridge-slot-(\w+)@@"')
# Keys made only of these characters have a repr() equal to Celery's saferepr().
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]*")
# RFC 4122 variant: the first hex digit of the fourth group is 8, 9, a or b.
_UUID_VARIANT = "89ab"


def producer_app(
    broker: RedisTarget | str, queue: str, transport_options: Mapping[str, Any] | None = None
) -> Celery:
    """A Celery app configured as the bridge's producer (it registers no tasks).

    Sent events make Flower show a task as soon as it is queued; the socket
    and connect timeouts keep a half-open broker connection from blocking.
    """
    config = celery_broker_config(broker, dict(transport_options or broker_transport_options()))
    app = Celery("v1-sync-bridge", broker=config["broker_url"], set_as_current=False)
    app.conf.update(
        task_serializer=SERIALIZER,
        accept_content=[SERIALIZER],
        task_send_sent_event=True,
        task_default_queue=queue,
        broker_connection_timeout=5.0,
        **config,
    )
    return app


class _Template:
    """A JSON text with named placeholders, each filled with a JSON fragment."""

    def __init__(self, text: str) -> None:
        self.slots = frozenset(_SLOT_PATTERN.findall(text))
        escaped = text.replace("%", "%%")
        self._format = _SLOT_PATTERN.sub(r"%(\1)s", escaped)

    def fill(self, values: Mapping[str, str]) -> str:
        """The text with every placeholder replaced by its (JSON) value."""
        return self._format % values


def _slot(name: str) -> str:
    return _SLOT.format(name)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def delivery_tags(count: int) -> list[str]:
    """``count`` random UUID4 strings as JSON texts (kombu tags messages with uuid4).

    One ``os.urandom`` call for the whole batch instead of one per tag: the
    same random version-4 UUIDs at half the cost of ``uuid.uuid4()``.
    """
    digits = os.urandom(16 * count).hex()
    tags = []
    for start in range(0, 32 * count, 32):
        h = digits[start : start + 32]
        variant = _UUID_VARIANT[int(h[16], 16) & 3]
        tags.append(f'"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"')
    return tags


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """The Redis writes of one batch: task messages for the queue, events for the topic."""

    queue: str
    tasks: Sequence[str]
    event_topic: str
    events: Sequence[str]


def fanout_prefix(transport_options: Mapping[str, Any], db: int) -> str:
    """The prefix kombu's Redis transport puts before fanout topics."""
    prefix = transport_options.get("fanout_prefix", True)
    if prefix is True:
        prefix = DEFAULT_FANOUT_PREFIX
    elif not prefix:
        prefix = ""
    return str(prefix).format(db=db)


class TaskMessageEncoder:
    """Turns KV changes into the Redis payloads ``send_task`` would have written."""

    def __init__(
        self,
        app: Celery,
        queue: str,
        db: int,
        task_kwargs: Mapping[str, Any] | None = None,
        task_name: str = SYNC_TASK_NAME,
    ) -> None:
        """``task_kwargs`` go into every message (the bridge sends the epoch of
        ``v1-objects``, ``with_epoch``; manual re-queues send ``force=True``).
        ``task_name``: ``sync_kv_entry``, or ``sync_v2_event`` for the V2 events."""
        self.queue = queue
        self.task_name = task_name
        self._app, self._db, self._task_kwargs = app, db, dict(task_kwargs or {})
        self._stamped: dict[tuple[tuple[str, Any], ...], TaskMessageEncoder] = {}
        amqp = app.amqp
        self._argsrepr_maxsize = amqp.argsrepr_maxsize
        self._repr_maxlevels = app.conf.task_repr_maxlevels
        self._task_template, self._body_template, sent_event = self._task_templates(
            app, queue, dict(task_kwargs or {}), task_name
        )
        self._event_body_template, self._event_template = self._event_templates(app, sent_event)
        self._clock = app.clock
        options = app.conf.broker_transport_options or {}
        topic = f"{fanout_prefix(options, db)}{app.conf.event_exchange}"
        if options.get("fanout_patterns", True):
            topic = f"{topic}/{TASK_SENT_ROUTING_KEY}"
        self.event_topic = topic

    def with_epoch(self, epoch: int) -> TaskMessageEncoder:
        """This encoder with every task stamped with ``epoch`` (``sync_core.epochs``).

        The stamp is one more constant keyword argument of the templates: no cost
        per message. Built once per epoch (a rebuilt bucket brings a new one).
        """
        return self.with_kwargs({EPOCH_TASK_KWARG: epoch})

    def with_kwargs(self, extra: Mapping[str, Any]) -> TaskMessageEncoder:
        """This encoder with ``extra`` keyword arguments in every task (built once per set)."""
        wanted = tuple(sorted({**self._task_kwargs, **extra}.items()))
        stamped = self._stamped.get(wanted)
        if stamped is None:
            stamped = TaskMessageEncoder(
                self._app, self.queue, self._db, task_kwargs=dict(wanted), task_name=self.task_name
            )
            self._stamped[wanted] = stamped
        return stamped

    @staticmethod
    def _task_templates(
        app: Celery, queue: str, task_kwargs: dict[str, Any], task_name: str
    ) -> tuple[_Template, _Template, dict[str, Any]]:
        """Run Celery's own message construction once, on placeholder values."""
        amqp = app.amqp
        headers, properties, body, sent_event = amqp.as_task_v2(
            _slot("id"),
            task_name,
            args=(_slot("key"), _slot("revision"), _slot("operation")),
            kwargs=task_kwargs,
            reply_to=app.thread_oid,
            create_sent_event=True,
            argsrepr=_slot("argsrepr"),
            ignore_result=None,
        )
        # What Producer.publish does: delivery mode, then the serializer.
        declared = amqp.queues[queue]
        mode = declared.exchange.delivery_mode or app.conf.task_default_delivery_mode
        properties["delivery_mode"] = maybe_delivery_mode(mode)
        content_type, content_encoding, payload = kombu_dumps(body, serializer=SERIALIZER)
        # What the virtual channel's prepare_message and basic_publish add.
        properties.setdefault("delivery_info", {})
        properties.setdefault("priority", 0)
        properties["body_encoding"] = BODY_ENCODING
        properties["delivery_tag"] = _slot("delivery_tag")
        properties["delivery_info"].update(exchange="", routing_key=queue)
        envelope = {
            "body": _slot("body"),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": headers,
            "properties": properties,
        }
        assert sent_event is not None
        sent_event.update(queue=queue, exchange="", routing_key=queue)
        return _Template(json_dumps(envelope)), _Template(payload), sent_event

    @staticmethod
    def _event_templates(app: Celery, sent_event: dict[str, Any]) -> tuple[_Template, _Template]:
        """Build the ``task-sent`` event and its envelope as Celery's dispatcher does."""
        dispatcher = app.events.Dispatcher(enabled=False)
        event = Event(
            TASK_SENT_EVENT,
            hostname=dispatcher.hostname,
            utcoffset=_slot("utcoffset"),
            pid=dispatcher.pid,
            clock=_slot("clock"),
            **sent_event,
        )
        event["timestamp"] = _slot("timestamp")
        content_type, content_encoding, payload = kombu_dumps(
            event, serializer=dispatcher.serializer
        )
        envelope = {
            "body": _slot("body"),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": dict(dispatcher.headers),
            "properties": {
                "delivery_mode": maybe_delivery_mode(dispatcher.delivery_mode),
                "delivery_info": {
                    "exchange": dispatcher.exchange.name,
                    "routing_key": TASK_SENT_ROUTING_KEY,
                },
                "priority": 0,
                "body_encoding": BODY_ENCODING,
                "delivery_tag": _slot("delivery_tag"),
            },
        }
        return _Template(payload), _Template(json_dumps(envelope))

    def argsrepr(self, change: KvChange) -> str:
        """Celery's ``argsrepr`` header of the task: the repr of its arguments."""
        args = (change.key, change.revision, change.operation)
        if self._plain(change.key):
            return repr(args)
        return saferepr(args, self._argsrepr_maxsize, maxlevels=self._repr_maxlevels)

    def _plain(self, key: str) -> bool:
        """Whether ``key`` needs no escaping in JSON and reprs the same in Celery."""
        return len(key) < self._argsrepr_maxsize // 2 and _PLAIN_KEY.fullmatch(key) is not None

    def _json_fields(self, change: KvChange) -> tuple[str, str, str]:
        """The JSON texts of the key, the task id and the argsrepr of ``change``."""
        if self._plain(change.key):
            # Nothing to escape: skip three json.dumps calls per message.
            key = change.key
            args = f"('{key}', {change.revision}, '{change.operation}')"
            return f'"{key}"', f'"{key}@{change.revision}"', f'"{args}"'
        dumps = json.dumps
        return (
            dumps(change.key),
            dumps(task_id_for(change.key, change.revision)),
            dumps(self.argsrepr(change)),
        )

    def encode(self, changes: Sequence[KvChange]) -> EncodedBatch:
        """The task messages and ``task-sent`` events of ``changes``, in order."""
        offset = repr(utcoffset())
        tags = delivery_tags(2 * len(changes))
        tasks: list[str] = []
        events: list[str] = []
        body_fill = self._body_template.fill
        task_fill = self._task_template.fill
        event_body_fill = self._event_body_template.fill
        event_fill = self._event_template.fill
        forward = self._clock.forward
        for index, change in enumerate(changes):
            key, task_id, argsrepr = self._json_fields(change)
            body = body_fill(
                {"key": key, "revision": str(change.revision), "operation": f'"{change.operation}"'}
            )
            tasks.append(
                task_fill(
                    {
                        "body": '"' + _b64(body) + '"',
                        "id": task_id,
                        "argsrepr": argsrepr,
                        "delivery_tag": tags[2 * index],
                    }
                )
            )
            event_body = event_body_fill(
                {
                    "id": task_id,
                    "argsrepr": argsrepr,
                    "clock": str(forward()),
                    "utcoffset": offset,
                    "timestamp": repr(time.time()),
                }
            )
            events.append(
                event_fill(
                    {"body": '"' + _b64(event_body) + '"', "delivery_tag": tags[2 * index + 1]}
                )
            )
        return EncodedBatch(self.queue, tasks, self.event_topic, events)


def decode_envelope(raw: bytes | str) -> dict[str, Any]:
    """Parse a Redis-stored kombu envelope and decode its base64 body (for tests and tools)."""
    envelope: dict[str, Any] = json.loads(raw)
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    return envelope


def queued_revision(raw: bytes | str) -> int | None:
    """The KV revision a queued ``sync_kv_entry`` message is for; None for anything else
    (a ``sync_v2_event`` carries a sequence of another stream).

    The body is Celery's protocol 2 ``[args, kwargs, embed]`` with ``args`` =
    ``[key, revision, operation]``.
    """
    try:
        envelope = decode_envelope(raw)
        if envelope["headers"].get("task", SYNC_TASK_NAME) != SYNC_TASK_NAME:
            return None
        args = envelope["body"][0]
        revision = args[1]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return revision if isinstance(revision, int) and not isinstance(revision, bool) else None
