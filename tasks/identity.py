"""Who a V2 write is attributed to: the claims and header of one identity.

Token minting (``tasks.tokens``) turns an ``Identity`` into JWT claims; user
lookup (``tasks.users``) decides which identity a V1 change gets.
"""

from __future__ import annotations

from dataclasses import dataclass

MACHINE_SUFFIX = "@clients"


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


def fallback_identity(client_id: str) -> Identity:
    """The service's own identity: ``{client_id}@clients``, no impersonation."""
    return Identity(principal=f"{client_id}{MACHINE_SUFFIX}", sub=client_id)


def machine_identity(value: str) -> Identity:
    """A machine user (``something@clients``): principal verbatim, sub without suffix."""
    name = value.removesuffix(MACHINE_SUFFIX)
    return Identity(principal=value, sub=name, on_behalf_of=name)
