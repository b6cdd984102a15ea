"""The committee member mapping (``map_member``, ``complete_member``): pure, no servers.

Tables for each rule of the reference, then properties: whatever V1 holds, the
body either passes the sandbox's copy of the V2 member contract or the record
is an ``InvalidRecord``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.validation import is_email, validate_member
from tasks.errors import InvalidRecord
from tasks.mapping.members import (
    MEMBER_APPOINTED_BY,
    MEMBER_ROLES,
    MEMBER_VOTING_STATUSES,
    MemberLookups,
    complete_member,
    map_member,
    normalized_email,
)
from tasks.mapping.merge import merge_over
from tests.v1_examples import MEMBER_JSON, record


def member(**changes: Any) -> dict[str, Any]:
    return record(MEMBER_JSON, **changes)


def test_the_reference_member_maps_to_the_v2_body() -> None:
    fields = map_member(member())
    assert fields.sfid == "51fde723-67df-4e0e-91c6-936d01d59559"
    assert fields.committee_sfid == "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a"
    assert (fields.contact_id, fields.organization_id) == (
        "0031000001AbCdeAAB",
        "0014100000Te2ovAAB",
    )
    assert fields.body == {
        "email": "jane@example.com",
        "job_title": "CTO",
        "appointed_by": "Membership Entitlement",
        "status": "Active",
        "role": {"name": "Chair", "start_date": "2024-01-01"},
        "voting": {"status": "Voting Rep"},
        "organization": {"id": "0014100000Te2ovAAB"},
    }
    assert fields.warnings == ()
    body, warnings = complete_member(
        fields, MemberLookups("jdoe", "Jane", "Doe", organization_name="Example Corp")
    )
    assert body == {
        **fields.body,
        "username": "jdoe",
        "first_name": "Jane",
        "last_name": "Doe",
        "organization": {"id": "0014100000Te2ovAAB", "name": "Example Corp"},
    }
    assert warnings == ()
    assert validate_member(body) == body


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"role__c": "Board Chair"}, "role", {"name": "None", "start_date": "2024-01-01"}),
        ({"role__c": " vice  chair "}, "role", {"name": "Vice Chair", "start_date": "2024-01-01"}),
        ({"role__c": "Technical Lead", "start_date__c": None}, "role", {"name": "Technical Lead"}),
        ({"role__c": None, "start_date__c": None}, "role", None),
        ({"end_date__c": "2025-12-31T18:01:25"}, "role", {
            "name": "Chair", "start_date": "2024-01-01", "end_date": "2025-12-31"}),
        ({"start_date__c": "2024-02-30T00:00:00Z"}, "role", {"name": "Chair"}),
        ({"voting_status__c": "Voter"}, "voting", {"status": "None"}),
        ({"voting_status__c": "emeritus"}, "voting", {"status": "Emeritus"}),
        ({"voting_status__c": None, "voting_start_date__c": "2023-05-01T00:00:00+00:00"},
         "voting", {"start_date": "2023-05-01"}),
        ({"voting_status__c": None}, "voting", None),
        ({"appointed_by__c": "The Board"}, "appointed_by", "None"),
        ({"appointed_by__c": "vote of governing board"}, "appointed_by", "Vote of Governing Board"),
        ({"appointed_by__c": None}, "appointed_by", None),
        ({"status__c": "Inactive"}, "status", "Inactive"),
        ({"status__c": None}, "status", "Active"),
        ({"status__c": "Retired"}, "status", "Active"),
        ({"title": "x" * 250}, "job_title", "x" * 200),
        ({"title": 7}, "job_title", None),
        ({"account__c": None}, "organization", None),
        ({"account__c": "  "}, "organization", None),
        ({"account__c": "not an id!"}, "organization", None),
        ({"contactemail__c": "  Jane@Example.com "}, "email", "Jane@Example.com"),
    ],
)  # fmt: skip
def test_member_field_rules(changes: dict[str, Any], field: str, expected: Any) -> None:
    body = map_member(member(**changes)).body
    assert body.get(field) == expected
    assert validate_member(body) == body


@pytest.mark.parametrize(
    "changes",
    [
        {"contactemail__c": None},
        {"contactemail__c": ""},
        {"contactemail__c": "   "},
        {"contactemail__c": "jane"},
        {"contactemail__c": "jane@example"},
        {"contactemail__c": "jane doe@example.com"},
        {"contactemail__c": 42},
        {"sfid": None},
        {"collaboration_name__c": None},
        {"collaboration_name__c": "not an id!"},
    ],
)
def test_records_v2_cannot_hold_are_invalid(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecord) as caught:
        map_member(member(**changes))
    assert caught.value.kind == "invalid_record"


def test_every_dropped_or_changed_value_warns() -> None:
    fields = map_member(member(role__c="Board Chair", start_date__c="soon", status__c="Retired"))
    assert len(fields.warnings) == 3
    assert any(w.startswith("role.name (from role__c)") for w in fields.warnings)
    assert any(w.startswith("role.start_date (from start_date__c)") for w in fields.warnings)


def test_lookups_are_trimmed_truncated_and_blank_ones_left_out() -> None:
    fields = map_member(member())
    body, warnings = complete_member(
        fields, MemberLookups(" jdoe ", "", "D" * 150, organization_name="O" * 300)
    )
    assert body["username"] == "jdoe"
    assert "first_name" not in body
    assert body["last_name"] == "D" * 100
    assert body["organization"]["name"] == "O" * 200
    assert len(warnings) == 2
    assert "organization" not in fields.body or "name" not in fields.body["organization"]


def test_no_organization_id_means_no_organization_name() -> None:
    fields = map_member(member(account__c=None))
    body, _ = complete_member(fields, MemberLookups(organization_name="Example Corp"))
    assert "organization" not in body


def test_an_update_keeps_v2_only_fields_inside_nested_objects() -> None:
    current = {
        "uid": "u",
        "email": "jane@example.com",
        "organization": {"id": "old", "name": "Example", "website": "https://example.com"},
        "role": {"name": "Lead", "end_date": "2030-01-01"},
        "linkedin_profile": "https://linkedin.com/in/jane",
    }
    merged = merge_over(
        current, {"organization": {"id": "new"}, "role": {"name": "Chair"}}, frozenset({"uid"})
    )
    assert merged == {
        "email": "jane@example.com",
        "organization": {"id": "new", "name": "Example", "website": "https://example.com"},
        "role": {"name": "Chair", "end_date": "2030-01-01"},
        "linkedin_profile": "https://linkedin.com/in/jane",
    }


def test_normalized_email_is_what_uniqueness_compares() -> None:
    assert normalized_email("  Jane@Example.COM ") == "jane@example.com"


# --- properties ----------------------------------------------------------------------

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=250),
    st.sampled_from(sorted(MEMBER_ROLES | MEMBER_VOTING_STATUSES | MEMBER_APPOINTED_BY)),
    st.sampled_from(["2024-01-01T00:00:00+00:00", "2025-11-27T18:01:25", "2024-13-01", ""]),
)
MEMBER_COLUMNS = (
    "contactemail__c",
    "account__c",
    "title",
    "role__c",
    "start_date__c",
    "end_date__c",
    "voting_status__c",
    "voting_start_date__c",
    "voting_end_date__c",
    "appointed_by__c",
    "status__c",
)
NAMES = st.one_of(st.none(), st.text(max_size=250))


@settings(max_examples=300, deadline=None)
@given(
    columns=st.fixed_dictionaries(
        {"contactemail__c": st.one_of(st.emails(), ANY_VALUE)},
        optional=dict.fromkeys(MEMBER_COLUMNS[1:], ANY_VALUE),
    ),
    lookups=st.builds(MemberLookups, NAMES, NAMES, NAMES, NAMES),
)
def test_any_record_gives_a_valid_body_or_an_invalid_record(
    columns: dict[str, Any], lookups: MemberLookups
) -> None:
    base = {k: v for k, v in member().items() if k not in MEMBER_COLUMNS}
    try:
        fields = map_member({**base, **columns})
    except InvalidRecord:
        # Only a missing, blank or malformed email makes the record invalid.
        email = columns["contactemail__c"]
        assert not (isinstance(email, str) and is_email(email.strip()))
        return
    body, _ = complete_member(fields, lookups)
    assert validate_member(body) == body
    assert body["status"] in ("Active", "Inactive")


@settings(max_examples=200, deadline=None)
@given(email=st.emails())
def test_every_email_address_is_kept_trimmed(email: str) -> None:
    body = map_member(member(contactemail__c=f" {email} ")).body
    assert body["email"] == email
