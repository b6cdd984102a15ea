"""Property tests: decode -> ids -> map -> body -> identity -> headers, for any value.

Every mapped and identity column of a V1 project or committee gets arbitrary JSON
and msgpack values (wrong types, huge and odd strings, surrogates, NaN, bytes,
extension types, timestamps out of range, deep nesting). Whatever comes in, the
pipeline ends in one of the defined outcome classes and never raises anything
else:

- ``invalid_record`` / ``undecodable``: an ``InvalidRecord`` with a short message;
- ``soft_delete``: exactly when ``_sdc_deleted_at`` is a non-blank string or a
  datetime, or ``isdeleted`` is ``true``;
- ``body``: a body the strict sandbox validator accepts, JSON without NaN, in
  which every mapped column is either its documented value or absent with a
  warning naming its V2 field; and an identity whose token and headers
  http.client can send (Latin-1, no CR/LF, each line well under 8 KiB), which
  is the service identity whenever the input was not a usable id or name.
"""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.validation import validate_committee, validate_project
from tasks.clients.identity import MACHINE_SUFFIX, Identity, fallback_identity, is_safe_header_name
from tasks.clients.tokens import TokenMinter
from tasks.clients.users import PLATFORM_ID_PATTERN, CachedUser, UserDirectory
from tasks.errors import InvalidRecord
from tasks.kinds.base import ObjectKind
from tasks.kinds.committees import COMMITTEES
from tasks.kinds.projects import PROJECT_AUDIENCE, PROJECTS
from tasks.mapping.codec import decode_value, is_soft_delete
from tasks.mapping.committees import map_committee
from tasks.mapping.projects import (
    PROJECT_BOOL_FIELDS,
    PROJECT_DATE_FIELDS,
    PROJECT_ENUM_FIELDS,
    PROJECT_TEXT_FIELDS,
    PROJECT_URL_FIELDS,
    default_public,
    map_project,
)
from tasks.mapping.record_ids import check_key_id, checked_record
from tests.v1_examples import COMMITTEE_JSON, PROJECT_JSON, record

SFID = "a0941000002wBz9AAE"
COMMITTEE_ID = "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a"
PARENT_UID = "5b3c1f0e-1d2a-4c3b-8e9f-0a1b2c3d4e5f"
CLIENT_ID = "v1_sync_helper"
FALLBACK = fallback_identity(CLIENT_ID)
MESSAGE_MAX_CHARS = 400
HEADER_LINE_MAX_BYTES = 8 * 1024
EXAMPLES = 300

PROJECT_COLUMNS = [*json.loads(PROJECT_JSON), "_sdc_deleted_at"]
COMMITTEE_COLUMNS = [*json.loads(COMMITTEE_JSON), "_sdc_deleted_at"]

# --- values ---------------------------------------------------------------------------

odd_texts = st.sampled_from(
    [
        "",
        " ",
        "nil",
        "NIL",
        "null",
        "\u0000",
        "a\r\nX-Injected: 1",
        "\ud800",
        "用户",
        "\U0001f600",
        "jos\u00e9",
        "x" * 5000,
        "x" * 70_000,
        SFID,
        f" {SFID} ",
        COMMITTEE_ID,
        "Active",
        " active ",
        "Board",
        "2020-03-01T00:00:00+00:00",
        "2020-02-30",
        "www.example.org",
        "javascript:alert(1)",
        "bot@clients",
        "用户@clients",
        "x" * 100_000 + "@clients",
        "@clients",
        "0032M00002XyZabQAB",
    ]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | odd_texts
)
msgpack_scalars = (
    scalars
    | st.binary(max_size=40)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
    | st.builds(
        msgpack.Timestamp,
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.integers(0, 999_999_999),
    )
)


# Stands for a value nested ~1000 deep, which the encoders refuse to write but a
# loader (or an attacker) can: ``encode`` splices the raw bytes in.
DEEP = "\x00deep\x00"
DEEP_JSON = "[" * 990 + "]" * 990
DEEP_MSGPACK = b"\x91" * 1000 + b"\x90"


def values(base: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    containers = st.recursive(
        base,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=6,
    )
    return containers | st.just(DEEP)


json_values = values(scalars)
msgpack_values = values(msgpack_scalars)


def records(template: str, columns: list[str]) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    """A realistic record with some columns replaced by hostile values, and its encoding."""

    def build(encoding: str) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
        hostile = json_values if encoding == "json" else msgpack_values
        changes = st.dictionaries(st.sampled_from(columns), hostile, max_size=6)
        return changes.map(lambda c: ({**record(template), **c}, encoding))

    return st.sampled_from(["json", "msgpack"]).flatmap(build)


def encode(value: dict[str, Any], encoding: str) -> bytes:
    if encoding == "json":
        text = json.dumps(value)
        return text.replace(json.dumps(DEEP), DEEP_JSON).encode("utf-8", "surrogatepass")
    data = msgpack.packb(value, use_bin_type=True, unicode_errors="surrogatepass")
    return data.replace(msgpack.packb(DEEP), DEEP_MSGPACK)


# Hypothesis raises the recursion limit while a test runs; a worker thread has
# the default 1000 minus Celery's own frames. Deep values must work there.
WORKER_HEADROOM_FRAMES = 900


@contextmanager
def worker_stack() -> Iterator[None]:
    """Run with the recursion headroom of a worker thread, not hypothesis's."""
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back  # type: ignore[assignment]
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + WORKER_HEADROOM_FRAMES)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


# --- the identity half ----------------------------------------------------------------


class NoUserService:
    """A user fetcher that must not be called: ``ScriptedDirectory`` answers itself."""

    def fetch(self, platform_id: str) -> dict[str, Any]:
        raise AssertionError(f"the user service was called for {platform_id}")


class ScriptedDirectory(UserDirectory):
    """The real rules, with the V1 user service answer given by the test."""

    def __init__(self, username: Any, email: Any) -> None:
        super().__init__(None, "v1-mappings", NoUserService(), client_id=CLIENT_ID)  # type: ignore[arg-type]
        self.user = CachedUser(
            "0032M00002XyZabQAB",
            username if isinstance(username, str) else "",
            email if isinstance(email, str) else "",
            "",
            "",
            0.0,
        )

    def lookup(self, platform_id: str) -> CachedUser | None:
        return self.user


def assert_sendable(identity: Identity, minter: TokenMinter) -> None:
    """http.client would send the token and headers of ``identity``; nothing oversized."""
    headers = {"Authorization": f"Bearer {minter.token(PROJECT_AUDIENCE, identity)}"}
    if identity.on_behalf_of:
        headers["X-On-Behalf-Of"] = identity.on_behalf_of
    prepared = requests.Request("POST", "http://v2.invalid/projects", headers=headers).prepare()
    for name, value in prepared.headers.items():
        raw = value.encode("latin-1")
        assert not http.client._is_illegal_header_value(raw)  # type: ignore[attr-defined]
        assert len(name) + len(raw) + 4 < HEADER_LINE_MAX_BYTES
    for part in (identity.principal.removesuffix(MACHINE_SUFFIX), identity.sub):
        assert is_safe_header_name(part)


def assert_promised_identity(identity: Identity, value: Any, username: Any) -> None:
    """What docs/architecture.md ("Who wrote it") promises for ``value`` and ``username``.

    ``username`` is what the user lookup gives for ``value``.
    """
    text = value.strip() if isinstance(value, str) else ""
    if text.endswith(MACHINE_SUFFIX):
        name = text.removesuffix(MACHINE_SUFFIX)
        assert identity == (
            Identity(text, name, None, name) if is_safe_header_name(name) else FALLBACK
        )
    elif text and PLATFORM_ID_PATTERN.fullmatch(text):
        if is_safe_header_name(username):
            assert (identity.principal, identity.sub, identity.on_behalf_of) == (username,) * 3
        else:
            assert identity == FALLBACK
    else:
        assert identity == FALLBACK


@pytest.fixture(scope="module")
def minter(heimdall_key: RSAPrivateKey) -> TokenMinter:
    return TokenMinter(heimdall_key, key_id="kid", jwks_url="http://127.0.0.1:9/jwks")


identity_values = (
    odd_texts
    | st.text(max_size=40).map(lambda name: name + MACHINE_SUFFIX)
    | st.from_regex(PLATFORM_ID_PATTERN, fullmatch=True)
    | json_values
    | msgpack_values
)


@given(
    value=identity_values,
    username=st.none() | odd_texts | st.text(max_size=300),
    email=st.none() | st.text(max_size=60) | odd_texts,
)
@settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
def test_any_lastmodifiedbyid_gives_a_sendable_identity(
    value: Any, username: Any, email: Any, minter: TokenMinter
) -> None:
    directory = ScriptedDirectory(username, email)
    if value == DEEP:
        value = decode_value(msgpack.packb({"v": DEEP}).replace(msgpack.packb(DEEP), DEEP_MSGPACK))[
            "v"
        ]
    try:
        with worker_stack():
            identity = directory.identity_for(value)
    finally:
        directory.close()
    assert_sendable(identity, minter)
    assert_promised_identity(identity, value, username)


# --- the record half ------------------------------------------------------------------

PROJECT_COLUMN_FIELDS = {
    source.real: v2_field
    for table in (PROJECT_TEXT_FIELDS, PROJECT_DATE_FIELDS, PROJECT_URL_FIELDS, PROJECT_BOOL_FIELDS)
    for v2_field, source in table.items()
} | {source.real: v2_field for v2_field, (source, _) in PROJECT_ENUM_FIELDS.items()}
NO_VALUE_TEXTS = {"", "nil"}


def soft_deleted(value: dict[str, Any]) -> bool:
    deleted_at = value.get("_sdc_deleted_at")
    if deleted_at == DEEP:
        deleted_at = []
    if isinstance(deleted_at, msgpack.Timestamp):
        with suppress(OverflowError, ValueError, OSError):
            deleted_at = deleted_at.to_datetime()
    marked = isinstance(deleted_at, datetime) or (
        isinstance(deleted_at, str) and bool(deleted_at.strip())
    )
    return marked or value.get("isdeleted") is True


def assert_defined(error: InvalidRecord, kinds: set[str]) -> None:
    """A defined dead letter: a known kind and a short message."""
    assert error.kind in kinds
    assert 0 < len(error.message) < MESSAGE_MAX_CHARS


def through_the_edge(kind: ObjectKind, key: str, data: bytes) -> dict[str, Any] | None:
    """decode + id checks: the record, or None for a defined InvalidRecord."""
    try:
        return checked_record(kind.reference_columns, check_key_id(key), decode_value(data))
    except InvalidRecord as error:
        assert_defined(error, {"invalid_record", "undecodable"})
        return None


@given(records(PROJECT_JSON, PROJECT_COLUMNS))
@settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
def test_any_project_record_ends_in_a_defined_outcome(
    generated: tuple[dict[str, Any], str],
) -> None:
    with worker_stack():
        check_project(*generated)


def check_project(value: dict[str, Any], encoding: str) -> None:
    try:
        data = encode(value, encoding)
    except (ValueError, TypeError, OverflowError):
        return  # not representable in that encoding: cannot be in the bucket
    record_ = through_the_edge(PROJECTS, f"salesforce-project__c.{SFID}", data)
    if record_ is None:
        return
    assert is_soft_delete(record_) is soft_deleted(value)
    try:
        fields = map_project(record_)
    except InvalidRecord as error:
        assert_defined(error, {"invalid_record"})
        return
    body = {
        **fields.body,
        "parent_uid": PARENT_UID,
        "public": fields.body.get("public", default_public(fields.body.get("stage"), None)),
    }
    validate_project(json.loads(json.dumps(body, allow_nan=False)))
    for column, v2_field in PROJECT_COLUMN_FIELDS.items():
        given_value = record_.get(column)
        if v2_field in body or given_value is None:
            continue
        if isinstance(given_value, str) and given_value.strip().casefold() in NO_VALUE_TEXTS:
            continue
        assert any(w.startswith(f"{v2_field} ") for w in fields.warnings), (column, given_value)
    assert all(len(warning) < MESSAGE_MAX_CHARS for warning in fields.warnings)
    json.dumps(list(fields.warnings))


@given(records(COMMITTEE_JSON, COMMITTEE_COLUMNS))
@settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
def test_any_committee_record_ends_in_a_defined_outcome(
    generated: tuple[dict[str, Any], str],
) -> None:
    with worker_stack():
        check_committee(*generated)


def check_committee(value: dict[str, Any], encoding: str) -> None:
    try:
        data = encode(value, encoding)
    except (ValueError, TypeError, OverflowError):
        return
    record_ = through_the_edge(COMMITTEES, f"platform-collaboration__c.{COMMITTEE_ID}", data)
    if record_ is None:
        return
    assert is_soft_delete(record_) is soft_deleted(value)
    try:
        fields = map_committee(record_)
    except InvalidRecord as error:
        assert_defined(error, {"invalid_record"})
        return
    validate_committee(json.loads(json.dumps({**fields.body, "project_uid": PARENT_UID})))
    assert all(len(warning) < MESSAGE_MAX_CHARS for warning in fields.warnings)


@given(st.text(max_size=60) | odd_texts | st.binary(max_size=30).map(lambda b: b.decode("latin-1")))
@settings(deadline=None, max_examples=EXAMPLES)
def test_any_key_is_checked_before_it_is_used(key_id: str) -> None:
    key = f"salesforce-project__c.{key_id}"
    try:
        checked = check_key_id(key)
    except InvalidRecord as error:
        assert_defined(error, {"invalid_record"})
        return
    assert checked == key_id
    from sync_core.keys import is_valid_kv_key

    assert is_valid_kv_key(key)
    assert is_valid_kv_key(f"project.sfid.{checked}")


def test_a_datetime_msgpack_timestamp_is_a_soft_delete() -> None:
    when = msgpack.Timestamp.from_datetime(datetime(2025, 1, 1, tzinfo=UTC))
    assert is_soft_delete(decode_value(msgpack.packb({"_sdc_deleted_at": when})))
