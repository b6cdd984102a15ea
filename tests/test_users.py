"""The V1 user directory: principal rules, the KV cache, the cross-worker lock.

Pure rules are table-driven; everything else runs against a real nats-server
(``sync_nats``) and the sandbox's Auth0 and V1 user service, which verify the
client assertion and the bearer token and count every call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from nats.js.errors import NoKeysError
from pydantic import SecretStr

from sandbox.servers import NatsServer
from sandbox.service import Sandbox
from sync_core.nats_client import SyncNats
from sync_core.settings import WorkerSettings
from tasks.clients.cached_directory import DEFAULT_MEMO_SECONDS
from tasks.clients.identity import Identity
from tasks.clients.users import (
    CachedUser,
    UserDirectory,
    V1UserFetcher,
    is_safe_username,
    user_identity,
)
from tests.conftest import MAPPINGS_BUCKET

CLIENT_ID = "v1_sync_helper"
FALLBACK = Identity(principal=f"{CLIENT_ID}@clients", sub=CLIENT_ID)


# Pure rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "safe"),
    [
        ("jdoe", True),
        ("jane.doe-2_x", True),
        ("", False),
        ("jane doe", False),
        ("jane@example.com", False),
        ("bot@clients", False),
        ("tab\tname", False),
        ("line\nbreak", False),
        (" jdoe", False),
        ("nbsp\u00a0name", False),
    ],
)
def test_safe_usernames(username: str, safe: bool) -> None:
    assert is_safe_username(username) is safe


def _user(username: str, email: str = "", error: str | None = None) -> CachedUser:
    return CachedUser("0032M00002XyZabQAB", username, email, "Jane", "Doe", 1000.0, error)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (
            _user("jdoe", "jane@example.com"),
            Identity("jdoe", "jdoe", "jane@example.com", "jdoe"),
        ),
        (_user("jdoe", ""), Identity("jdoe", "jdoe", None, "jdoe")),
        (_user("jdoe", "   "), Identity("jdoe", "jdoe", None, "jdoe")),
        (_user(""), None),
        (_user("jane doe", "jane@example.com"), None),
        (_user("jane@example.com"), None),
        (_user("", error="not_found"), None),
    ],
)
def test_user_identity_follows_the_principal_table(
    user: CachedUser, expected: Identity | None
) -> None:
    assert user_identity(user) == expected


def test_cache_entry_round_trips_with_the_documented_fields() -> None:
    user = CachedUser("0032M00002XyZabQAB", "jdoe", "jane@example.com", "Jane", "Doe", 1234.5)
    raw = user.to_json()
    assert json.loads(raw) == {
        "ID": "0032M00002XyZabQAB",
        "Username": "jdoe",
        "Email": "jane@example.com",
        "FirstName": "Jane",
        "LastName": "Doe",
        "_last_fetched": 1234.5,
    }
    assert CachedUser.from_json(raw) == user
    failed = CachedUser.failed("0032M00002XyZabQAB", "not_found", 99.0)
    assert json.loads(failed.to_json())["_error"] == "not_found"
    assert CachedUser.from_json(failed.to_json()) == failed


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"Username":"x"}', b"null"])
def test_malformed_cache_entries_read_as_absent(raw: bytes) -> None:
    assert CachedUser.from_json(raw) is None


def test_cache_entry_from_api_tolerates_missing_and_null_fields() -> None:
    user = CachedUser.from_api("abc", {"Username": "jdoe", "Email": None}, 5.0)
    assert user == CachedUser("abc", "jdoe", "", "", "", 5.0)


# Against NATS and the sandbox ----------------------------------------------

AUTH0_CLIENT_ID = "sync-helper-test-client"
USER_ID = "0032M00002XyZabQAB"
USER = {
    "ID": USER_ID,
    "Username": "jdoe",
    "Email": "jane@example.com",
    "FirstName": "Jane",
    "LastName": "Doe",
}
JDOE = Identity(principal="jdoe", sub="jdoe", email="jane@example.com", on_behalf_of="jdoe")
MACHINE = "v1_sync_helper@clients"
USERS_PATH = "/v1/users/"
TOKEN_PATH = "/oauth/token"
# Generous for the Auth0 round trip on a busy machine; the timeout case waits twice this.
HTTP_TIMEOUT = 1.0
LOCK_WAIT = 1.0
FRESH_FOR = 3600.0
START = 1_700_000_000.0
DEADLINE = 5.0


class Clock:
    """A settable time source, starting at a real time so locks stay comparable."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _private(pem: str) -> RSAPrivateKey:
    key = load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, RSAPrivateKey)
    return key


@pytest.fixture
def sandbox(rsa_pems: dict[str, str]) -> Iterator[Sandbox]:
    with Sandbox(
        heimdall_keys={"kid-1": _private(rsa_pems["heimdall"]).public_key()},
        auth0_clients={AUTH0_CLIENT_ID: _private(rsa_pems["auth0"]).public_key()},
        users={USER_ID: USER},
    ) as sb:
        yield sb


@pytest.fixture
def settings(sandbox: Sandbox, rsa_pems: dict[str, str], buckets: NatsServer) -> WorkerSettings:
    env = sandbox.env()
    return WorkerSettings(
        nats_url=buckets.url,
        project_service_url=env["PROJECT_SERVICE_URL"],
        heimdall_client_id=CLIENT_ID,
        heimdall_private_key=SecretStr(rsa_pems["heimdall"]),
        auth0_tenant="sandbox",
        auth0_client_id=AUTH0_CLIENT_ID,
        auth0_private_key=SecretStr(rsa_pems["auth0"]),
        auth0_base_url=env["AUTH0_BASE_URL"],
        lfx_api_gw=env["LFX_API_GW"],
        http_timeout=HTTP_TIMEOUT,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


@pytest.fixture
def make_directory(
    settings: WorkerSettings, clock: Clock
) -> Iterator[Callable[..., UserDirectory]]:
    """Builds directories (each its own NATS connection and HTTP client, like a
    worker process) and closes them all at teardown."""
    opened: list[tuple[UserDirectory, V1UserFetcher, SyncNats]] = []

    def make(**options: Any) -> UserDirectory:
        nats = SyncNats(settings.nats_url, "users-test")
        fetcher = V1UserFetcher(settings)
        options.setdefault("lock_wait", LOCK_WAIT)
        options.setdefault("clock", clock)
        directory = UserDirectory(
            nats, settings.v1_mappings_bucket, fetcher, client_id=CLIENT_ID, **options
        )
        opened.append((directory, fetcher, nats))
        return directory

    yield make
    for directory, fetcher, nats in opened:
        directory.close()
        fetcher.close()
        nats.close()


@pytest.fixture
def directory(make_directory: Callable[..., UserDirectory]) -> UserDirectory:
    return make_directory()


def _cached(sync_nats: SyncNats, platform_id: str = USER_ID) -> dict[str, Any] | None:
    entry = sync_nats.kv_get(MAPPINGS_BUCKET, f"v1_user.{platform_id}")
    return json.loads(entry.value) if entry is not None else None


def _lock(sync_nats: SyncNats, platform_id: str = USER_ID) -> Any:
    return sync_nats.kv_get(MAPPINGS_BUCKET, f"v1_user_lock.{platform_id}")


def _keys(sync_nats: SyncNats) -> list[str]:
    try:
        return list(sync_nats.run(sync_nats.kv(MAPPINGS_BUCKET).keys()))
    except NoKeysError:
        return []


def _wait_until(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _warnings_for(caplog: pytest.LogCaptureFixture, platform_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and getattr(r, "platform_id", None) == platform_id
    ]


def test_a_platform_id_is_looked_up_cached_and_its_lock_released(
    directory: UserDirectory, sandbox: Sandbox, sync_nats: SyncNats, clock: Clock
) -> None:
    assert directory.identity_for(USER_ID) == JDOE
    assert _cached(sync_nats) == {**USER, "_last_fetched": clock.now}
    assert _lock(sync_nats) is None
    assert directory.identity_for(USER_ID) == JDOE
    assert sandbox.count("GET", USERS_PATH) == 1


def test_a_fresh_entry_is_answered_from_memory_for_a_minute_at_most(
    directory: UserDirectory, sandbox: Sandbox, sync_nats: SyncNats, clock: Clock
) -> None:
    assert directory.identity_for(USER_ID) == JDOE
    # Another worker's refresh lands in the bucket: this process still answers
    # from memory (no round trip), for at most DEFAULT_MEMO_SECONDS.
    newer = {**USER, "Username": "jdoe3", "_last_fetched": clock.now}
    sync_nats.kv_put(MAPPINGS_BUCKET, f"v1_user.{USER_ID}", json.dumps(newer).encode())
    clock.now += DEFAULT_MEMO_SECONDS - 1
    assert directory.identity_for(USER_ID) == JDOE
    clock.now += 2
    assert directory.identity_for(USER_ID).principal == "jdoe3"
    assert sandbox.count("GET", USERS_PATH) == 1


def test_a_stale_entry_is_never_answered_from_memory(
    directory: UserDirectory, sandbox: Sandbox, sync_nats: SyncNats, clock: Clock
) -> None:
    """An entry close to the end of its freshness is kept in memory only until then."""
    aging = {**USER, "_last_fetched": clock.now - FRESH_FOR + 10}
    sync_nats.kv_put(MAPPINGS_BUCKET, f"v1_user.{USER_ID}", json.dumps(aging).encode())
    assert directory.identity_for(USER_ID) == JDOE  # fresh: no call
    assert sandbox.count("GET", USERS_PATH) == 0
    sandbox.add_user(USER_ID, {**USER, "Username": "jdoe2"})
    clock.now += 11  # stale now, though well within DEFAULT_MEMO_SECONDS
    directory.identity_for(USER_ID)
    _wait_until(lambda: (_cached(sync_nats) or {}).get("Username") == "jdoe2")
    assert sandbox.count("GET", USERS_PATH) == 1
    assert directory.identity_for(USER_ID).principal == "jdoe2"


def test_an_empty_email_is_left_out(directory: UserDirectory, sandbox: Sandbox) -> None:
    sandbox.add_user("003NOEMAIL", {**USER, "ID": "003NOEMAIL", "Email": ""})
    assert directory.identity_for("003NOEMAIL") == Identity("jdoe", "jdoe", None, "jdoe")


def test_many_users_share_one_access_token(directory: UserDirectory, sandbox: Sandbox) -> None:
    ids = [f"003USER{n:04d}" for n in range(10)]
    for n, platform_id in enumerate(ids):
        sandbox.add_user(platform_id, {**USER, "ID": platform_id, "Username": f"user{n}"})
    assert [directory.identity_for(p).principal for p in ids] == [f"user{n}" for n in range(10)]
    assert sandbox.count("GET", USERS_PATH) == 10
    assert sandbox.count("POST", TOKEN_PATH) == 1


def test_fifty_concurrent_lookups_of_one_user_make_one_call(
    make_directory: Callable[..., UserDirectory], sandbox: Sandbox
) -> None:
    # Two "workers" (own NATS connection and HTTP client each), 25 threads each.
    # A wait longer than the 1 s default keeps a busy machine from failing the test.
    workers = [make_directory(lock_wait=3.0), make_directory(lock_wait=3.0)]
    # A slow user service keeps the lock held while every thread arrives.
    sandbox.inject_fault("GET", USERS_PATH, status=None, delay=0.2)
    start = threading.Barrier(50)
    results: list[Identity] = []

    def lookup(worker: UserDirectory) -> None:
        start.wait()
        results.append(worker.identity_for(USER_ID))

    threads = [threading.Thread(target=lookup, args=(workers[n % 2],)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert len(results) == 50
    assert set(results) == {JDOE}
    assert sandbox.count("GET", USERS_PATH) == 1


def test_a_stale_entry_is_served_at_once_and_refreshed_in_the_background(
    directory: UserDirectory, sandbox: Sandbox, sync_nats: SyncNats, clock: Clock
) -> None:
    assert directory.identity_for(USER_ID) == JDOE
    sandbox.add_user(USER_ID, {**USER, "Username": "jdoe2", "Email": ""})
    delay = 0.5
    sandbox.inject_fault("GET", USERS_PATH, status=None, delay=delay)
    clock.now += FRESH_FOR + 1

    started = time.monotonic()
    for _ in range(10):
        assert directory.identity_for(USER_ID) == JDOE
    # Ten answers within the user service's injected delay: nobody waited for it.
    assert time.monotonic() - started < delay

    _wait_until(lambda: (_cached(sync_nats) or {}).get("Username") == "jdoe2")
    assert _cached(sync_nats) == {
        **USER,
        "Username": "jdoe2",
        "Email": "",
        "_last_fetched": clock.now,
    }
    assert directory.identity_for(USER_ID) == Identity("jdoe2", "jdoe2", None, "jdoe2")
    # One refresh however often the stale entry was read.
    assert sandbox.count("GET", USERS_PATH) == 2
    _wait_until(lambda: _lock(sync_nats) is None)


def test_a_refresh_that_hits_an_outage_keeps_the_known_user(
    directory: UserDirectory, sandbox: Sandbox, sync_nats: SyncNats, clock: Clock
) -> None:
    assert directory.identity_for(USER_ID) == JDOE
    sandbox.inject_fault("GET", USERS_PATH, status=500)
    clock.now += FRESH_FOR + 1
    assert directory.identity_for(USER_ID) == JDOE
    _wait_until(lambda: (_cached(sync_nats) or {}).get("_last_fetched") == clock.now)
    assert _cached(sync_nats) == {**USER, "_last_fetched": clock.now}
    assert directory.identity_for(USER_ID) == JDOE
    assert sandbox.count("GET", USERS_PATH) == 2


FAILURES = {
    # name: (how to provoke it, the expected cached _error)
    "404": (lambda sb: sb.remove_user(USER_ID), "not_found"),
    "500": (lambda sb: sb.inject_fault("GET", USERS_PATH, status=500), "server_error"),
    "timeout": (
        lambda sb: sb.inject_fault("GET", USERS_PATH, status=None, delay=HTTP_TIMEOUT * 2),
        "timeout",
    ),
    "empty username": (lambda sb: sb.add_user(USER_ID, {**USER, "Username": ""}), None),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_lookup_falls_back_and_is_cached_for_the_hour(
    failure: str,
    make_directory: Callable[..., UserDirectory],
    sandbox: Sandbox,
    sync_nats: SyncNats,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provoke, error = FAILURES[failure]
    provoke(sandbox)
    directory = make_directory()
    caplog.set_level(logging.WARNING, logger="tasks.clients.users")

    assert directory.identity_for(USER_ID) == FALLBACK
    assert _warnings_for(caplog, USER_ID)
    cached = _cached(sync_nats)
    assert cached is not None
    assert cached.get("_error") == error
    assert cached["Username"] == ""
    # A timed-out request is recorded once the sandbox answers it.
    _wait_until(lambda: sandbox.count("GET", USERS_PATH) == 1)

    clock.now += FRESH_FOR - 1
    assert directory.identity_for(USER_ID) == FALLBACK
    # close() joins any refresh the read started: none may have called.
    directory.close()
    assert sandbox.count("GET", USERS_PATH) == 1

    # After the hour the failure expires like any entry: one refresh, then the user.
    sandbox.clear_faults()
    sandbox.add_user(USER_ID, USER)
    clock.now += 2
    other_worker = make_directory()
    assert other_worker.identity_for(USER_ID) == FALLBACK
    _wait_until(lambda: other_worker.identity_for(USER_ID) == JDOE)
    assert sandbox.count("GET", USERS_PATH) == 2


@pytest.mark.parametrize("username", ["jane doe", "jane@example.com", "jdoe\n"])
def test_unsafe_usernames_fall_back(
    username: str,
    directory: UserDirectory,
    sandbox: Sandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox.add_user(USER_ID, {**USER, "Username": username})
    caplog.set_level(logging.WARNING, logger="tasks.clients.users")
    assert directory.identity_for(USER_ID) == FALLBACK
    [warning] = _warnings_for(caplog, USER_ID)
    assert warning.__dict__["username"] == username


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (MACHINE, Identity(MACHINE, "v1_sync_helper", None, "v1_sync_helper")),
        ("other-bot@clients", Identity("other-bot@clients", "other-bot", None, "other-bot")),
        ("@clients", FALLBACK),
        ("two words@clients", FALLBACK),
        (None, FALLBACK),
        ("", FALLBACK),
        ("   ", FALLBACK),
        ("not a platform id", FALLBACK),
        ("jane@example.com", FALLBACK),
    ],
)
def test_machine_users_and_non_ids_never_call_the_user_service(
    value: str | None,
    expected: Identity,
    directory: UserDirectory,
    sandbox: Sandbox,
    sync_nats: SyncNats,
) -> None:
    assert directory.identity_for(value) == expected
    assert sandbox.count("GET", USERS_PATH) == 0
    assert sandbox.count("POST", TOKEN_PATH) == 0
    assert _keys(sync_nats) == []


def test_a_stale_lock_is_taken_over(
    directory: UserDirectory, sandbox: Sandbox, sync_nats: SyncNats, clock: Clock
) -> None:
    # A worker died holding the lock 20 s ago.
    sync_nats.kv_put(MAPPINGS_BUCKET, f"v1_user_lock.{USER_ID}", f"{clock.now - 20}".encode())
    assert directory.identity_for(USER_ID) == JDOE
    assert sandbox.count("GET", USERS_PATH) == 1
    assert _lock(sync_nats) is None


def test_a_fresh_lock_without_a_result_falls_back_after_the_wait(
    make_directory: Callable[..., UserDirectory],
    sandbox: Sandbox,
    sync_nats: SyncNats,
    clock: Clock,
) -> None:
    directory = make_directory(lock_wait=0.3)
    sync_nats.kv_put(MAPPINGS_BUCKET, f"v1_user_lock.{USER_ID}", f"{clock.now - 1}".encode())
    started = time.monotonic()
    assert directory.identity_for(USER_ID) == FALLBACK
    assert time.monotonic() - started >= 0.3
    assert sandbox.count("GET", USERS_PATH) == 0
    assert _cached(sync_nats) is None


def test_a_caller_waiting_on_a_lock_gets_the_other_workers_result(
    directory: UserDirectory, sandbox: Sandbox, sync_nats: SyncNats, clock: Clock
) -> None:
    sync_nats.kv_put(MAPPINGS_BUCKET, f"v1_user_lock.{USER_ID}", f"{clock.now}".encode())
    entry = CachedUser.from_api(USER_ID, USER, clock.now).to_json()
    writer = threading.Timer(
        0.2, lambda: sync_nats.kv_put(MAPPINGS_BUCKET, f"v1_user.{USER_ID}", entry)
    )
    writer.start()
    try:
        assert directory.identity_for(USER_ID) == JDOE
    finally:
        writer.cancel()
        writer.join()
    assert sandbox.count("GET", USERS_PATH) == 0


def test_close_stops_the_refresh_threads(
    directory: UserDirectory, sandbox: Sandbox, clock: Clock
) -> None:
    assert directory.identity_for(USER_ID) == JDOE
    clock.now += FRESH_FOR + 1
    assert directory.identity_for(USER_ID) == JDOE  # starts a refresh
    directory.close()
    alive = [t for t in threading.enumerate() if t.name.startswith("v1-user-refresh")]
    assert alive == []
    # After close, stale entries are still served but no refresh starts.
    clock.now += FRESH_FOR + 1
    before = sandbox.count("GET", USERS_PATH)
    assert directory.identity_for(USER_ID) == JDOE
    assert sandbox.count("GET", USERS_PATH) == before
