"""The V1 key codec: which object type a ``v1-objects`` key names, and its record id.

Keys are ``<schema>-<table>.<id>``. Both the bridge and the operator commands need
this, so it sits in the shared core; it does no I/O. It also holds the rules of
a key NATS KV accepts (``is_valid_kv_key``), which every KV write checks.

Each object type's key-level facts are one ``KeySpec`` (its prefix, its name,
its sync rank): the only facts of a type that the bridge needs, which cannot
import ``tasks/``. The type's ``ObjectKind`` (``tasks.kinds``) references its
spec and owns everything else; registering a kind registers its spec here, so
``parse_key``, ``KEY_PREFIXES`` and ``sync_rank`` know every registered type.
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

KEY_SEPARATOR = "."


class ObjectType(enum.StrEnum):
    """The V1 object types this service syncs (or will sync)."""

    PROJECT = "project"
    COMMITTEE = "committee"
    COMMITTEE_MEMBER = "committee_member"


@dataclass(frozen=True)
class KeySpec:
    """The key-level facts of one object type.

    Parameters:
        object_type: the type's name (``object_type`` of logs and metrics).
        prefix: the ``<schema>-<table>`` of its ``v1-objects`` keys.
        rank: its place in a bulk sync, parents first (a committee needs its
            project's mapping, a member its committee's).
    """

    object_type: str
    prefix: str
    rank: int


PROJECT_KEYS = KeySpec(ObjectType.PROJECT, "salesforce-project__c", rank=0)
COMMITTEE_KEYS = KeySpec(ObjectType.COMMITTEE, "platform-collaboration__c", rank=1)
MEMBER_KEYS = KeySpec(ObjectType.COMMITTEE_MEMBER, "platform-community__c", rank=2)
# The types every process knows (the bridge's reconciler sweeps their prefixes).
BUILTIN_KEYS = (PROJECT_KEYS, COMMITTEE_KEYS, MEMBER_KEYS)

_specs: dict[str, KeySpec] = {}
_prefix_types: dict[str, str] = {}
_specs_lock = threading.Lock()
# prefix -> object type of every registered spec (a live, read-only view).
KEY_PREFIXES: Mapping[str, str] = MappingProxyType(_prefix_types)


class KeySpecConflict(ValueError):
    """Another type already claims the prefix or the name."""


def register_keys(spec: KeySpec) -> None:
    """Make ``spec``'s keys known (idempotent for the same spec)."""
    with _specs_lock:
        current = _specs.get(spec.prefix)
        if current == spec:
            return
        if current is not None:
            raise KeySpecConflict(f"prefix {spec.prefix!r} is {current.object_type}'s already")
        if any(other.object_type == spec.object_type for other in _specs.values()):
            raise KeySpecConflict(f"object type {spec.object_type!r} has another prefix already")
        _specs[spec.prefix] = spec
        _prefix_types[spec.prefix] = spec.object_type


def unregister_keys(spec: KeySpec) -> None:
    """Forget ``spec`` (a test's toy type); unknown specs are ignored."""
    with _specs_lock:
        if _specs.get(spec.prefix) == spec:
            del _specs[spec.prefix]
            del _prefix_types[spec.prefix]


def key_specs() -> tuple[KeySpec, ...]:
    """Every registered spec, in sync order (rank, then prefix)."""
    with _specs_lock:
        registered_now = list(_specs.values())
    return tuple(sorted(registered_now, key=lambda spec: (spec.rank, spec.prefix)))


for _builtin in BUILTIN_KEYS:
    register_keys(_builtin)


def parse_key(key: str) -> tuple[str | None, str]:
    """Split a ``v1-objects`` key into its object type and record id.

    Everything after the first ``.`` is the id (ids may contain dots). A prefix we
    do not sync, a key without a ``.``, or a key with an empty id gives
    ``(None, id)``: the caller skips it quietly. The built-in types come back as
    their ``ObjectType`` member (a ``str``).
    """
    prefix, separator, record_id = key.partition(KEY_SEPARATOR)
    if not separator or not record_id:
        return None, record_id
    return KEY_PREFIXES.get(prefix), record_id


def sync_rank(key: str) -> int:
    """The rank of ``key``'s type in a bulk sync (parents first); unknown types last."""
    prefix, _, _ = key.partition(KEY_SEPARATOR)
    spec = _specs.get(prefix)
    return spec.rank if spec is not None else max((s.rank for s in key_specs()), default=0) + 1


# The key alphabet of NATS KV (nats.go's and nats-py's check), with the subject
# rules a key must also meet: no empty token, so no leading, trailing or double dot.
KV_KEY_PATTERN = re.compile(r"[-/_=.a-zA-Z0-9]+")
# Far below nats-server's 4096-byte control line, which also carries the
# ``$KV.{bucket}.`` prefix, a reply inbox and the sizes.
KV_KEY_MAX_CHARS = 1024
KEY_PREVIEW_CHARS = 60


class InvalidKVKey(ValueError):
    """A key NATS KV would refuse (or that would make the server drop the connection)."""


def is_valid_kv_key(key: object) -> bool:
    """Whether ``key`` is a KV key the server accepts."""
    return (
        isinstance(key, str)
        and 0 < len(key) <= KV_KEY_MAX_CHARS
        and KV_KEY_PATTERN.fullmatch(key) is not None
        and not key.startswith(".")
        and not key.endswith(".")
        and ".." not in key
    )


def check_kv_key(key: str) -> str:
    """``key`` itself, or ``InvalidKVKey`` naming (the start of) it."""
    if not is_valid_kv_key(key):
        preview = key[:KEY_PREVIEW_CHARS] if isinstance(key, str) else type(key).__name__
        length = len(key) if isinstance(key, str) else 0
        raise InvalidKVKey(f"not a valid KV key ({length} characters): {preview!r}")
    return key


# The forward mapping of a record in ``v1-mappings``: ``{object type}.sfid.{id}``.
FORWARD_MAPPING_INFIX = ".sfid."


def forward_mapping_key(object_type: str, record_id: str) -> str:
    """The ``v1-mappings`` key holding the V2 uid of record ``record_id`` of ``object_type``.

    Every kind's ``sfid_prefix`` follows this rule (the registry refuses one
    that does not): the reconciler, which cannot import the kinds, relies on it.
    """
    return f"{object_type}{FORWARD_MAPPING_INFIX}{record_id}"
