"""What may go into a V2 identity header: ``principal``, ``sub``, ``X-On-Behalf-Of``.

A name of visible ASCII characters (``!`` to ``~``) without ``@``, at most
``HEADER_VALUE_MAX_CHARS`` long. http.client encodes header values as Latin-1
(CJK or emoji raise ``UnicodeEncodeError``), the V2 services compare names byte
for byte, and servers refuse oversized header lines. The rule lives in the
shared core because the settings check the service's own client id with it
at start-up, and the workers check every V1 username with it
(``tasks.clients.identity``).
"""

from __future__ import annotations

# Real V1 usernames and client ids are a few dozen characters; the bound keeps
# the bearer token (which carries principal and sub) far below any header limit.
HEADER_VALUE_MAX_CHARS = 256
FIRST_VISIBLE_ASCII, LAST_VISIBLE_ASCII = "!", "~"


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
