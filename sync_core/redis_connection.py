"""One way to reach the broker's Redis, for every process: plain, TLS or Sentinel.

``REDIS_URL`` may be

* ``redis://[:password@]host:port/db``: one server;
* ``rediss://…``: the same over TLS. Certificates are verified (``CERT_REQUIRED``)
  unless the URL says otherwise (``?ssl_cert_reqs=none``, ``ssl_ca_certs=…``):
  kombu on its own would fall back to ``CERT_NONE`` for a bare ``rediss://``;
* ``sentinel://[:password@]host:port[/db];sentinel://host:port…``: a Sentinel
  group (kombu's form) watching the master ``REDIS_SENTINEL_MASTER``; the
  password in the URL is the master's, ``REDIS_SENTINEL_PASSWORD`` the
  sentinels' own.

The workers (kombu's transport), the bridge's publisher, the operator commands
and the tasks' own client must all follow the same failover: each builds its
Celery configuration with ``celery_broker_config`` and its redis-py client with
``redis_client``, from one ``RedisTarget``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel"
TLS_SCHEME = "rediss"
SENTINEL_SEPARATORS = (";", ",")
DEFAULT_REDIS_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_TIMEOUT = 5.0
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def split_urls(url: str) -> list[str]:
    """The URLs of a Sentinel list (``;`` as kombu writes it, or ``,``)."""
    parts = [url]
    for separator in SENTINEL_SEPARATORS:
        parts = [piece for part in parts for piece in part.split(separator)]
    return [part.strip() for part in parts if part.strip()]


@dataclass(frozen=True)
class RedisTarget:
    """Where the broker is: its URL and, for Sentinel, the master's name and sentinel password."""

    url: str
    sentinel_master: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return urlsplit(split_urls(self.url)[0]).scheme

    @property
    def is_sentinel(self) -> bool:
        return self.scheme == SENTINEL_SCHEME

    @property
    def is_tls(self) -> bool:
        return self.scheme == TLS_SCHEME

    def sentinels(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every sentinel of a Sentinel URL."""
        found = []
        for part in split_urls(self.url):
            parsed = urlsplit(part)
            found.append((parsed.hostname or "127.0.0.1", parsed.port or DEFAULT_SENTINEL_PORT))
        return found

    def database(self) -> int:
        """The database number in the (first) URL's path, 0 when none."""
        path = urlsplit(split_urls(self.url)[0]).path.strip("/")
        return int(path) if path.isdigit() else 0

    def master_password(self) -> str | None:
        """The password of the first URL (for Sentinel: the master's)."""
        password = urlsplit(split_urls(self.url)[0]).password
        return unquote(password) if password else None

    def ssl_options(self) -> dict[str, Any] | None:
        """redis-py / kombu TLS options of a ``rediss://`` URL: verified unless it says not."""
        if not self.is_tls:
            return None
        query = parse_qs(urlsplit(self.url).query)
        reqs = (query.get("ssl_cert_reqs") or ["required"])[0].lower().removeprefix("cert_")
        options: dict[str, Any] = {"ssl_cert_reqs": CERT_REQS.get(reqs, ssl.CERT_REQUIRED)}
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if query.get(name):
                options[name] = query[name][0]
        return options

    def transport_options(self) -> dict[str, Any]:
        """What kombu's transport options must add for this target (Sentinel: master, password)."""
        if not self.is_sentinel:
            return {}
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": DEFAULT_TIMEOUT,
            "socket_connect_timeout": DEFAULT_TIMEOUT,
        }
        if self.sentinel_password:
            sentinel_kwargs["password"] = self.sentinel_password
        return {"master_name": self.sentinel_master, "sentinel_kwargs": sentinel_kwargs}


def as_target(value: RedisTarget | str) -> RedisTarget:
    """``value`` as a target (a plain URL string names a single server or a TLS one)."""
    return value if isinstance(value, RedisTarget) else RedisTarget(value)


def celery_broker_config(
    target: RedisTarget | str, transport_options: dict[str, Any]
) -> dict[str, Any]:
    """``broker_url``, ``broker_transport_options`` and ``broker_use_ssl`` of a Celery app."""
    target = as_target(target)
    config: dict[str, Any] = {
        "broker_url": target.url,
        "broker_transport_options": {**transport_options, **target.transport_options()},
    }
    tls = target.ssl_options()
    if tls is not None:
        config["broker_use_ssl"] = tls
    return config


def redis_client(
    target: RedisTarget | str,
    *,
    socket_timeout: float | None = DEFAULT_TIMEOUT,
    socket_connect_timeout: float | None = DEFAULT_TIMEOUT,
    socket_keepalive: bool = True,
    health_check_interval: int = 0,
    retry_on_timeout: bool = False,
    retry: Retry | None = None,
    client_name: str | None = None,
) -> redis.Redis:
    """A redis-py client for ``target``: for Sentinel, one that follows the current master.

    A Sentinel client asks the sentinels for the master when it (re)connects,
    so after a failover the next command after a connection error reaches the
    promoted replica; a replica that answers ``READONLY`` is treated the same.
    """
    target = as_target(target)
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "socket_keepalive": socket_keepalive,
        "health_check_interval": health_check_interval,
        "retry_on_timeout": retry_on_timeout,
        "client_name": client_name,
    }
    if retry is not None:
        options["retry"] = retry
    if target.is_sentinel:
        if not target.sentinel_master:
            raise ValueError("a sentinel:// REDIS_URL needs REDIS_SENTINEL_MASTER")
        sentinel = Sentinel(
            target.sentinels(),
            sentinel_kwargs=target.transport_options()["sentinel_kwargs"],
            **options,
        )
        client: redis.Redis = sentinel.master_for(
            target.sentinel_master,
            redis_class=redis.Redis,
            db=target.database(),
            password=target.master_password(),
        )
        return client
    tls = target.ssl_options() or {}
    return redis.Redis.from_url(target.url, **options, **tls)
