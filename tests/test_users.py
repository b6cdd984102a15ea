"""The V1 user directory: principal rules, the KV cache, the cross-worker lock.

Pure rules are table-driven; everything else runs against a real nats-server
(``sync_nats``) and the sandbox's Auth0 and V1 user service, which verify the
client assertion and the bearer token and count every call.
"""

from __future__ import annotations

import pytest

from tasks.identity import Identity
from tasks.users import CachedUser, is_safe_username, user_identity

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
    import json

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
