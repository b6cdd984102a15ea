"""Fixtures that start real servers on free loopback ports.

Every server runs in a temporary directory and is stopped at teardown, even
when the test fails. Nothing here mocks NATS or Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.servers import ManagedServer, NatsServer, ValkeyServer
from sync_core.nats_client import SyncNats, connect, ensure_buckets

OBJECTS_BUCKET = "v1-objects"
MAPPINGS_BUCKET = "v1-mappings"

ServerT = TypeVar("ServerT", bound=ManagedServer)


def _running(server: ServerT) -> Iterator[ServerT]:
    """Start ``server`` and stop it at teardown, whatever the test did."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real ``nats-server -js`` on a free port."""
    yield from _running(NatsServer(tmp_path / "nats"))


@pytest.fixture
def nats_server_with_config(tmp_path: Path) -> Iterator[Callable[[str], NatsServer]]:
    """Start real ``nats-server -js`` processes from a configuration text (accounts, TLS).

    The text is written to a file the server reads with ``-c``; every server
    started is stopped at teardown.
    """
    started: list[NatsServer] = []

    def start(config: str) -> NatsServer:
        data_dir = tmp_path / f"nats-configured-{len(started)}"
        data_dir.mkdir()
        config_file = data_dir / "server.conf"
        config_file.write_text(config)
        server = NatsServer(data_dir, config_file=config_file)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A real ``valkey-server`` on a free port."""
    yield from _running(ValkeyServer(tmp_path / "valkey"))


@pytest.fixture
def redis_client(redis_server: ValkeyServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


async def _create_buckets(url: str) -> None:
    nc = await connect(url, "test-setup")
    try:
        await ensure_buckets(nc.jetstream(), OBJECTS_BUCKET, MAPPINGS_BUCKET)
    finally:
        await nc.close()


@pytest.fixture
def buckets(nats_server: NatsServer) -> NatsServer:
    """The server, with ``v1-objects`` (history 20) and ``v1-mappings`` created."""
    asyncio.run(_create_buckets(nats_server.url))
    return nats_server


@pytest.fixture
def sync_nats(buckets: NatsServer) -> Iterator[SyncNats]:
    """A blocking NATS client on the server with buckets."""
    client = SyncNats(buckets.url, "test")
    yield client
    client.close()


def _pem(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


@pytest.fixture(scope="session")
def heimdall_key(rsa_pems: dict[str, str]) -> rsa.RSAPrivateKey:
    """The Heimdall test key, parsed."""
    return _parsed(rsa_pems["heimdall"])


@pytest.fixture(scope="session")
def auth0_key(rsa_pems: dict[str, str]) -> rsa.RSAPrivateKey:
    """The Auth0 client test key, parsed."""
    return _parsed(rsa_pems["auth0"])


def _parsed(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="session")
def rsa_pems() -> dict[str, str]:
    """Throw-away RSA keys: ``heimdall`` (PKCS#8) and ``auth0`` (PKCS#1)."""
    heimdall = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth0 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "heimdall": _pem(heimdall, serialization.PrivateFormat.PKCS8),
        "auth0": _pem(auth0, serialization.PrivateFormat.TraditionalOpenSSL),
    }
