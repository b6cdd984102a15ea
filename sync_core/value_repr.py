"""A short, always-safe ``repr`` of a V1 value for warnings, errors and logs.

``repr`` of a value nested ~1000 deep raises ``RecursionError``, and a 100 KB
string would fill a log line. ``reprlib`` stops at a fixed depth and length;
anything it still cannot show (an object whose ``repr`` raises) becomes its
type name.
"""

from __future__ import annotations

import reprlib
from typing import Any

VALUE_REPR_CHARS = 80
# Levels of containers shown before "..." (reprlib recurses once per level).
VALUE_REPR_LEVELS = 3
VALUE_REPR_ITEMS = 4

_REPR = reprlib.Repr()
_REPR.maxlevel = VALUE_REPR_LEVELS
_REPR.maxstring = VALUE_REPR_CHARS
_REPR.maxother = VALUE_REPR_CHARS
_REPR.maxlong = VALUE_REPR_CHARS
for _name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_REPR, _name, VALUE_REPR_ITEMS)


def short_repr(value: Any) -> str:
    """At most ``VALUE_REPR_CHARS`` characters showing ``value``; never raises."""
    try:
        text = _REPR.repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    if len(text) > VALUE_REPR_CHARS:
        text = text[: VALUE_REPR_CHARS - 3] + "..."
    return text


def short_text(text: str) -> str:
    """``text`` itself when short, else its first ``VALUE_REPR_CHARS`` characters and "..."."""
    if len(text) <= VALUE_REPR_CHARS:
        return text
    return text[: VALUE_REPR_CHARS - 3] + "..."


def type_name(value: Any) -> str:
    """The name of a value's type, for messages."""
    return type(value).__name__
