"""The registry of object types: every per-type table is built from it.

One ``ObjectKind`` per type, registered here: the task (``tasks.run.sync``) finds
a key's kind with ``kind_for_key``, the worker's runtime opens the V2 service of
every registered kind, ``requeue --undelete`` asks the kind for its tombstone,
and registering a kind registers its ``KeySpec`` in ``sync_core.keys`` (so
``parse_key``, the reconciler's prefixes and the bulk sync order know it).

The built-in kinds are registered when this module is imported. A test's toy
type comes and goes with ``registered(kind)``, registered before the runtime
opens (the runtime opens the V2 services of the kinds registered then). Registration is checked: two
kinds may not share a name, a key prefix, or a mapping prefix.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sync_core.keys import forward_mapping_key, parse_key, register_keys, unregister_keys
from tasks.clients.v2 import V2ServiceSpec
from tasks.kinds.base import ObjectKind
from tasks.kinds.committees import COMMITTEES
from tasks.kinds.members import MEMBERS
from tasks.kinds.projects import PROJECTS

# The types this service syncs, parents first.
BUILTIN_KINDS: tuple[ObjectKind, ...] = (PROJECTS, COMMITTEES, MEMBERS)

_kinds: dict[str, ObjectKind] = {}
_lock = threading.Lock()


class KindConflict(ValueError):
    """A kind clashes with one registered already (a name or a prefix)."""


def register(kind: ObjectKind) -> None:
    """Register ``kind`` and its key spec; ``KindConflict`` when it clashes with another."""
    with _lock:
        current = _kinds.get(kind.name)
        if current is kind:
            return
        if current is not None:
            raise KindConflict(f"object type {kind.name!r} is registered already")
        taken = {prefix for other in _kinds.values() for prefix in mapping_prefixes(other)}
        clash = taken & set(mapping_prefixes(kind))
        if clash:
            raise KindConflict(f"{kind.name}: mapping prefix {sorted(clash)} is taken")
        forward = forward_mapping_key(kind.keys.object_type, "")
        if kind.sfid_prefix != forward:
            raise KindConflict(
                f"{kind.name}: sfid_prefix must be {forward!r} (the reconciler reads it so)"
            )
        register_keys(kind.keys)
        _kinds[kind.name] = kind


def unregister(kind: ObjectKind) -> None:
    """Forget ``kind`` (and its key spec); a kind not registered is ignored."""
    with _lock:
        if _kinds.get(kind.name) is kind:
            del _kinds[kind.name]
            unregister_keys(kind.keys)


@contextmanager
def registered(kind: ObjectKind) -> Iterator[ObjectKind]:
    """``kind`` registered for the block (a test's toy type), then forgotten."""
    register(kind)
    try:
        yield kind
    finally:
        unregister(kind)


def mapping_prefixes(kind: ObjectKind) -> tuple[str, ...]:
    """The ``v1-mappings`` prefixes ``kind`` writes."""
    return tuple(prefix for prefix in (kind.sfid_prefix, kind.uid_prefix) if prefix)


def kinds() -> tuple[ObjectKind, ...]:
    """Every registered kind, parents first (sync rank, then name)."""
    with _lock:
        registered_now = list(_kinds.values())
    return tuple(sorted(registered_now, key=lambda kind: (kind.keys.rank, kind.name)))


def kind_named(object_type: str | None) -> ObjectKind | None:
    """The kind of ``object_type`` (a ``parse_key`` answer), or None for an unknown type."""
    return None if object_type is None else _kinds.get(str(object_type))


def kind_for_key(key: str) -> tuple[ObjectKind | None, str]:
    """The kind of a ``v1-objects`` key and its record id (None: not a type we sync)."""
    object_type, record_id = parse_key(key)
    return kind_named(object_type), record_id


def service_specs() -> tuple[V2ServiceSpec, ...]:
    """The V2 services of the registered kinds, each once."""
    return tuple({kind.v2.name: kind.v2 for kind in kinds()}.values())


for _builtin in BUILTIN_KINDS:
    register(_builtin)
