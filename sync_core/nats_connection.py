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
and client certificate given here are then the ones used. nats-py 2.x does not
refuse a server that does not require TLS when the client asked for it (a
``tls://`` URL or TLS files): it would send the credentials in clear.
``TlsEnforcingClient`` closes that gap. Secrets never appear in ``repr`` or in
messages: URLs are shown through ``redact_url``.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.errors import Error as NatsError

# An NKey user seed: base32, 'S' (seed) then 'U' (user role), 58 characters.
NKEY_USER_SEED_PREFIX = "SU"
NKEY_SEED_CHARS = 58
REDACTED = "***"
# Schemes whose TLS nats-py negotiates after the server's INFO (wss is TLS from the start).
INFO_NEGOTIATED_SCHEMES = ("nats", "tls")


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

    @property
    def wants_tls(self) -> bool:
        """Whether the connection must be TLS: a ``tls://`` URL or TLS files given.

        Only for ``nats``/``tls`` URLs, where TLS is agreed after the server's
        greeting (``wss`` is TLS from the first byte; ``ws`` cannot be upgraded).
        """
        schemes = {urlsplit(server).scheme for server in self.servers}
        if not schemes <= set(INFO_NEGOTIATED_SCHEMES):
            return False
        return "tls" in schemes or self.uses_tls_files


class TlsNotOffered(NatsError):
    """The client wants TLS and the server's greeting does not require it."""

    def __str__(self) -> str:
        return (
            "TLS required by this client (a tls:// URL or NATS_TLS_CA/NATS_TLS_CERT) but the "
            "server does not require TLS: refusing to connect in clear (turn TLS on at the server)"
        )


class TlsEnforcingClient(Client):
    """nats-py's client that refuses a plain connection when TLS was asked for.

    nats-py 2.x upgrades to TLS only when the server's INFO says
    ``tls_required``; a server without TLS (misconfigured, or an impostor)
    would get the CONNECT line, credentials included, in clear. The check sits
    in ``_process_info`` (private, pinned: tests/test_private_symbols.py), which
    nats-py calls on each connect and reconnect after reading INFO and before it
    decides on TLS and writes CONNECT; raising there fails that attempt.
    """

    def __init__(self, require_tls: bool) -> None:
        super().__init__()
        self.require_tls = require_tls

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection and self.require_tls and not info.get("tls_required"):
            raise TlsNotOffered
        await super()._process_info(info, initial_connection)


def new_client(target: NatsTarget | str) -> Client:
    """An unconnected client for ``target``: one that insists on TLS when the target wants it."""
    return TlsEnforcingClient(require_tls=as_target(target).wants_tls)


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


# What a refused connect most likely means, most telling first: a server that
# refuses credentials sends ``-ERR 'Authorization Violation'`` and closes, so a
# try may see only the reset of that close; another try's error says why.
TELLING_ERROR_WORDS = (("authorization", "authentication", "permissions"), ("ssl", "certificate"))


def most_telling_error(errors: list[BaseException]) -> BaseException:
    """Of the errors a connect saw (oldest first), the one that best says why it failed.

    An authorization error beats a TLS error, which beats the rest; among equals
    the last wins.
    """
    for rank, words in enumerate(TELLING_ERROR_WORDS):
        for error in reversed(errors):
            text = str(error).lower()
            if any(word in text for word in words) or (rank and isinstance(error, TlsNotOffered)):
                return error
    return errors[-1]


def describe_connect_error(error: BaseException, *, tls_wanted: bool = False) -> str:
    """A short reason for a failed connect, with a hint at the setting to check.

    nats-py's own messages carry no secret (a server's ``-ERR`` line, an SSL
    reason, an address), so they are kept and a hint added.
    """
    text = str(error) or type(error).__name__
    if isinstance(error, TlsNotOffered):
        return text
    lowered = text.lower()
    if isinstance(error, ssl.SSLError) or "ssl" in lowered or "certificate" in lowered:
        return f"TLS failed: {text} (check NATS_TLS_CA, NATS_TLS_CERT and NATS_TLS_KEY)"
    if "authorization" in lowered or "authentication" in lowered or "permissions" in lowered:
        return (
            f"authorization failed: {text} (check the user or token in NATS_URL, "
            "NATS_CREDS or NATS_NKEY_SEED)"
        )
    if tls_wanted:
        # A server that refuses the client's certificate (or its absence) sends its
        # alert after the handshake; a client that wrote first sees only the close.
        return f"{text} (TLS: check NATS_TLS_CA, NATS_TLS_CERT and NATS_TLS_KEY)"
    return text
