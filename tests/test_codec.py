"""The KV codec: key parsing, JSON/msgpack decoding, empty values, soft deletes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_core.keys import ObjectType, parse_key
from tasks.errors import InvalidRecord, PermanentError
from tasks.mapping.codec import decode_value, is_empty, is_soft_delete
from tests.v1_examples import (
    COMMITTEE_JSON,
    COMMITTEE_KEY,
    MEMBER_JSON,
    MEMBER_KEY,
    PROJECT_JSON,
    PROJECT_KEY,
)

# --- keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (PROJECT_KEY, (ObjectType.PROJECT, "a0941000002wBz9AAE")),
        (COMMITTEE_KEY, (ObjectType.COMMITTEE, "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a")),
        (MEMBER_KEY, (ObjectType.COMMITTEE_MEMBER, "51fde723-67df-4e0e-91c6-936d01d59559")),
        # everything after the first "." is the id
        ("salesforce-project__c.a09.x.y", (ObjectType.PROJECT, "a09.x.y")),
        # other tables of the bucket are not ours
        ("salesforce-merged_user.0032M00002XyZabQAB", (None, "0032M00002XyZabQAB")),
        ("platform-b2b_org.abc", (None, "abc")),
        ("dynamodb-project_metadata.1234", (None, "1234")),
        # a prefix must match exactly, case included
        ("salesforce-project__cx.a09", (None, "a09")),
        ("Salesforce-Project__c.a09", (None, "a09")),
        ("salesforce-project.a09", (None, "a09")),
        # no id at all
        ("salesforce-project__c", (None, "")),
        ("salesforce-project__c.", (None, "")),
        ("", (None, "")),
    ],
    ids=lambda value: repr(value) if isinstance(value, str) else None,
)
def test_parse_key(key: str, expected: tuple[ObjectType | None, str]) -> None:
    assert parse_key(key) == expected


def test_object_types_are_str_values() -> None:
    assert [str(member) for member in ObjectType] == ["project", "committee", "committee_member"]
    assert ObjectType("committee") is ObjectType.COMMITTEE


# --- empty values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "empty"),
    [
        (b"", True),
        (b" ", True),
        (b"\n\t\r ", True),
        (b"{}", False),
        (b"\x80", False),  # a msgpack empty map
        (b"\x00", False),
        (b" x ", False),
    ],
)
def test_is_empty(data: bytes, empty: bool) -> None:
    assert is_empty(data) is empty


# --- decoding ----------------------------------------------------------------------


@pytest.mark.parametrize("text", [PROJECT_JSON, COMMITTEE_JSON, MEMBER_JSON])
def test_example_records_decode_from_json_and_msgpack_alike(text: str) -> None:
    expected = json.loads(text)
    from_json = decode_value(text.encode())
    from_msgpack = decode_value(msgpack.packb(expected))
    assert from_json == expected
    assert from_msgpack == expected
    assert from_json["sfid"] == expected["sfid"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"sfid": "a09", "isdeleted": false, "x": null}',
         {"sfid": "a09", "isdeleted": False, "x": None}),
        (b'  {"a": 1}\n', {"a": 1}),
        (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),  # UTF-8 byte-order mark
        ('{"name": "Zürich"}'.encode("utf-16"), {"name": "Zürich"}),
        (b"{}", {}),
        (msgpack.packb({"a": 1}, use_bin_type=False), {"a": 1}),  # old "raw" strings
        (msgpack.packb({"name": "Zürich", "n": [1, 2.5]}), {"name": "Zürich", "n": [1, 2.5]}),
        (b"\x80", {}),  # msgpack fixmap of size 0
    ],
    ids=["json", "json-whitespace", "json-bom", "json-utf16", "json-empty-map", "msgpack-raw",
         "msgpack-bin-type", "msgpack-empty-map"],
)  # fmt: skip
def test_decode_value_accepts(data: bytes, expected: dict[str, Any]) -> None:
    assert decode_value(data) == expected


def test_msgpack_timestamps_become_utc_datetimes() -> None:
    moment = datetime(2025, 11, 27, 18, 1, 25, tzinfo=UTC)
    data = msgpack.packb({"lastmodifieddate": moment}, datetime=True)
    assert decode_value(data) == {"lastmodifieddate": moment}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty value"),
        (b"   ", "empty value"),
        (b"garbage", "neither JSON"),
        (b'{"sfid": "a09"', "neither JSON"),  # truncated JSON
        (msgpack.packb({"sfid": "a09"})[:-2], "neither JSON"),  # truncated msgpack
        (b"\xc1", "neither JSON"),  # a byte msgpack never uses
        (b"\x81\xa1a\xc4\x01\xff\xff", "neither JSON"),  # trailing bytes after a msgpack map
        (b"\xa2\xff\xfe", "neither JSON"),  # msgpack str with invalid UTF-8
        (b"[" * 100_000, "neither JSON"),  # nesting beyond the parsers' limits
        (b"[1, 2]", "JSON but is a list"),
        (b"42", "JSON but is a int"),
        (b'"a string"', "JSON but is a str"),
        (b"null", "JSON but is a NoneType"),
        (msgpack.packb([1, 2]), "msgpack but is a list"),
        (msgpack.packb("text"), "msgpack but is a str"),
        (msgpack.packb({b"sfid": "a09"}), "non-string keys, e.g. b'sfid'"),
        (msgpack.packb({"sfid": "a09", b"name": "x"}), "non-string keys, e.g. b'name'"),
        (msgpack.packb({1: "x"}), "int is not allowed for map key"),
    ],
    ids=["empty", "blank", "garbage", "truncated-json", "truncated-msgpack", "never-used-byte",
         "msgpack-extra-data", "msgpack-bad-utf8", "deep-nesting", "json-list", "json-number",
         "json-string", "json-null", "msgpack-list", "msgpack-string", "msgpack-bytes-keys",
         "msgpack-mixed-keys", "msgpack-int-keys"],
)  # fmt: skip
def test_decode_value_refuses_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord) as raised:
        decode_value(data)
    assert raised.value.kind == "undecodable"
    assert reason in raised.value.message
    assert isinstance(raised.value, PermanentError)  # dead-lettered, never retried


def test_an_undecodable_reason_names_both_decoders_on_one_short_line() -> None:
    with pytest.raises(InvalidRecord) as raised:
        decode_value(b"\x00" + b"x" * 10_000)
    message = raised.value.message
    assert message.startswith("neither JSON (")
    assert ") nor msgpack (" in message
    assert "\n" not in message
    assert len(message) < 500


# str keys, JSON-representable values: what the loaders write
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
records = st.dictionaries(st.text(), json_values, max_size=8)


@given(records)
@settings(deadline=None)
def test_any_record_round_trips_through_json_and_msgpack(record: dict[str, Any]) -> None:
    assert decode_value(json.dumps(record).encode()) == record
    assert decode_value(msgpack.packb(record)) == record


@given(st.binary(max_size=200))
@settings(deadline=None, max_examples=300)
def test_decode_value_gives_a_str_map_or_invalid_record_for_any_bytes(data: bytes) -> None:
    try:
        decoded = decode_value(data)
    except InvalidRecord as error:
        refused_as = error.kind
    else:
        refused_as = "nothing"
        assert isinstance(decoded, dict)
        assert all(isinstance(key, str) for key in decoded)
    assert refused_as in {"undecodable", "nothing"}


# --- soft deletes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "deleted"),
    [
        ({}, False),  # the example project: isdeleted false, no _sdc_deleted_at
        ({"_sdc_deleted_at": "2025-11-27T18:01:25"}, True),
        ({"_sdc_deleted_at": "2025-11-27T18:01:25+00:00", "isdeleted": False}, True),
        ({"_sdc_deleted_at": None}, False),
        ({"_sdc_deleted_at": ""}, False),
        ({"isdeleted": True}, True),
        ({"isdeleted": None}, False),
        ({"isdeleted": "true"}, False),  # V1 booleans are real booleans
        ({"isdeleted": 1}, False),
    ],
)
def test_is_soft_delete(changes: dict[str, Any], deleted: bool) -> None:
    record = {**json.loads(PROJECT_JSON), **changes}
    assert is_soft_delete(record) is deleted


def test_a_record_without_delete_markers_is_not_deleted() -> None:
    assert is_soft_delete({"sfid": "a09"}) is False
