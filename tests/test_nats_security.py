"""Secured NATS against real nats-server processes: passwords, tokens, NKeys, .creds, TLS.

Each server is started from a configuration file (``nats_server_with_config``).
Every case shows both sides: the right credential connects and does a KV put
and get; a wrong one fails with a message that says what to check and never
contains the secret. The connection options come from the environment through
``NatsSettings`` where a case is about the settings, as every process gets them.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nkeys
import pytest
import redis
from click.testing import CliRunner
from pydantic import ValidationError

from operations.current_keys import KvUnavailable, open_nats
from sandbox.servers import NatsServer, ValkeyServer, child_env, free_port
from sync_core.nats_client import SyncNats, connect, ensure_bucket, ensure_buckets
from sync_core.nats_connection import (
    NatsTarget,
    describe_connect_error,
    most_telling_error,
    redact_url,
)
from sync_core.settings import BridgeSettings, NatsSettings, describe_validation_error
from tests.nats_auth_material import (
    Authority,
    issue,
    new_authority,
    new_nkey,
    new_operator,
)
from v1_sync_helper.cli import main

StartNats = Callable[[str], NatsServer]
BUCKET = "secured-kv"
PASSWORD = "s3cret-Pass-7781"
TOKEN = "tok-0c3f0a7d55e2b1"


def kv_round_trip(target: NatsTarget) -> bytes:
    """Connect as every one-shot command does, create a bucket, put and read back a value."""
    nats = SyncNats(target, "test-secured", connector=open_nats)
    try:
        nats.run(ensure_bucket(nats.js, BUCKET))
        nats.kv_put(BUCKET, "greeting", b"hello")
        entry = nats.kv_get(BUCKET, "greeting")
        assert entry is not None
        return bytes(entry.value)
    finally:
        nats.close()


def refusal(target: NatsTarget) -> str:
    """The message of a connect that must fail."""
    with pytest.raises(KvUnavailable) as failure:
        asyncio.run(open_nats(target, "test-secured"))
    return str(failure.value)


def settings_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> NatsSettings:
    for name in ("NATS_URL", "NATS_CREDS", "NATS_NKEY_SEED", "NATS_TLS_CA", "NATS_TLS_CERT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NATS_TLS_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return NatsSettings()


def with_user(server: NatsServer, userinfo: str) -> str:
    return f"nats://{userinfo}@127.0.0.1:{server.port}"


# ------------------------------------------------------------- user/password


def test_user_and_password_in_the_url(nats_server_with_config: StartNats) -> None:
    server = nats_server_with_config(
        f'authorization {{ users = [ {{ user: sync, password: "{PASSWORD}" }} ] }}\n'
    )

    wrong = refusal(NatsTarget(with_user(server, "sync:not-the-password")))
    assert "authorization failed" in wrong
    assert "not-the-password" not in wrong
    assert "nats://***@127.0.0.1" in wrong

    assert kv_round_trip(NatsTarget(with_user(server, f"sync:{PASSWORD}"))) == b"hello"


def test_no_credentials_against_a_server_that_wants_them(
    nats_server_with_config: StartNats,
) -> None:
    server = nats_server_with_config(f'authorization {{ token: "{TOKEN}" }}\n')
    assert "authorization failed" in refusal(NatsTarget(server.url))


# --------------------------------------------------------------------- token


def test_token_in_the_url(nats_server_with_config: StartNats) -> None:
    server = nats_server_with_config(f'authorization {{ token: "{TOKEN}" }}\n')

    wrong = refusal(NatsTarget(with_user(server, "tok-wrong-123")))
    assert "authorization failed" in wrong
    assert "tok-wrong-123" not in wrong

    assert kv_round_trip(NatsTarget(with_user(server, TOKEN))) == b"hello"


# ---------------------------------------------------------------------- nkey


def test_nkey_seed_as_a_value_and_as_a_file(
    nats_server_with_config: StartNats, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    user = new_nkey(nkeys.PREFIX_BYTE_USER)
    stranger = new_nkey(nkeys.PREFIX_BYTE_USER)
    server = nats_server_with_config(f"authorization {{ users = [ {{ nkey: {user.public} }} ] }}\n")

    wrong = settings_from_env(monkeypatch, NATS_URL=server.url, NATS_NKEY_SEED=stranger.seed)
    message = refusal(wrong.nats_target)
    assert "authorization failed" in message
    assert stranger.seed not in message
    assert stranger.seed not in repr(wrong)
    assert stranger.seed not in repr(wrong.nats_target)

    by_value = settings_from_env(monkeypatch, NATS_URL=server.url, NATS_NKEY_SEED=user.seed)
    assert kv_round_trip(by_value.nats_target) == b"hello"

    seed_file = tmp_path / "user.nk"
    seed_file.write_text(user.seed + "\n")
    by_file = settings_from_env(monkeypatch, NATS_URL=server.url, NATS_NKEY_SEED=str(seed_file))
    assert kv_round_trip(by_file.nats_target) == b"hello"


def test_a_mistyped_nkey_seed_is_a_configuration_error_that_does_not_echo_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mistyped = new_nkey(nkeys.PREFIX_BYTE_USER).seed[:-3]
    monkeypatch.setenv("NATS_NKEY_SEED", mistyped)
    with pytest.raises(ValidationError) as failure:
        NatsSettings()
    message = describe_validation_error(failure.value)
    assert message.startswith("NATS_NKEY_SEED: is neither an NKey user seed")
    assert mistyped not in message


# -------------------------------------------------------------- .creds (JWT)


def test_creds_file_of_an_operator_account(
    nats_server_with_config: StartNats, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trusted = new_operator()
    server = nats_server_with_config(trusted.server_config())
    creds = trusted.user_creds(tmp_path, "sync")
    # A user of an account the server does not know: a well-formed but wrong credential.
    foreign = new_operator().user_creds(tmp_path, "foreign")

    wrong = settings_from_env(monkeypatch, NATS_URL=server.url, NATS_CREDS=str(foreign))
    message = refusal(wrong.nats_target)
    assert "authorization failed" in message
    secrets = [line for line in foreign.read_text().splitlines() if line.startswith(("SU", "eyJ"))]
    assert len(secrets) == 2  # the user JWT and the seed
    assert not any(secret in message for secret in secrets)

    right = settings_from_env(monkeypatch, NATS_URL=server.url, NATS_CREDS=str(creds))
    assert kv_round_trip(right.nats_target) == b"hello"


def test_a_command_reads_the_creds_from_its_environment(
    nats_server_with_config: StartNats, redis_server: ValkeyServer, tmp_path: Path
) -> None:
    """The operations commands build their connection from the same settings."""
    trusted = new_operator()
    server = nats_server_with_config(trusted.server_config())
    creds = trusted.user_creds(tmp_path, "sync")
    env = {"NATS_URL": server.url, "REDIS_URL": redis_server.url, "NATS_CREDS": str(creds)}
    setup = SyncNats(NatsTarget(server.url, creds_file=str(creds)), "setup", connector=open_nats)
    try:
        setup.run(ensure_bucket(setup.js, "v1-sync-state"))
    finally:
        setup.close()

    allowed = CliRunner().invoke(main, ["dlq", "list", "--json"], env=env)
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout.strip() == "[]"

    refused = CliRunner().invoke(main, ["dlq", "list"], env={**env, "NATS_CREDS": ""})
    assert refused.exit_code == 1
    assert "authorization failed" in refused.stderr


# ----------------------------------------------------------------------- TLS


def tls_server_config(cert: Path, key: Path, client_ca: Authority | None = None) -> str:
    verify = f'  ca_file: "{client_ca.cert_file}"\n  verify: true\n' if client_ca else ""
    return f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n{verify}}}\n'


def test_tls_verifies_the_server_with_the_given_ca(
    nats_server_with_config: StartNats, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    authority = new_authority(tmp_path, "nats")
    rogue = new_authority(tmp_path, "rogue")
    cert, key = issue(authority, tmp_path, "server", server=True)
    server = nats_server_with_config(tls_server_config(cert, key))

    untrusted = settings_from_env(
        monkeypatch, NATS_URL=f"tls://127.0.0.1:{server.port}", NATS_TLS_CA=str(rogue.cert_file)
    )
    message = refusal(untrusted.nats_target)
    assert "TLS failed" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message

    trusted = settings_from_env(
        monkeypatch,
        NATS_URL=f"tls://127.0.0.1:{server.port}",
        NATS_TLS_CA=str(authority.cert_file),
    )
    assert kv_round_trip(trusted.nats_target) == b"hello"


def test_mutual_tls_needs_a_client_certificate_of_the_servers_ca(
    nats_server_with_config: StartNats, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    authority = new_authority(tmp_path, "nats")
    rogue = new_authority(tmp_path, "rogue")
    server_cert, server_key = issue(authority, tmp_path, "server", server=True)
    client_cert, client_key = issue(authority, tmp_path, "client", server=False)
    rogue_cert, rogue_key = issue(rogue, tmp_path, "rogue-client", server=False)
    server = nats_server_with_config(tls_server_config(server_cert, server_key, authority))
    url = f"tls://127.0.0.1:{server.port}"

    without_cert = settings_from_env(
        monkeypatch, NATS_URL=url, NATS_TLS_CA=str(authority.cert_file)
    )
    # The server's alert, or (when the client saw only the close) the TLS hint.
    refused = refusal(without_cert.nats_target)
    assert "CERTIFICATE_REQUIRED" in refused or "check NATS_TLS_CA, NATS_TLS_CERT" in refused

    foreign_cert = settings_from_env(
        monkeypatch,
        NATS_URL=url,
        NATS_TLS_CA=str(authority.cert_file),
        NATS_TLS_CERT=str(rogue_cert),
        NATS_TLS_KEY=str(rogue_key),
    )
    refused = refusal(foreign_cert.nats_target)
    assert "TLS failed" in refused or "check NATS_TLS_CA, NATS_TLS_CERT" in refused

    mutual = settings_from_env(
        monkeypatch,
        NATS_URL=url,
        NATS_TLS_CA=str(authority.cert_file),
        NATS_TLS_CERT=str(client_cert),
        NATS_TLS_KEY=str(client_key),
    )
    assert kv_round_trip(mutual.nats_target) == b"hello"


@pytest.mark.parametrize(
    "config",
    ["", "tls_optional"],
    ids=["server-without-tls", "server-with-optional-tls"],
)
def test_a_client_that_asked_for_tls_refuses_a_plain_connection(
    config: str,
    nats_server_with_config: StartNats,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """nats-py 2.x alone would connect in clear and send the password in CONNECT."""
    authority = new_authority(tmp_path, "nats")
    cert, key = issue(authority, tmp_path, "server", server=True)
    server_config = f'authorization {{ users = [ {{ user: sync, password: "{PASSWORD}" }} ] }}\n'
    if config == "tls_optional":  # TLS offered, plain allowed: nats-py would not upgrade
        server_config += "allow_non_tls: true\n" + tls_server_config(cert, key)
    server = nats_server_with_config(server_config)
    userinfo = f"sync:{PASSWORD}@127.0.0.1:{server.port}"

    by_scheme = refusal(NatsTarget(f"tls://{userinfo}"))
    assert "the server does not require TLS: refusing to connect in clear" in by_scheme
    assert PASSWORD not in by_scheme

    by_ca = settings_from_env(
        monkeypatch, NATS_URL=f"nats://{userinfo}", NATS_TLS_CA=str(authority.cert_file)
    )
    assert "refusing to connect in clear" in refusal(by_ca.nats_target)

    # Without a TLS wish, the plain server is fine: the check only enforces what was asked.
    assert kv_round_trip(NatsTarget(f"nats://{userinfo}")) == b"hello"


# ------------------------------------------------------- settings and logs


def test_a_password_in_the_url_is_in_no_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env(monkeypatch, NATS_URL=f"nats://sync:{PASSWORD}@nats:4222")
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in repr(settings.nats_target)
    assert redact_url(f"nats://sync:{PASSWORD}@a:4222, tls://{TOKEN}@b:4222") == (
        "nats://***@a:4222,tls://***@b:4222"
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"NATS_CREDS": "/no/such/file.creds"}, "NATS_CREDS: is not a readable file"),
        ({"NATS_TLS_CERT": "{cert}"}, "NATS_TLS_CERT and NATS_TLS_KEY go together"),
        ({"NATS_CREDS": "{cert}", "NATS_NKEY_SEED": "{cert}"}, "exclude each other"),
        (
            {"NATS_URL": "nats://u:p@h:4222", "NATS_CREDS": "{cert}"},
            "do not combine it with NATS_CREDS",
        ),
    ],
)
def test_bad_nats_security_settings_exit_2_naming_the_variable(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    some_file = tmp_path / "some.pem"
    some_file.write_text("x")
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(cert=some_file))
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")
    with pytest.raises(ValidationError) as failure:
        BridgeSettings()
    assert expected in describe_validation_error(failure.value)


def test_the_long_running_connection_logs_the_refusal_without_the_secret(
    nats_server_with_config: StartNats, caplog: pytest.LogCaptureFixture
) -> None:
    """A bridge or worker keeps retrying a refused connection; each warning says why."""
    server = nats_server_with_config(f'authorization {{ token: "{TOKEN}" }}\n')

    async def attempt() -> None:
        try:
            nc = await asyncio.wait_for(connect(with_user(server, "tok-wrong-9"), "test"), 3)
        except TimeoutError:
            return
        await nc.close()
        raise AssertionError("a wrong token connected")

    with caplog.at_level(logging.WARNING, logger="sync_core.nats_client"):
        asyncio.run(attempt())
    warnings = [getattr(r, "error", "") for r in caplog.records if r.getMessage() == "nats error"]
    assert any("authorization failed" in text for text in warnings)
    assert not any("tok-wrong-9" in text for text in warnings)


# ------------------------------------------------------------ a real bridge


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_bridge_process_syncs_through_a_creds_file_and_reports_a_refusal(
    nats_server_with_config: StartNats, redis_server: ValkeyServer, tmp_path: Path
) -> None:
    """The bridge reads NATS_CREDS like every command: a put becomes a queued task."""
    trusted = new_operator()
    server = nats_server_with_config(trusted.server_config())
    creds = trusted.user_creds(tmp_path, "sync")
    foreign = new_operator().user_creds(tmp_path, "foreign")
    setup = SyncNats(NatsTarget(server.url, creds_file=str(creds)), "setup", connector=open_nats)
    try:
        setup.run(ensure_buckets(setup.js, "v1-objects", "v1-mappings"))
        setup.kv_put("v1-objects", "salesforce-project__c.secured1", b'{"Name": "x"}')
    finally:
        setup.close()
    queue = redis.Redis.from_url(redis_server.url)

    def start_bridge(creds_file: Path, log: Path) -> subprocess.Popen[bytes]:
        env = child_env(
            NATS_URL=server.url,
            NATS_CREDS=str(creds_file),
            REDIS_URL=redis_server.url,
            PORT=str(free_port()),
            BIND="127.0.0.1",
        )
        with log.open("wb") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "v1_sync_helper", "bridge"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    refused_log = tmp_path / "refused.log"
    refused = start_bridge(foreign, refused_log)
    try:
        wait_for(lambda: b"authorization failed" in refused_log.read_bytes(), "the refusal")
        assert queue.llen("celery") == 0
    finally:
        refused.terminate()
        refused.wait(20)
    secrets = [line for line in foreign.read_text().splitlines() if line.startswith(("SU", "eyJ"))]
    assert not any(secret.encode() in refused_log.read_bytes() for secret in secrets)

    allowed_log = tmp_path / "allowed.log"
    allowed = start_bridge(creds, allowed_log)
    try:
        wait_for(lambda: queue.llen("celery") == 1, "the task of the put")
        assert b"salesforce-project__c.secured1" in queue.lindex("celery", 0)
    finally:
        allowed.terminate()
        allowed.wait(20)
        queue.close()


def test_the_most_telling_connect_error_is_reported() -> None:
    reset = ConnectionResetError(104, "Connection reset by peer")
    refused = Exception("nats: 'Authorization Violation'")
    assert most_telling_error([refused, reset]) is refused
    assert most_telling_error([reset, refused, reset]) is refused
    assert most_telling_error([reset]) is reset


def test_a_bare_close_of_a_tls_connection_points_at_the_tls_settings() -> None:
    closed = Exception("nats: no servers available for connection")
    assert "NATS_TLS_CERT" in describe_connect_error(closed, tls_wanted=True)
    assert describe_connect_error(closed) == str(closed)
