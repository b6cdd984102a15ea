"""Configuration: defaults, validation, exit code 2 and secret hygiene."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from sync_core.settings import (
    BridgeSettings,
    WorkerSettings,
    describe_validation_error,
    load_settings,
)

WORKER_ENV_NAMES = (
    "NATS_URL",
    "REDIS_URL",
    "PROJECT_SERVICE_URL",
    "COMMITTEE_SERVICE_URL",
    "HEIMDALL_PRIVATE_KEY",
    "HEIMDALL_KEY_ID",
    "HEIMDALL_JWKS_URL",
    "HEIMDALL_CLIENT_ID",
    "AUTH0_TENANT",
    "AUTH0_CLIENT_ID",
    "AUTH0_PRIVATE_KEY",
    "AUTH0_BASE_URL",
    "LFX_API_GW",
    "PORT",
    "BIND",
    "DEBUG",
    "SYNC_V2_TO_V1",
    "V2_EVENTS_STREAM",
    "V2_EVENTS_SUBJECTS",
    "V2_EVENTS_MAX_AGE",
    "V2_EVENTS_CONSUMER_NAME",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WORKER_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def worker_env(monkeypatch: pytest.MonkeyPatch, pems: dict[str, str]) -> None:
    monkeypatch.setenv("PROJECT_SERVICE_URL", "http://projects.local")
    monkeypatch.setenv("HEIMDALL_PRIVATE_KEY", pems["heimdall"])
    monkeypatch.setenv("AUTH0_TENANT", "linuxfoundation-dev")
    monkeypatch.setenv("AUTH0_CLIENT_ID", "client-1")
    monkeypatch.setenv("AUTH0_PRIVATE_KEY", pems["auth0"])


def test_bridge_defaults_match_the_documented_table() -> None:
    settings = BridgeSettings()
    assert settings.nats_url == "nats://localhost:4222"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert (settings.port, settings.bind, settings.debug) == (8080, "*", False)
    assert settings.v1_objects_bucket == "v1-objects"
    assert settings.v1_mappings_bucket == "v1-mappings"
    assert settings.kv_consumer_name == "v1-sync-helper-kv-consumer"
    assert settings.bridge_max_queue_depth == 10_000


def test_the_v2_to_v1_direction_is_off_by_default_with_the_documented_stream() -> None:
    settings = BridgeSettings()
    assert settings.sync_v2_to_v1 is False
    assert settings.v2_events_stream == "committee_events"
    assert settings.v2_events_subject_list == ["lfx.committee.>", "lfx.committee_member.>"]
    assert settings.v2_events_max_age == 14 * 24 * 3600
    assert settings.v2_events_consumer_name == "v1-sync-helper-v2-events-consumer"


def test_the_v2_to_v1_switch_and_stream_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNC_V2_TO_V1", "true")
    monkeypatch.setenv("V2_EVENTS_STREAM", "edits")
    monkeypatch.setenv("V2_EVENTS_SUBJECTS", " lfx.committee.* , lfx.committee_member.> ")
    monkeypatch.setenv("V2_EVENTS_MAX_AGE", "3600")
    settings = BridgeSettings()
    assert settings.sync_v2_to_v1 is True
    assert settings.v2_events_stream == "edits"
    assert settings.v2_events_subject_list == ["lfx.committee.*", "lfx.committee_member.>"]
    assert settings.v2_events_max_age == 3600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYNC_V2_TO_V1", "perhaps"),
        ("V2_EVENTS_STREAM", "committee.events"),
        ("V2_EVENTS_STREAM", "events>"),
        ("V2_EVENTS_CONSUMER_NAME", " "),
        ("V2_EVENTS_SUBJECTS", " , "),
        ("V2_EVENTS_SUBJECTS", "lfx..committee"),
        ("V2_EVENTS_SUBJECTS", "lfx.>.committee"),
        ("V2_EVENTS_SUBJECTS", "lfx committee"),
        ("V2_EVENTS_MAX_AGE", "0"),
    ],
)
def test_a_malformed_v2_events_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        BridgeSettings()
    assert describe_validation_error(caught.value).startswith(f"{name}: ")


def test_bridge_does_not_ask_for_signing_keys() -> None:
    assert "heimdall_private_key" not in BridgeSettings.model_fields


def test_worker_defaults(monkeypatch: pytest.MonkeyPatch, rsa_pems: dict[str, str]) -> None:
    worker_env(monkeypatch, rsa_pems)
    settings = WorkerSettings()
    assert settings.heimdall_client_id == "v1_sync_helper"
    assert settings.heimdall_jwks_url.endswith(":4457/.well-known/jwks")
    assert settings.lfx_api_gw == "https://api-gw.dev.platform.linuxfoundation.org/"
    assert (
        settings.sync_retry_max,
        settings.sync_retry_backoff_base,
        settings.sync_retry_backoff_max,
    ) == (10, 2.0, 300.0)
    assert settings.auth0_token_url == "https://linuxfoundation-dev.auth0.com/oauth/token"
    assert settings.committee_service_url is None


def test_auth0_base_url_overrides_the_token_endpoint(
    monkeypatch: pytest.MonkeyPatch, rsa_pems: dict[str, str]
) -> None:
    worker_env(monkeypatch, rsa_pems)
    monkeypatch.setenv("AUTH0_BASE_URL", "http://127.0.0.1:9999/")
    settings = WorkerSettings()
    assert settings.auth0_token_url == "http://127.0.0.1:9999/oauth/token"
    assert settings.auth0_audience_url == "http://127.0.0.1:9999/"


def test_pem_with_literal_backslash_n_loads(
    monkeypatch: pytest.MonkeyPatch, rsa_pems: dict[str, str]
) -> None:
    worker_env(monkeypatch, rsa_pems)
    monkeypatch.setenv("HEIMDALL_PRIVATE_KEY", rsa_pems["heimdall"].strip().replace("\n", "\\n"))
    settings = WorkerSettings()
    assert settings.heimdall_signing_key().key_size == 2048
    assert settings.auth0_signing_key().key_size == 2048  # PKCS#1


def test_secrets_never_in_repr(monkeypatch: pytest.MonkeyPatch, rsa_pems: dict[str, str]) -> None:
    worker_env(monkeypatch, rsa_pems)
    text = repr(WorkerSettings()) + str(WorkerSettings())
    assert "PRIVATE KEY" not in text
    assert rsa_pems["heimdall"].splitlines()[1] not in text


def test_bad_pem_error_names_the_variable_without_its_value(
    monkeypatch: pytest.MonkeyPatch, rsa_pems: dict[str, str]
) -> None:
    worker_env(monkeypatch, rsa_pems)
    secret = (
        "-----BEGIN PRIVATE KEY-----\n"
        "c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==\n"
        "-----END PRIVATE KEY-----"
    )
    monkeypatch.setenv("HEIMDALL_PRIVATE_KEY", secret)
    with pytest.raises(ValidationError) as caught:
        WorkerSettings()
    line = describe_validation_error(caught.value)
    assert line.startswith("HEIMDALL_PRIVATE_KEY: ")
    assert "c2VjcmV0" not in line


def test_missing_worker_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, rsa_pems: dict[str, str]
) -> None:
    worker_env(monkeypatch, rsa_pems)
    monkeypatch.delenv("PROJECT_SERVICE_URL")
    with pytest.raises(SystemExit) as caught:
        load_settings(WorkerSettings)
    assert caught.value.code == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [("NATS_URL", "not-a-url"), ("REDIS_URL", "http://x"), ("PORT", "eighty"), ("DEBUG", "maybe")],
)
def test_malformed_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        BridgeSettings()
    assert describe_validation_error(caught.value).startswith(f"{name}: ")


@pytest.mark.parametrize(
    "client_id", ["v1 sync", "bot@clients", "客户端", "x" * 257, "tab\tid", "line\nbreak"]
)
def test_a_client_id_no_header_can_carry_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, rsa_pems: dict[str, str], client_id: str
) -> None:
    """HEIMDALL_CLIENT_ID is every fallback write's ``sub`` and ``principal``."""
    worker_env(monkeypatch, rsa_pems)
    monkeypatch.setenv("HEIMDALL_CLIENT_ID", client_id)
    with pytest.raises(ValidationError) as caught:
        WorkerSettings()
    line = describe_validation_error(caught.value)
    assert line.startswith("HEIMDALL_CLIENT_ID: ")
    assert "visible ASCII" in line


def test_a_client_id_with_dashes_dots_and_underscores_is_accepted(
    monkeypatch: pytest.MonkeyPatch, rsa_pems: dict[str, str]
) -> None:
    worker_env(monkeypatch, rsa_pems)
    monkeypatch.setenv("HEIMDALL_CLIENT_ID", "  lfx-v1_sync.helper  ")
    assert WorkerSettings().heimdall_client_id == "lfx-v1_sync.helper"


def test_bridge_command_exits_2_naming_nats_url() -> None:
    env = {"NATS_URL": "not-a-url", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "v1_sync_helper", "bridge"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "NATS_URL" in lines[0]
