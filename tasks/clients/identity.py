"""Who a V2 write is attributed to: the claims and header of one identity.

Token minting (``tasks.clients.tokens``) turns an ``Identity`` into JWT claims; user
lookup (``tasks.clients.users``) decides which identity a V1 change gets.

What may go into ``principal``, ``sub`` and ``X-On-Behalf-Of`` is
``sync_core.identity_names.is_safe_header_name``: a name of visible ASCII
characters (``!`` to ``~``) without ``@``, at most ``HEADER_VALUE_MAX_CHARS``
long; anything else falls back to the service's own identity. An e-mail goes
only into the token; one that is not plausible is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

# Re-exported: callers of this module check names with the shared rule.
from sync_core.identity_names import HEADER_VALUE_MAX_CHARS as HEADER_VALUE_MAX_CHARS
from sync_core.identity_names import is_safe_header_name as is_safe_header_name

MACHINE_SUFFIX = "@clients"
# RFC 5321's limit on an address.
EMAIL_MAX_CHARS = 254


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
