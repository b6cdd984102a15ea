"""Laying V1 values over the current V2 record: the PUT body, and whether a PUT is needed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def merge_over(
    current: Mapping[str, Any], v1_fields: Mapping[str, Any], read_only: frozenset[str]
) -> dict[str, Any]:
    """The PUT body: the current V2 record without read-only fields, V1 values on top.

    V1 wins for every field it carries (``False`` and ``""`` included); fields only V2
    has are kept, inside nested objects too. Null values are left out: in a full-base
    PUT null and absent mean the same, and the contract's format checks need not see
    a null.
    """
    merged = {key: value for key, value in current.items() if value is not None}
    for key, value in v1_fields.items():
        below = merged.get(key)
        # Nested objects (a member's role, voting, organization) merge the same way.
        merged[key] = (
            merge_over(below, value, frozenset())
            if isinstance(value, Mapping) and isinstance(below, Mapping)
            else value
        )
    return {
        key: value for key, value in merged.items() if key not in read_only and value is not None
    }


def needs_update(
    current: Mapping[str, Any], desired: Mapping[str, Any], read_only: frozenset[str]
) -> bool:
    """Whether PUTting ``desired`` (a full body) would change the ``current`` V2 record.

    Read-only fields and null values are ignored; ``True`` and ``1`` differ.
    """
    return bool(field_changes(current, desired, read_only))


@dataclass(frozen=True)
class FieldChange:
    """One V2 field a write changes: ``before`` / ``after`` None when absent."""

    field: str
    before: Any
    after: Any


def field_changes(
    current: Mapping[str, Any], desired: Mapping[str, Any], read_only: frozenset[str]
) -> tuple[FieldChange, ...]:
    """The writable fields whose value differs between ``current`` and ``desired``, by name."""
    before, after = _writable(current, read_only), _writable(desired, read_only)
    return tuple(
        FieldChange(name, before.get(name), after.get(name))
        for name in sorted(before.keys() | after.keys())
        if not (name in before and name in after and _same(before[name], after[name]))
    )


def _writable(record: Mapping[str, Any], read_only: frozenset[str]) -> dict[str, Any]:
    """``record`` without read-only fields and null values."""
    return {
        key: value for key, value in record.items() if key not in read_only and value is not None
    }


def _same(left: Any, right: Any) -> bool:
    """JSON equality: like ``==`` but a boolean never equals a number."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(
            _same(a, b) for a, b in zip(left, right, strict=True)
        )
    return bool(left == right)
