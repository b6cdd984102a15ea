"""Who a V2 write is attributed to: the claims and header of one identity.

Token minting (``tasks.tokens``) turns an ``Identity`` into JWT claims; user
lookup (``tasks.users``) decides which identity a V1 change gets.

What may go into ``principal``, ``sub`` and ``X-On-Behalf-Of`` is decided here,
once: a name of visible ASCII characters (``!`` to ``~``) without ``@``, at
most ``HEADER_VALUE_MAX_CHARS`` long. http.client encodes header values as
Latin-1 (CJK or emoji raise ``UnicodeEncodeError``), the V2 services compare
names byte for byte, and servers refuse oversized header lines (Python's
http.server at 64 KiB, proxies from 8 KiB): anything else falls back to the
service's own identity. An e-mail goes only into the token; one that is not
plausible is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

MACHINE_SUFFIX = "@clients"
# Real V1 usernames and client ids are a few dozen characters; the bound keeps
# the bearer token (which carries principal and sub) far below any header limit.
HEADER_VALUE_MAX_CHARS = 256
# RFC 5321's limit on an address.
EMAIL_MAX_CHARS = 254
FIRST_VISIBLE_ASCII, LAST_VISIBLE_ASCII = "!", "~"


@dataclass(frozen=True)
class Identity:
    """The JWT ``principal``/``sub``/``email`` and the ``X-On-Behalf-Of`` header.

    ``username`` is what logs show as the ``username`` field.
    """

    principal: str
    sub: str
    email: str | None = None
    on_behalf_of: str | None = None

    @property
    def username(self) -> str:
        return self.on_behalf_of or self.principal


def is_safe_header_name(name: object) -> bool:
    """Whether ``name`` may be a ``principal``/``sub`` and an ``X-On-Behalf-Of`` value.

    A string of 1 to ``HEADER_VALUE_MAX_CHARS`` visible ASCII characters without
    ``@`` (it would read as an e-mail or a machine client): no space, no control
    character (header injection), nothing outside ASCII.
    """
    return (
        isinstance(name, str)
        and 0 < len(name) <= HEADER_VALUE_MAX_CHARS
        and all(FIRST_VISIBLE_ASCII <= char <= LAST_VISIBLE_ASCII and char != "@" for char in name)
    )


def is_safe_identity(identity: Identity) -> bool:
    """Whether every header-bound part of ``identity`` passes ``is_safe_header_name``."""
    principal = identity.principal.removesuffix(MACHINE_SUFFIX)
    return (
        is_safe_header_name(principal)
        and is_safe_header_name(identity.sub)
        and (identity.on_behalf_of is None or is_safe_header_name(identity.on_behalf_of))
    )


def safe_email(email: object) -> str | None:
    """``email`` trimmed when it is a plausible address for the token, else None."""
    if not isinstance(email, str):
        return None
    text = email.strip()
    if not text or len(text) > EMAIL_MAX_CHARS:
        return None
    if any(char.isspace() or not char.isprintable() for char in text):
        return None
    return text


def fallback_identity(client_id: str) -> Identity:
    """The service's own identity: ``{client_id}@clients``, no impersonation."""
    return Identity(principal=f"{client_id}{MACHINE_SUFFIX}", sub=client_id)


def machine_identity(value: str) -> Identity:
    """A machine user (``something@clients``): principal verbatim, sub without suffix.

    The caller checks the name with ``is_safe_header_name`` first.
    """
    name = value.removesuffix(MACHINE_SUFFIX)
    return Identity(principal=value, sub=name, on_behalf_of=name)
