"""Where and how a process reaches NATS: the URL, its credentials and TLS.

Every process (bridge, worker, operations commands, the sandbox pointed at a
real NATS) connects through ``connect_options``, so a secured deployment is
configured once, with the same variables everywhere:

- user/password or a token in ``NATS_URL`` (``nats://user:pass@host:4222``,
  ``nats://token@host:4222``); nats-py reads them from the URL itself;
- ``NATS_CREDS``: a ``.creds`` file (user JWT and NKey seed, as ``nsc`` writes it);
- ``NATS_NKEY_SEED``: an NKey user seed, as a file path or as the seed itself;
- ``NATS_TLS_CA``: the CA bundle that verifies the server's certificate;
- ``NATS_TLS_CERT`` and ``NATS_TLS_KEY``: the client certificate of mutual TLS.

nats-py upgrades the connection to TLS when the server's greeting requires it
(a ``tls {}`` block in its configuration), whatever the URL's scheme; the CA
and client certificate given here are then the ones used. Secrets never appear in
``repr`` or in messages: URLs are shown through ``redact_url``.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# An NKey user seed: base32, 'S' (seed) then 'U' (user role), 58 characters.
NKEY_USER_SEED_PREFIX = "SU"
NKEY_SEED_CHARS = 58
REDACTED = "***"


def split_servers(url: str) -> list[str]:
    """The comma-separated server URLs of ``NATS_URL``."""
    return [part.strip() for part in url.split(",") if part.strip()]


def redact_url(url: str) -> str:
    """``url`` (one server or a comma-separated list) with any user, password or token hidden."""
    shown = []
    for server in split_servers(url):
        parts = urlsplit(server)
        if "@" in parts.netloc:
            host = parts.netloc.rpartition("@")[2]
            server = parts._replace(netloc=f"{REDACTED}@{host}").geturl()
        shown.append(server)
    return ",".join(shown)


def url_has_credentials(url: str) -> bool:
    """Whether any server URL carries a user, password or token."""
    return any("@" in urlsplit(server).netloc for server in split_servers(url))


def is_seed_value(value: str) -> bool:
    """Whether ``NATS_NKEY_SEED`` holds the seed itself rather than a file path."""
    text = value.strip()
    return text.startswith(NKEY_USER_SEED_PREFIX) and len(text) == NKEY_SEED_CHARS


@dataclass(frozen=True)
class NatsTarget:
    """The NATS servers of a process and how to authenticate to them.

    Attributes:
        url: ``NATS_URL``, one server or several separated by commas; may carry
            credentials (never shown: see ``safe_url``).
        creds_file: ``NATS_CREDS``, path of a ``.creds`` file.
        nkey_seed: ``NATS_NKEY_SEED``, a seed file path or the seed itself.
        tls_ca: ``NATS_TLS_CA``, path of the CA bundle to verify the server with.
        tls_cert: ``NATS_TLS_CERT``, path of the client certificate (mutual TLS).
        tls_key: ``NATS_TLS_KEY``, path of the client certificate's private key.
    """

    url: str
    creds_file: str | None = None
    nkey_seed: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __repr__(self) -> str:
        return (
            f"NatsTarget(url={self.safe_url!r}, creds_file={self.creds_file!r}, "
            f"nkey_seed={'set' if self.nkey_seed else None!r}, tls_ca={self.tls_ca!r}, "
            f"tls_cert={self.tls_cert!r}, tls_key={self.tls_key!r})"
        )

    @property
    def servers(self) -> list[str]:
        """The server URLs nats-py is given."""
        return split_servers(self.url)

    @property
    def safe_url(self) -> str:
        """The URL(s) for logs and messages, credentials hidden."""
        return redact_url(self.url)

    @property
    def uses_tls_files(self) -> bool:
        """Whether a CA or a client certificate is configured."""
        return bool(self.tls_ca or self.tls_cert)


def as_target(target: NatsTarget | str) -> NatsTarget:
    """A ``NatsTarget`` from a target or a bare URL (tests, benches, local servers)."""
    return target if isinstance(target, NatsTarget) else NatsTarget(target)


def tls_context(target: NatsTarget) -> ssl.SSLContext | None:
    """The TLS context of ``target``'s CA and client certificate; None when neither is set.

    Without them nats-py uses the system's CAs for a server that requires TLS.
    """
    if not target.uses_tls_files:
        return None
    context = ssl.create_default_context(cafile=target.tls_ca)
    if target.tls_cert:
        context.load_cert_chain(target.tls_cert, target.tls_key)
    return context


def connect_options(target: NatsTarget | str) -> dict[str, Any]:
    """The keyword arguments of ``nats.connect`` for the servers and credentials of ``target``.

    The caller adds its own name, timeouts and callbacks.
    """
    target = as_target(target)
    options: dict[str, Any] = {"servers": target.servers}
    if target.creds_file:
        options["user_credentials"] = target.creds_file
    if target.nkey_seed:
        if is_seed_value(target.nkey_seed):
            options["nkeys_seed_str"] = target.nkey_seed.strip()
        else:
            options["nkeys_seed"] = os.path.expanduser(target.nkey_seed.strip())
    context = tls_context(target)
    if context is not None:
        options["tls"] = context
    return options


def describe_connect_error(error: BaseException) -> str:
    """A short reason for a failed connect, with a hint at the setting to check.

    nats-py's own messages carry no secret (a server's ``-ERR`` line, an SSL
    reason, an address), so they are kept and a hint added.
    """
    text = str(error) or type(error).__name__
    lowered = text.lower()
    if isinstance(error, ssl.SSLError) or "ssl" in lowered or "certificate" in lowered:
        return f"TLS failed: {text} (check NATS_TLS_CA, NATS_TLS_CERT and NATS_TLS_KEY)"
    if "authorization" in lowered or "authentication" in lowered or "permissions" in lowered:
        return (
            f"authorization failed: {text} (check the user or token in NATS_URL, "
            "NATS_CREDS or NATS_NKEY_SEED)"
        )
    return text
