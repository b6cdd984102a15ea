"""Every private part of kombu, Celery and nats-py that our patches and subclasses rely on.

``tasks/worker/patches/broker_transport.py`` and ``tasks/worker/patches/kombu_redis_fix.py`` patch
kombu's Redis transport, ``tasks/worker/patches/event_batching.py`` reaches into Celery's
consumer, ``sync_core/nats_kv.py`` subclasses nats-py's ``KeyValue`` and
``tasks/run/runtime.py`` imports from ``celery._state``, and
``sync_core/nats_connection.py`` hooks nats-py's INFO handling to insist on
TLS. A release that renames or reshapes one of these would break a patch or,
worse, silently turn off a fast path. The versions are pinned (``constraints.txt``, upper bounds in
pyproject.toml); this test is what a version bump must pass: each symbol
exists, with the parameters we call or override it with, and the library
still calls the methods we override. A failure names the symbol and its user.

The symbols are looked up in a fresh interpreter that imports only the
libraries, so the check sees them as released, not as our patches left them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

PROBE_TIMEOUT = 60


@dataclass(frozen=True)
class PrivateSymbol:
    """One thing we rely on.

    ``name``: ``module:attribute.path``; ``module:Factory#attribute`` for an
    attribute of an instance built by the probe's factory of that name.
    ``parameters``: the expected parameter names (None: existence only).
    ``calls``: text the symbol's source must contain (the library still calls
    the method we override). ``used_by``: where we rely on it.
    """

    name: str
    used_by: str
    parameters: tuple[str, ...] | None = None
    calls: str | None = None


KOMBU_REDIS = "kombu.transport.redis"
BROKER_TRANSPORT = "tasks/worker/patches/broker_transport.py"
SYMBOLS = (
    # tasks/worker/patches/kombu_redis_fix.py wraps it (and calls it with asynchronous=).
    PrivateSymbol(
        f"{KOMBU_REDIS}:Channel._connparams",
        "tasks/worker/patches/kombu_redis_fix.py",
        ("self", "asynchronous"),
    ),
    PrivateSymbol(
        "kombu.transport.virtual:Channel.__init__",
        "tasks/worker/patches/kombu_redis_fix.py",
        calls="self.connection = connection",
    ),
    # tasks/worker/patches/broker_transport.py replaces conn_or_acquire and calls these.
    PrivateSymbol(f"{KOMBU_REDIS}:Channel.conn_or_acquire", BROKER_TRANSPORT, ("self", "client")),
    PrivateSymbol(
        f"{KOMBU_REDIS}:Channel._create_client", BROKER_TRANSPORT, ("self", "asynchronous")
    ),
    PrivateSymbol(f"{KOMBU_REDIS}:Channel.pool", BROKER_TRANSPORT, ("self",)),
    PrivateSymbol(
        f"{KOMBU_REDIS}:QoS.append", BROKER_TRANSPORT, ("self", "message", "delivery_tag")
    ),
    PrivateSymbol(f"{KOMBU_REDIS}:QoS.ack", BROKER_TRANSPORT, ("self", "delivery_tag")),
    PrivateSymbol(
        f"{KOMBU_REDIS}:QoS.reject", BROKER_TRANSPORT, ("self", "delivery_tag", "requeue")
    ),
    PrivateSymbol(
        f"{KOMBU_REDIS}:QoS._remove_from_indices",
        BROKER_TRANSPORT,
        ("self", "delivery_tag", "pipe"),
    ),
    PrivateSymbol(f"{KOMBU_REDIS}:QoS.unacked_key", BROKER_TRANSPORT, ("self",)),
    PrivateSymbol(f"{KOMBU_REDIS}:QoS.unacked_index_key", BROKER_TRANSPORT, ("self",)),
    PrivateSymbol(
        "kombu.transport.virtual:QoS.__init__", BROKER_TRANSPORT, calls="self.channel = channel"
    ),
    PrivateSymbol(
        f"{KOMBU_REDIS}:virtual.QoS.append", BROKER_TRANSPORT, ("self", "message", "delivery_tag")
    ),
    PrivateSymbol(f"{KOMBU_REDIS}:virtual.QoS.ack", BROKER_TRANSPORT, ("self", "delivery_tag")),
    # The payload kombu stores in its unacked hash: [message._raw, exchange, routing_key].
    PrivateSymbol("kombu.transport.virtual:Message#_raw", BROKER_TRANSPORT),
    PrivateSymbol(
        f"{KOMBU_REDIS}:QoS.append",
        BROKER_TRANSPORT,
        calls="dumps([message._raw, EX, RK])",
    ),
    # tasks/worker/patches/event_batching.py: the consumer's flush and the Events step's hook.
    PrivateSymbol(
        "celery.worker.consumer.consumer:Consumer._flush_events",
        "tasks/worker/patches/event_batching.py",
        ("self",),
    ),
    PrivateSymbol(
        "celery.worker.consumer.consumer:Consumer.on_send_event_buffered",
        "tasks/worker/patches/event_batching.py",
        ("self",),
    ),
    PrivateSymbol(
        "celery.worker.consumer.events:Events.start",
        "tasks/worker/patches/event_batching.py",
        calls="on_send_buffered=c.on_send_event_buffered",
    ),
    PrivateSymbol("celery._state:get_current_app", "tasks/run/runtime.py", ()),
    # sync_core/nats_connection.py: TlsEnforcingClient checks the server's INFO
    # in _process_info, which the connect (and each reconnect) runs before it
    # decides on TLS and writes CONNECT.
    PrivateSymbol(
        "nats.aio.client:Client._process_info",
        "sync_core/nats_connection.py",
        ("self", "info", "initial_connection"),
    ),
    PrivateSymbol(
        "nats.aio.client:Client._process_connect_init",
        "sync_core/nats_connection.py",
        calls="await self._process_info(srv_info, initial_connection=True)",
    ),
    # sync_core/nats_kv.py: LeanKeyValue rebuilds nats-py's KeyValue from its attributes
    # and overrides _get and _update, which the public get/create/update call.
    PrivateSymbol(
        "nats.js.kv:KeyValue.__init__",
        "sync_core/nats_kv.py",
        ("self", "name", "stream", "pre", "js", "direct"),
    ),
    *(
        PrivateSymbol(f"nats.js.kv:KeyValue#{attribute}", "sync_core/nats_kv.py")
        for attribute in ("_name", "_stream", "_pre", "_js", "_direct")
    ),
    PrivateSymbol("nats.js.client:JetStreamContext#_prefix", "sync_core/nats_kv.py"),
    PrivateSymbol("nats.js.client:JetStreamContext#_timeout", "sync_core/nats_kv.py"),
    PrivateSymbol("nats.js.kv:KeyValue._get", "sync_core/nats_kv.py", ("self", "key", "revision")),
    PrivateSymbol("nats.js.kv:KeyValue.get", "sync_core/nats_kv.py", calls="self._get(key"),
    PrivateSymbol(
        "nats.js.kv:KeyValue._update",
        "sync_core/nats_kv.py",
        ("self", "key", "value", "last", "validate_keys", "msg_ttl"),
    ),
    PrivateSymbol("nats.js.kv:KeyValue.update", "sync_core/nats_kv.py", calls="self._update("),
    PrivateSymbol("nats.js.kv:KeyValue.create", "sync_core/nats_kv.py", calls="self._update("),
    PrivateSymbol("nats.js.kv:_is_key_valid", "sync_core/nats_kv.py", ("key",)),
    PrivateSymbol(
        "nats.js.kv:KeyValue.Entry",
        "sync_core/nats_kv.py",
        ("bucket", "key", "value", "revision", "delta", "created", "operation"),
    ),
    PrivateSymbol(
        "nats.js.errors:KeyDeletedError.__init__", "sync_core/nats_kv.py", ("self", "entry", "op")
    ),
)

# Runs in a fresh interpreter: reads the symbols from stdin, prints what it found.
PROBE = r"""
import importlib, inspect, json, sys, textwrap

def factories():
    from nats.aio.client import Client
    from nats.js.kv import KeyValue
    from kombu.transport import virtual
    js = Client().jetstream()
    payload = {"body": "", "content-type": "application/json", "content-encoding": "utf-8",
               "headers": {}, "properties": {"delivery_tag": "t", "delivery_info": {}}}
    return {
        "nats.js.kv:KeyValue": lambda: KeyValue("b", "KV_b", "$KV.b.", js, False),
        "nats.js.client:JetStreamContext": lambda: js,
        "kombu.transport.virtual:Message": lambda: virtual.Message(payload, channel=None),
    }

def resolve(name):
    if "#" in name:
        factory, attribute = name.split("#")
        instance = factories()[factory]()
        if not hasattr(instance, attribute):
            raise AttributeError(f"instance has no attribute {attribute!r}")
        return getattr(instance, attribute)
    module_name, path = name.split(":")
    target = importlib.import_module(module_name)
    for part in path.split("."):
        owner = target
        if inspect.isclass(owner):  # static: a property or cached_property as defined
            target = inspect.getattr_static(owner, part)
        else:
            target = getattr(owner, part)
    return target

def function_of(target):
    for attribute in ("fget", "func", "__func__"):
        inner = getattr(target, attribute, None)
        if inner is not None:
            return inner
    return target

found = {}
for name in json.load(sys.stdin):
    try:
        target = function_of(resolve(name))
    except Exception as error:
        found[name] = {"error": f"{type(error).__name__}: {error}"}
        continue
    entry = {}
    try:
        entry["parameters"] = list(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        entry["parameters"] = None
    try:
        entry["source"] = inspect.getsource(target)
    except (TypeError, OSError):
        entry["source"] = None
    found[name] = entry
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def released() -> dict[str, dict[str, object]]:
    """What the installed libraries hold, looked up before any patch of ours runs."""
    names = sorted({symbol.name for symbol in SYMBOLS})
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        check=True,
    )
    found: dict[str, dict[str, object]] = json.loads(result.stdout)
    return found


@pytest.mark.parametrize(
    "symbol",
    SYMBOLS,
    ids=[f"{s.name}{' calls' if s.calls else ''}" for s in SYMBOLS],
)
def test_private_symbol_is_as_our_code_expects(
    symbol: PrivateSymbol, released: dict[str, dict[str, object]]
) -> None:
    found = released[symbol.name]
    where = f"(relied on by {symbol.used_by}; see constraints.txt before changing the pin)"
    if "error" in found:
        pytest.fail(f"private symbol {symbol.name} is gone: {found['error']} {where}")
    if symbol.parameters is not None:
        parameters = tuple(found["parameters"] or ())  # type: ignore[call-overload]
        if parameters != symbol.parameters:
            pytest.fail(
                f"private symbol {symbol.name} changed its parameters: expected "
                f"{symbol.parameters}, found {parameters} {where}"
            )
    if symbol.calls is not None:
        source = " ".join(str(found.get("source") or "").split()).replace('"', "'")
        expected = " ".join(symbol.calls.split()).replace('"', "'")
        if expected not in source:
            pytest.fail(
                f"private symbol {symbol.name} no longer contains {symbol.calls!r}: "
                f"the override or hook it feeds may be skipped now {where}"
            )


def test_the_probe_fails_loudly_on_a_renamed_symbol() -> None:
    """The check itself can fail: a symbol that does not exist is reported by name."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        input=json.dumps([f"{KOMBU_REDIS}:Channel._connparams_renamed"]),
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        check=True,
    )
    found = json.loads(result.stdout)[f"{KOMBU_REDIS}:Channel._connparams_renamed"]
    assert "AttributeError" in found["error"]
