"""Configuration from the environment, validated at start-up.

Each process loads only the settings class it needs: the bridge does not ask
for signing keys, the worker asks for everything it uses. A missing or
malformed value stops the process with exit code 2 and one line naming the
variable; secret values never appear in that line, in ``repr`` or in logs.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sync_core.identity_names import HEADER_VALUE_MAX_CHARS, is_safe_header_name
from sync_core.nats_connection import NatsTarget, is_seed_value, url_has_credentials
from sync_core.redis_connection import RedisTarget

CONFIG_ERROR_EXIT_CODE = 2

DEFAULT_HEIMDALL_JWKS_URL = (
    "http://lfx-platform-heimdall.lfx.svc.cluster.local:4457/.well-known/jwks"
)
DEFAULT_LFX_API_GW = "https://api-gw.dev.platform.linuxfoundation.org/"

NATS_SCHEMES = {"nats", "tls", "ws", "wss"}
REDIS_SCHEMES = {"redis", "rediss", "unix", "sentinel"}
HTTP_SCHEMES = {"http", "https"}

# The V2 -> V1 direction (issue 24): the stream capturing the V2 indexer's events.
DEFAULT_V2_EVENTS_STREAM = "committee_events"
DEFAULT_V2_EVENTS_SUBJECTS = "lfx.committee.>,lfx.committee_member.>"
DEFAULT_V2_EVENTS_MAX_AGE = 14 * 24 * 3600.0
DEFAULT_V2_EVENTS_CONSUMER_NAME = "v1-sync-helper-v2-events-consumer"
# NATS subject tokens: no whitespace, no empty token, ``>`` only as the last one.
_SUBJECT_TOKEN = re.compile(r"^[^\s.]+$")


def _check_url(value: str, schemes: set[str]) -> str:
    """Return ``value`` stripped, or raise naming the accepted schemes."""
    value = value.strip()
    # Sentinel lists are written ``sentinel://a:1;sentinel://b:2`` (kombu's form).
    for part in value.replace(";", ",").split(","):
        parsed = urlsplit(part.strip())
        if parsed.scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {'/'.join(sorted(schemes))}")
        if parsed.scheme != "unix" and not parsed.hostname:
            raise ValueError("URL has no host")
    return value


def split_subjects(value: str) -> list[str]:
    """The comma-separated NATS subjects of ``value``, each checked; ``ValueError`` otherwise."""
    subjects = [part.strip() for part in value.split(",") if part.strip()]
    if not subjects:
        raise ValueError("must name at least one NATS subject")
    for subject in subjects:
        tokens = subject.split(".")
        if not all(_SUBJECT_TOKEN.match(token) for token in tokens) or ">" in tokens[:-1]:
            raise ValueError(f"{subject!r} is not a NATS subject")
    return subjects


def normalize_pem(text: str) -> str:
    """Turn literal ``\\n`` sequences (as .env files carry them) into newlines."""
    return text.strip().replace("\\n", "\n") + "\n"


@functools.lru_cache(maxsize=8)
def _load_rsa_key(pem: str) -> RSAPrivateKey:
    key = load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("must be an RSA private key")
    return key


def load_rsa_private_key(secret: SecretStr) -> RSAPrivateKey:
    """Parse a PKCS#1 or PKCS#8 RSA PEM once per process (parsing costs ~35 ms)."""
    return _load_rsa_key(normalize_pem(secret.get_secret_value()))


def _validate_pem(secret: SecretStr | None) -> SecretStr | None:
    if secret is None or not secret.get_secret_value().strip():
        return secret
    try:
        load_rsa_private_key(secret)
    except (ValueError, TypeError):
        # The parser's own message may quote the input: never pass it on.
        raise ValueError("is not a PEM-encoded RSA private key (PKCS#1 or PKCS#8)") from None
    return secret


def _readable_file(value: str | None) -> str | None:
    """``value`` stripped (None when blank), or raise when it names no readable file."""
    if value is None or not value.strip():
        return None
    path = os.path.expanduser(value.strip())
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError(f"is not a readable file: {path}")
    return path


class NatsSettings(BaseSettings):
    """Where NATS is and how to authenticate: what every process that talks to NATS reads.

    Credentials: user/password or a token in ``NATS_URL``, or a ``.creds``
    file, or an NKey seed; TLS: a CA bundle and a client certificate
    (``sync_core.nats_connection`` turns them into nats-py's options).
    """

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    # repr=False: the URL may carry a password or token.
    nats_url: str = Field(default="nats://localhost:4222", repr=False)
    nats_creds: str | None = None
    nats_nkey_seed: SecretStr | None = None
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str) -> str:
        return _check_url(value, NATS_SCHEMES)

    @field_validator("nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key")
    @classmethod
    def _nats_file(cls, value: str | None) -> str | None:
        return _readable_file(value)

    @field_validator("nats_nkey_seed")
    @classmethod
    def _nkey_seed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        seed = value.get_secret_value().strip()
        if is_seed_value(seed):
            return SecretStr(seed)
        path = os.path.expanduser(seed)
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            # Never echo the value: it may be a mistyped seed.
            raise ValueError(
                "is neither an NKey user seed (SU..., 58 characters) nor a readable file"
            )
        return SecretStr(path)

    @model_validator(mode="after")
    def _nats_auth_combination(self) -> NatsSettings:
        if self.nats_creds and self.nats_nkey_seed:
            raise ValueError("NATS_CREDS and NATS_NKEY_SEED exclude each other: set one")
        if (self.nats_creds or self.nats_nkey_seed) and url_has_credentials(self.nats_url):
            raise ValueError(
                "NATS_URL carries a user or token: "
                "do not combine it with NATS_CREDS or NATS_NKEY_SEED"
            )
        if bool(self.nats_tls_cert) != bool(self.nats_tls_key):
            raise ValueError("NATS_TLS_CERT and NATS_TLS_KEY go together: set both or neither")
        return self

    @property
    def nats_target(self) -> NatsTarget:
        """The servers and credentials every NATS connection of the process uses."""
        seed = self.nats_nkey_seed
        return NatsTarget(
            self.nats_url,
            creds_file=self.nats_creds,
            nkey_seed=seed.get_secret_value() if seed else None,
            tls_ca=self.nats_tls_ca,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
        )


class CommonSettings(NatsSettings):
    """What every process needs: NATS, the broker, names, logging, HTTP."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    redis_url: str = "redis://localhost:6379/0"
    redis_sentinel_master: str | None = None
    redis_sentinel_password: SecretStr | None = None
    v1_objects_bucket: str = "v1-objects"
    v1_mappings_bucket: str = "v1-mappings"
    sync_state_bucket: str = "v1-sync-state"
    # How long a child waits for its parent's mapping before it becomes a dead letter.
    sync_parent_wait: float = Field(default=24 * 3600.0, gt=0)
    kv_consumer_name: str = "v1-sync-helper-kv-consumer"
    celery_queue: str = "celery"
    # V2 -> V1 (issue 24): off by default; with it off nothing of that direction exists.
    sync_v2_to_v1: bool = False
    v2_events_stream: str = DEFAULT_V2_EVENTS_STREAM
    v2_events_consumer_name: str = DEFAULT_V2_EVENTS_CONSUMER_NAME
    port: int = Field(default=8080, ge=0, le=65535)
    bind: str = "*"
    debug: bool = False

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return _check_url(value, REDIS_SCHEMES)

    @field_validator("v2_events_stream", "v2_events_consumer_name")
    @classmethod
    def _jetstream_name(cls, value: str) -> str:
        # JetStream names are one subject token: no dots, wildcards or whitespace.
        value = value.strip()
        if not value or any(c in value for c in ".*>") or not _SUBJECT_TOKEN.match(value):
            raise ValueError("must be a JetStream name (no '.', '*', '>' or whitespace)")
        return value

    @model_validator(mode="after")
    def _sentinel_master(self) -> CommonSettings:
        if self.redis_target.is_sentinel and not self.redis_sentinel_master:
            raise ValueError("REDIS_SENTINEL_MASTER is required with a sentinel:// REDIS_URL")
        return self

    @property
    def redis_target(self) -> RedisTarget:
        """The broker as every Redis client of the process reaches it (Sentinel, TLS or plain)."""
        password = self.redis_sentinel_password
        return RedisTarget(
            self.redis_url,
            sentinel_master=(self.redis_sentinel_master or "").strip() or None,
            sentinel_password=password.get_secret_value() if password else None,
        )

    @property
    def bind_host(self) -> str:
        """The address to listen on: ``*`` means every interface."""
        return "0.0.0.0" if self.bind in ("*", "") else self.bind


class BridgeSettings(CommonSettings):
    """The bridge: NATS and Redis only, plus its flow-control knobs."""

    bridge_max_queue_depth: int = Field(default=10_000, ge=1)
    bridge_batch_size: int = Field(default=500, ge=1, le=1000)
    # With 60 s + 30 s, a change lost with the broker is re-enqueued within 90 s.
    reconcile_interval: float = Field(default=60.0, gt=0)
    reconcile_grace: float = Field(default=30.0, gt=0)
    # The stream of the V2 indexer events (only with SYNC_V2_TO_V1).
    v2_events_subjects: str = DEFAULT_V2_EVENTS_SUBJECTS
    v2_events_max_age: float = Field(default=DEFAULT_V2_EVENTS_MAX_AGE, gt=0)

    @field_validator("v2_events_subjects")
    @classmethod
    def _subjects(cls, value: str) -> str:
        return ",".join(split_subjects(value))

    @property
    def v2_events_subject_list(self) -> list[str]:
        """``V2_EVENTS_SUBJECTS`` as a list."""
        return split_subjects(self.v2_events_subjects)


class RetrySettings(BaseSettings):
    """Task-level retry policy shared by the worker and the operations commands."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    sync_retry_max: int = Field(default=10, ge=0)
    sync_retry_backoff_base: float = Field(default=2.0, gt=0)
    sync_retry_backoff_max: float = Field(default=300.0, gt=0)


class WorkerSettings(CommonSettings, RetrySettings):
    """A worker: V2 services, Heimdall signing, Auth0 user lookup."""

    project_service_url: str
    committee_service_url: str | None = None
    query_service_url: str | None = None
    heimdall_client_id: str = "v1_sync_helper"
    heimdall_private_key: SecretStr
    heimdall_key_id: str | None = None
    heimdall_jwks_url: str = DEFAULT_HEIMDALL_JWKS_URL
    auth0_tenant: str
    auth0_client_id: str
    auth0_private_key: SecretStr
    auth0_base_url: str | None = None
    lfx_api_gw: str = DEFAULT_LFX_API_GW
    http_timeout: float = Field(default=10.0, gt=0)
    # False: member creates carry X-Skip-Notification (no welcome e-mails from a bulk sync).
    sync_member_notifications: bool = False
    worker_metrics_port: int = Field(default=9100, ge=0, le=65535)
    # /livez fails when the consumer's event loop has not turned for this long
    # (tasks.worker.health), or when every task slot held the same runs this long.
    worker_liveness_stale_seconds: float = Field(default=60.0, gt=0)
    worker_slot_stall_seconds: float = Field(default=600.0, gt=0)
    # V2 -> V1: how long a V1 create whose answer was lost waits for its row to come
    # back through the loader before it is sent again (tasks.run.reverse_writes.create_once).
    sync_v1_create_confirm_wait: float = Field(default=3600.0, gt=0)
    # The mass-delete guard: deletes off altogether, or at most this many per rolling hour.
    sync_deletes: bool = True
    sync_delete_budget: int = Field(default=100, ge=0)

    @field_validator("project_service_url", "heimdall_jwks_url", "lfx_api_gw")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_url(value, HTTP_SCHEMES)

    @field_validator("committee_service_url", "query_service_url", "auth0_base_url")
    @classmethod
    def _optional_http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _check_url(value, HTTP_SCHEMES)

    @field_validator("heimdall_private_key", "auth0_private_key")
    @classmethod
    def _pem(cls, value: SecretStr) -> SecretStr | None:
        if not value.get_secret_value().strip():
            raise ValueError("is empty")
        return _validate_pem(value)

    @field_validator("heimdall_client_id", "auth0_tenant", "auth0_client_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        return value.strip()

    @field_validator("heimdall_client_id")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        # It becomes the tokens' sub and principal ({id}@clients) of every
        # fallback write: a name V2 headers cannot carry would break them all.
        if not is_safe_header_name(value):
            raise ValueError(
                f"must be 1 to {HEADER_VALUE_MAX_CHARS} visible ASCII characters without '@'"
            )
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> WorkerSettings:
        if self.sync_retry_backoff_max < self.sync_retry_backoff_base:
            raise ValueError("SYNC_RETRY_BACKOFF_MAX must not be below SYNC_RETRY_BACKOFF_BASE")
        return self

    @property
    def auth0_token_url(self) -> str:
        """``{AUTH0_BASE_URL}/oauth/token``; the base defaults to the tenant's."""
        base = self.auth0_base_url or f"https://{self.auth0_tenant}.auth0.com"
        return base.rstrip("/") + "/oauth/token"

    @property
    def auth0_audience_url(self) -> str:
        """The ``aud`` of the Auth0 client assertion: the base URL with a slash."""
        base = self.auth0_base_url or f"https://{self.auth0_tenant}.auth0.com"
        return base.rstrip("/") + "/"

    def heimdall_signing_key(self) -> RSAPrivateKey:
        """The parsed Heimdall key, loaded once per process."""
        return load_rsa_private_key(self.heimdall_private_key)

    def auth0_signing_key(self) -> RSAPrivateKey:
        """The parsed Auth0 client key, loaded once per process."""
        return load_rsa_private_key(self.auth0_private_key)


class FlowerSettings(CommonSettings):
    """Flower: broker plus the UI's credentials."""

    flower_port: int = Field(default=5555, ge=0, le=65535)
    flower_basic_auth: SecretStr | None = None


S = TypeVar("S", bound=BaseSettings)


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad variable and what is wrong, never its value."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        name = "_".join(str(p) for p in item["loc"]).upper() or "configuration"
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required but not set"
        parts.append(f"{name}: {message}")
    return "; ".join(parts)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment or exit 2 with a one-line reason."""
    try:
        return cls(**overrides)
    except ValidationError as error:
        print(f"configuration error: {describe_validation_error(error)}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT_CODE) from None
