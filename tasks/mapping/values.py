"""The V2 write contract for single values, shared by every type's field table.

Enums, dates, URIs, slugs and the ``BodyBuilder`` that collects a body and a
warning for every value dropped or changed. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from sync_core.v1_values import to_date
from sync_core.value_repr import short_repr, type_name
from tasks.errors import InvalidRecord
from tasks.mapping.record_ids import ID_SHAPES, is_v1_id

SLUG_PATTERN = re.compile(r"[a-z][a-z0-9_\-]*[a-z0-9]")


# A slug becomes a NATS KV key (``project.slug.{slug}``) and a NATS request payload;
# V1 slugs are short names. A longer one is an invalid record, never a huge key.
SLUG_MAX_CHARS = 255


URL_SCHEMES = frozenset({"http", "https"})


DEFAULT_URL_SCHEME = "https://"


SCHEME_SEPARATOR = "://"


URL_NULL_MARKERS = frozenset({"", "nil"})


# RFC 3986 characters: unreserved, reserved, and "%" for escapes.
URI_SAFE_CHARS = "-._~:/?#[]@!$&'()*+,;=%"


URI_CHARS_PATTERN = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


BAD_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


# A DNS name with at least one dot (V1 URLs point at public sites).
HOSTNAME_PATTERN = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?\.)+"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.?"
)


LOCALHOST = "localhost"


# One "@", a dot in the domain, no blanks: what the V2 services accept as an e-mail.
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(frozen=True)
class FieldSource:
    """Where a V2 field comes from: the documented V1 name, then the real column."""

    documented: str
    real: str


@dataclass
class BodyBuilder:
    """Collects the body fields and a warning for every value dropped or changed."""

    record: Mapping[str, Any]
    body: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def pick(self, source: FieldSource) -> tuple[str, Any]:
        """The column to read and its value: the documented one unless it is null."""
        documented = self.record.get(source.documented)
        if documented is not None or source.documented == source.real:
            return source.documented, documented
        return source.real, self.record.get(source.real)

    def pick_present(self, source: FieldSource) -> tuple[str, Any]:
        """Like ``pick``, but a blank string or ``nil`` is no value (None)."""
        column, value = self.pick(source)
        if isinstance(value, str) and value.strip().casefold() in URL_NULL_MARKERS:
            return column, None
        return column, value

    def warn(self, v2_field: str, column: str, problem: str) -> None:
        """Record that ``column``'s value for ``v2_field`` was dropped or changed."""
        self.warnings.append(f"{v2_field} (from {column}): {problem}")

    def put_text(
        self,
        v2_field: str,
        source: FieldSource,
        *,
        max_chars: int | None = None,
        blank_is_absent: bool = False,
    ) -> None:
        """Copy an optional string, truncated to ``max_chars``; other types are dropped.

        ``blank_is_absent``: an empty or ``nil`` value is no value; others are trimmed.
        """
        column, value = self.pick_present(source) if blank_is_absent else self.pick(source)
        if blank_is_absent and isinstance(value, str):
            value = value.strip()
        if value is None:
            return
        if not isinstance(value, str):
            self.warn(v2_field, column, f"{type_label(value)} is not a string; dropped")
            return
        self.body[v2_field] = self.truncate(v2_field, column, value, max_chars)

    def put_bool(self, v2_field: str, source: FieldSource) -> None:
        """Copy a real boolean; anything else (even ``"true"``) is dropped."""
        column, value = self.pick(source)
        if value is None:
            return
        if not isinstance(value, bool):
            self.warn(v2_field, column, f"{show(value)} is not a boolean; dropped")
            return
        self.body[v2_field] = value

    def put_enum(
        self,
        v2_field: str,
        source: FieldSource,
        allowed: frozenset[str],
        *,
        blank_is_absent: bool = False,
    ) -> None:
        """Copy a value of a V2 enum; anything outside it is dropped.

        ``blank_is_absent``: an empty or ``nil`` value is no value (no warning).
        """
        column, value = self.pick_present(source) if blank_is_absent else self.pick(source)
        if value is None:
            return
        member = self.enum_member(v2_field, column, value, allowed)
        if member is None:
            self.warn(v2_field, column, f"{show(value)} is not a V2 {v2_field}; dropped")
            return
        self.body[v2_field] = member

    def enum_member(
        self, v2_field: str, column: str, value: Any, allowed: frozenset[str]
    ) -> str | None:
        """``value`` as a member of ``allowed`` (warning when only a loose match), or None."""
        member = match_enum(value, allowed)
        if member is not None and member != value:
            self.warn(v2_field, column, f"{show(value)} read as {member!r}")
        return member

    def put_enum_or(
        self,
        v2_field: str,
        source: FieldSource,
        allowed: frozenset[str],
        fallback: str,
        *,
        label: str | None = None,
        blank_is_absent: bool = False,
    ) -> None:
        """Copy a value of a V2 enum; anything outside it becomes ``fallback`` (a warning).

        ``label`` names the field in warnings (``role.name``); default ``v2_field``.
        ``blank_is_absent``: an empty or ``nil`` value is no value (no warning).
        """
        column, value = self.pick_present(source) if blank_is_absent else self.pick(source)
        if value is None:
            return
        shown = label or v2_field
        member = self.enum_member(shown, column, value, allowed)
        if member is None:
            self.warn(shown, column, f"{show(value)} is not a V2 {shown}; sent as {fallback!r}")
            member = fallback
        self.body[v2_field] = member

    def put_email(self, v2_field: str, source: FieldSource) -> None:
        """Copy an e-mail address, trimmed; empty and ``nil`` are absent, a bad one is dropped."""
        column, value = self.pick_present(source)
        if value is None:
            return
        if not isinstance(value, str) or not EMAIL_PATTERN.fullmatch(value.strip()):
            self.warn(v2_field, column, f"{show(value)} is not an e-mail address; dropped")
            return
        self.body[v2_field] = value.strip()

    def put_url(self, v2_field: str, source: FieldSource) -> None:
        """Copy a URL after clean-up; one that is still not a valid URI is dropped."""
        column, value = self.pick(source)
        if value is None:
            return
        url, problem = clean_url(value)
        if problem is not None:
            self.warn(v2_field, column, f"{show(value)} {problem}; dropped")
        elif url is not None and url != value:
            self.warn(v2_field, column, f"{show(value)} cleaned to {url!r}")
        if url is not None:
            self.body[v2_field] = url

    def put_date(self, v2_field: str, source: FieldSource, *, label: str | None = None) -> None:
        """Copy a date or date-time as ``YYYY-MM-DD``; an unreadable one is dropped.

        ``label`` names the field in warnings (``role.start_date``); default ``v2_field``.
        """
        column, value = self.pick(source)
        if value is None:
            return
        day = to_date(value)
        if day is None:
            self.warn(label or v2_field, column, f"{show(value)} is not a date; dropped")
            return
        self.body[v2_field] = day

    def truncate(self, v2_field: str, column: str, text: str, max_chars: int | None) -> str:
        """``text`` cut to ``max_chars`` characters, with a warning when it was longer."""
        if max_chars is None or len(text) <= max_chars:
            return text
        self.warn(v2_field, column, f"{len(text)} characters truncated to {max_chars}")
        return text[:max_chars]


def match_enum(value: Any, allowed: frozenset[str]) -> str | None:
    """The member of ``allowed`` that ``value`` names, ignoring case and extra spaces."""
    if not isinstance(value, str):
        return None
    if value in allowed:
        return value
    wanted = _enum_key(value)
    return next((member for member in sorted(allowed) if _enum_key(member) == wanted), None)


def _enum_key(text: str) -> str:
    """A spelling of ``text`` that ignores case and whitespace runs."""
    return " ".join(text.split()).casefold()


def clean_url(value: Any) -> tuple[str | None, str | None]:
    """Clean a V1 URL: ``(url, None)``, ``(None, None)`` when empty, or ``(None, problem)``.

    Trims it; treats empty and ``nil`` as no value; adds ``https://`` when there is
    no scheme; percent-encodes characters a URI cannot hold (non-ASCII, quotes,
    braces); refuses what still is not an http(s) URI with a host.
    """
    if not isinstance(value, str):
        return None, f"is a {type_label(value)}, not a URL"
    text = value.strip()
    if text.casefold() in URL_NULL_MARKERS:
        return None, None
    # Not printable also covers lone surrogates, the only text UTF-8 cannot encode.
    if any(char.isspace() or not char.isprintable() for char in text):
        return None, "contains spaces or control characters"
    if SCHEME_SEPARATOR not in text:
        text = ("https:" if text.startswith("//") else DEFAULT_URL_SCHEME) + text
    text = quote(text, safe=URI_SAFE_CHARS)
    if not is_valid_uri(text):
        return None, "is not a valid http(s) URI"
    return text, None


def is_valid_uri(text: str) -> bool:
    """Whether ``text`` is an RFC 3986 http(s) URI with a real host and no spaces.

    Also refused: brackets outside an IPv6 host, bad ``%`` escapes, and user info
    (in a website field that is an e-mail address gone astray).
    """
    if not URI_CHARS_PATTERN.fullmatch(text) or BAD_PERCENT_ESCAPE.search(text):
        return False
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError:
        return False
    has_scheme = parts.scheme.lower() in URL_SCHEMES and text[len(parts.scheme) :].startswith(
        SCHEME_SEPARATOR
    )
    after_host = parts.path + parts.query + parts.fragment
    if not has_scheme or "[" in after_host or "]" in after_host or parts.username is not None:
        return False
    return _valid_host(parts.hostname)


def _valid_host(host: str | None) -> bool:
    """A DNS name with a dot, ``localhost`` or an IP address."""
    if not host:
        return False
    if host == LOCALHOST or HOSTNAME_PATTERN.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def required_id(record: Mapping[str, Any], column: str, owner: str) -> str:
    """An id column every record needs; InvalidRecord when missing or not an id."""
    value = record.get(column)
    if not isinstance(value, str) or not is_v1_id(value.strip()):
        raise InvalidRecord(f"{owner}: {column} missing or not {ID_SHAPES} ({show(value)})")
    return value.strip()


def required_name(
    builder: BodyBuilder, v2_field: str, source: FieldSource, object_type: str, sfid: str
) -> str:
    """A name V2 requires: trimmed (with a warning), InvalidRecord when blank."""
    column, value = builder.pick(source)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecord(f"{object_type} {sfid}: {column} missing or blank ({show(value)})")
    name = value.strip()
    if name != value:
        builder.warn(v2_field, column, "surrounding whitespace trimmed")
    return name


def show(value: Any) -> str:
    """A short repr of a V1 value for a warning or an error message (bounded, never raises)."""
    return short_repr(value)


def type_label(value: Any) -> str:
    """The name of a value's type, for messages."""
    return type_name(value)
