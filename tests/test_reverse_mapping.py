"""V2 -> V1, pure: the indexer event envelope, the V1 bodies and their fingerprint.

Property tests: any input gives a value or a clear ``EventRejected`` (never
an exception), bodies hold only keys the V1 API accepts, and the fingerprint
changes exactly when what V1 would store changes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.v1_api import validate_v1_committee_body, validate_v1_member_body
from sync_core.indexer_events import EventRejected, V2Action, V2Event, V2ObjectType, parse_v2_event
from sync_core.v1_bodies import (
    V1_COMBINED_TECHNICAL_CATEGORY,
    V1_COMMITTEE_KEYS,
    V1_MEMBER_KEYS,
    committee_fingerprint,
    event_fingerprint,
    member_fingerprint,
    v1_category,
    v1_committee_body,
    v1_member_body,
)

EXAMPLES = 200
COMMITTEE_UID = "0d9bfa0e-3f43-4a1b-9a59-1f2f6f0a9c11"
PROJECT_UID = "4c3b8e9f-0a1b-4c3d-8e5f-5b3c1f0e1d2a"
CONTACT_ID = "0031000001AbCdeAAB"
ACCOUNT_ID = "0014100000Te2ovAAB"
# The V2 committee categories (committee service v0.4.26 and later, v2-contract.md).
V2_CATEGORIES = (
    "Ambassador",
    "Board",
    "Code of Conduct",
    "Committers",
    "Expert Group",
    "Finance Committee",
    "Government Advisory Council",
    "Legal Committee",
    "Maintainers",
    "Marketing Committee/Sub Committee",
    "Marketing Mailing List",
    "Marketing Oversight Committee/Marketing Advisory Committee",
    "Newsletter",
    "Other",
    "Product Security",
    "Special Interest Group",
    "Technical Advisory Committee",
    "Technical Mailing List",
    "Technical Oversight Committee",
    "Technical Steering Committee",
    "Working Group",
)

COMMITTEE_DATA: dict[str, Any] = {
    "uid": COMMITTEE_UID,
    "project_uid": PROJECT_UID,
    "project_slug": "tlf",
    "name": "Governing Board",
    "category": "Board",
    "description": "The board.",
    "website": "https://lists.example.org/g/board",
    "mailing_list": "board@lists.example.org",
    "chat_channel": "#board",
    "enable_voting": True,
    "sso_group_enabled": False,
    "sso_group_name": "tlf-governing-board",
    "requires_review": False,
    "public": True,
    "join_mode": "invite_only",
    "display_name": "Governing Board",
}
MEMBER_DATA: dict[str, Any] = {
    "uid": "51fde723-67df-4e0e-91c6-936d01d59559",
    "committee_uid": COMMITTEE_UID,
    "project_uid": PROJECT_UID,
    "username": "jdoe",
    "email": "jane@example.com",
    "first_name": "Jane",
    "last_name": "Doe",
    "job_title": "CTO",
    "role": {"name": "Chair", "start_date": "2024-01-01", "end_date": None},
    "appointed_by": "Membership Entitlement",
    "status": "Active",
    "voting": {"status": "Voting Rep", "start_date": "2024-02-01T00:00:00Z", "end_date": ""},
    "organization": {"id": ACCOUNT_ID, "name": "Example", "website": "https://example.com"},
}


def envelope(
    object_type: str = "committee",
    action: str = "updated",
    object_id: str = COMMITTEE_UID,
    data: Any = None,
    **changes: Any,
) -> dict[str, Any]:
    """An event as the indexer publishes it."""
    payload = dict(COMMITTEE_DATA if data is None else data)
    event: dict[str, Any] = {
        "document_id": f"{object_type}:{object_id}",
        "object_id": object_id,
        "object_type": object_type,
        "action": action,
        "timestamp": "2026-12-07T00:10:00.123Z",
        "body": {
            "object_ref": f"{object_type}:{object_id}",
            "object_type": object_type,
            "object_id": object_id,
            "parent_refs": [f"project:{PROJECT_UID}"],
            f"{action}_by": ["jdoe"],
            f"{action}_by_principals": ["jdoe"],
            f"{action}_by_emails": ["jdoe@example.org"],
            "data": payload,
        },
    }
    event.update(changes)
    return event


# --- the envelope ----------------------------------------------------------------


def test_a_committee_update_parses_with_its_principals_and_data() -> None:
    parsed = parse_v2_event(json.dumps(envelope()).encode(), "lfx.committee.updated")
    assert isinstance(parsed, V2Event)
    assert parsed.object_type is V2ObjectType.COMMITTEE
    assert parsed.action is V2Action.UPDATED
    assert parsed.object_id == COMMITTEE_UID
    assert parsed.principals == ("jdoe",)
    assert parsed.parent_refs == (f"project:{PROJECT_UID}",)
    assert parsed.data["name"] == "Governing Board"
    assert parsed.timestamp.tzinfo is not None
    assert parsed.subject == "lfx.committee.updated"


def test_a_member_delete_without_data_parses() -> None:
    uid = MEMBER_DATA["uid"]
    raw = envelope("committee_member", "deleted", uid, data={})
    del raw["body"]["data"]
    parsed = parse_v2_event(raw, "lfx.committee_member.deleted")
    assert isinstance(parsed, V2Event)
    assert (parsed.action, parsed.data, parsed.object_id) == (V2Action.DELETED, {}, uid)


@pytest.mark.parametrize(
    ("raw", "subject", "kind"),
    [
        (b"", None, "undecodable"),
        (b"\xff\xfe", None, "undecodable"),
        (b"{not json", None, "undecodable"),
        (b"[1, 2]", None, "not_an_object"),
        (envelope(object_id=""), None, "missing_field"),
        (envelope(object_type="project"), None, "bad_field"),
        (envelope(action="merged"), None, "bad_field"),
        (envelope(document_id="committee:other"), None, "bad_field"),
        (envelope(timestamp="yesterday"), None, "bad_field"),
        (envelope(timestamp="2026-12-07T00:10:00"), None, "bad_field"),  # no zone
        (envelope(body=None), None, "missing_field"),
        (envelope(data={}), None, "missing_field"),  # an update without its object
        (envelope(data={"uid": "another"}), None, "bad_field"),
        (envelope(), "lfx.committee.created", "subject_mismatch"),
        (b"[" * 100_000, None, "undecodable"),
    ],
)
def test_a_malformed_event_is_a_clear_error_value(raw: Any, subject: str | None, kind: str) -> None:
    parsed = parse_v2_event(raw, subject)
    assert isinstance(parsed, EventRejected)
    assert parsed.kind == kind
    assert str(parsed).startswith(f"{kind}: ")


def test_principals_that_are_not_strings_are_refused() -> None:
    raw = envelope()
    raw["body"]["updated_by_principals"] = [{"principal": "jdoe"}]
    parsed = parse_v2_event(raw)
    assert isinstance(parsed, EventRejected)
    assert "principals" in parsed.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
ENVELOPE_FIELDS = ("document_id", "object_id", "object_type", "action", "timestamp", "body")


@settings(max_examples=EXAMPLES, deadline=None)
@given(payload=st.binary(max_size=200) | st.text(max_size=200) | json_values)
def test_any_payload_gives_an_event_or_a_rejection(payload: Any) -> None:
    parsed = parse_v2_event(payload)
    assert isinstance(parsed, V2Event | EventRejected)


@settings(max_examples=EXAMPLES, deadline=None)
@given(field=st.sampled_from(ENVELOPE_FIELDS), value=json_values)
def test_any_value_in_any_envelope_field_never_raises(field: str, value: Any) -> None:
    raw = envelope()
    raw[field] = value
    parsed = parse_v2_event(json.dumps(raw))
    assert isinstance(parsed, V2Event | EventRejected)
    if isinstance(parsed, V2Event):
        assert parsed.object_id
        assert parsed.document_id == f"{parsed.object_type}:{parsed.object_id}"


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    object_type=st.sampled_from(list(V2ObjectType)),
    action=st.sampled_from(list(V2Action)),
    uid=st.uuids().map(str),
    principals=st.lists(st.text(min_size=1, max_size=20), max_size=3),
)
def test_every_well_formed_event_parses_to_what_it_says(
    object_type: V2ObjectType, action: V2Action, uid: str, principals: list[str]
) -> None:
    data = {} if action is V2Action.DELETED else {"uid": uid, "name": "x"}
    raw = envelope(object_type.value, action.value, uid, data=data)
    raw["body"][f"{action.value}_by_principals"] = principals
    parsed = parse_v2_event(json.dumps(raw).encode(), f"lfx.{object_type}.{action}")
    assert isinstance(parsed, V2Event)
    assert (parsed.object_type, parsed.action, parsed.object_id) == (object_type, action, uid)
    assert parsed.principals == tuple(principals)


# --- committee bodies ------------------------------------------------------------


def test_a_committee_becomes_the_pascal_case_body_of_the_reference() -> None:
    translated = v1_committee_body(COMMITTEE_DATA)
    assert translated.body == {
        "Name": "Governing Board",
        "Category": "Board",
        "Description": "The board.",
        "CommitteeWebsite": "https://lists.example.org/g/board",
        "MailingList": "board@lists.example.org",
        "ChatChannel": "#board",
        "JoinMode": "invite_only",
        "SSOGroupName": "tlf-governing-board",
    }
    assert translated.warnings == ()
    assert translated.missing_for_create == ()


@pytest.mark.parametrize(
    "category", ["Technical Oversight Committee", "Technical Advisory Committee"]
)
def test_toc_and_tac_become_v1s_combined_category(category: str) -> None:
    assert v1_category(category) == V1_COMBINED_TECHNICAL_CATEGORY
    body = v1_committee_body({**COMMITTEE_DATA, "category": category}).body
    assert body["Category"] == V1_COMBINED_TECHNICAL_CATEGORY


@pytest.mark.parametrize(
    "category",
    [
        c
        for c in V2_CATEGORIES
        if c.removeprefix("Technical ").split()[0] not in ("Oversight", "Advisory")
    ],
)
def test_every_other_v2_category_is_the_same_words_in_v1(category: str) -> None:
    assert v1_category(category) == category


def test_an_unknown_category_is_left_out_with_a_warning() -> None:
    translated = v1_committee_body({**COMMITTEE_DATA, "category": "Book Club"})
    assert "Category" not in translated.body
    assert translated.warnings == ("category: 'Book Club' is not a V1 category; left out",)


def test_a_committee_without_a_name_cannot_be_created() -> None:
    assert v1_committee_body({"name": "  ", "category": "Board"}).missing_for_create == ("Name",)


# --- member bodies ----------------------------------------------------------------


def test_a_member_becomes_the_flat_body_of_the_reference() -> None:
    translated = v1_member_body(MEMBER_DATA, CONTACT_ID)
    assert translated.body == {
        "Email": "jane@example.com",
        "MemberID": CONTACT_ID,
        "FirstName": "Jane",
        "LastName": "Doe",
        "Title": "CTO",
        "Role": "Chair",
        "RoleStartDate": "2024-01-01",
        "Status": "Active",
        "AppointedBy": "Membership Entitlement",
        "VotingStatus": "Voting Rep",
        "VotingStartDate": "2024-02-01",
        "OrganizationID": ACCOUNT_ID,
    }
    assert translated.warnings == ()


def test_member_values_v1_cannot_take_are_left_out_with_a_warning() -> None:
    data = {
        **MEMBER_DATA,
        "role": "Chair",  # a string, as the replaced service wrongly expected
        "voting": {"status": "Voting Rep", "start_date": "soon"},
        "organization": {"id": "org-1", "name": "Example"},
    }
    translated = v1_member_body(data, contact_id="jdoe")
    assert not {"Role", "VotingStartDate", "OrganizationID", "MemberID"} & set(translated.body)
    assert [w.split(":")[0] for w in translated.warnings] == [
        "role",
        "voting.start_date",
        "organization.id",
        "contact_id",
    ]


def test_a_member_without_an_email_cannot_be_created() -> None:
    assert v1_member_body({"first_name": "Jane"}).missing_for_create == ("Email",)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.dictionaries(st.sampled_from([*MEMBER_DATA, "x"]), json_values, max_size=8))
def test_any_member_data_gives_a_body_of_v1_keys_and_text(data: dict[str, Any]) -> None:
    translated = v1_member_body(data)
    assert set(translated.body) <= V1_MEMBER_KEYS
    assert all(isinstance(v, str) and v == v.strip() and v for v in translated.body.values())


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.dictionaries(st.sampled_from([*COMMITTEE_DATA, "x"]), json_values, max_size=8))
def test_any_committee_data_gives_a_body_of_v1_keys_and_text(data: dict[str, Any]) -> None:
    translated = v1_committee_body(data)
    assert set(translated.body) <= V1_COMMITTEE_KEYS
    assert all(isinstance(v, str) and v for v in translated.body.values())


# --- fingerprints -------------------------------------------------------------------

V1_IRRELEVANT_COMMITTEE_FIELDS = (
    "uid",
    "enable_voting",
    "public",
    "display_name",
    "requires_review",
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(field=st.sampled_from(V1_IRRELEVANT_COMMITTEE_FIELDS), value=json_values)
def test_a_change_v1_does_not_store_keeps_the_fingerprint(field: str, value: Any) -> None:
    assert committee_fingerprint({**COMMITTEE_DATA, field: value}) == committee_fingerprint(
        COMMITTEE_DATA
    )


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    field=st.sampled_from(["name", "description", "website", "mailing_list", "chat_channel"]),
    text=st.text(min_size=1, max_size=30).filter(lambda t: t.strip()),
)
def test_a_change_v1_stores_changes_the_fingerprint(field: str, text: str) -> None:
    changed = {**COMMITTEE_DATA, field: text}
    same = " ".join(str(COMMITTEE_DATA[field]).split()) == " ".join(text.split())
    assert (committee_fingerprint(changed) == committee_fingerprint(COMMITTEE_DATA)) is same


def test_toc_and_tac_have_one_fingerprint_as_v1_has_one_category() -> None:
    toc = {**COMMITTEE_DATA, "category": "Technical Oversight Committee"}
    tac = {**COMMITTEE_DATA, "category": "Technical Advisory Committee"}
    assert committee_fingerprint(toc) == committee_fingerprint(tac)


def test_the_member_fingerprint_ignores_key_order_email_case_and_whitespace() -> None:
    shuffled = dict(reversed(list(MEMBER_DATA.items())))
    shuffled["email"] = " JANE@Example.com "
    shuffled["job_title"] = "CTO "
    assert member_fingerprint(shuffled) == member_fingerprint(MEMBER_DATA)


def test_a_reverted_role_is_a_different_fingerprint_from_the_edit() -> None:
    edited = {**MEMBER_DATA, "role": {**MEMBER_DATA["role"], "name": "Vice Chair"}}
    assert member_fingerprint(edited) != member_fingerprint(MEMBER_DATA)
    assert member_fingerprint({**edited, "role": MEMBER_DATA["role"]}) == member_fingerprint(
        MEMBER_DATA
    )


# --- the bodies against the V1 API fake's contract -------------------------------------

plausible_texts = st.one_of(
    st.sampled_from(["", " ", "nil", "a@b.org", " Board ", "2024-01-01", "not a date", "#c"]),
    st.text(max_size=15),
)
plausible_values = st.one_of(st.none(), st.booleans(), st.integers(), plausible_texts)
plausible_dates = st.one_of(
    st.none(),
    st.sampled_from(["2024-01-01", "2024-02-30", "2024-01-01T10:00:00Z", "", "soon"]),
    st.dates().map(str),
)
committee_data = st.fixed_dictionaries(
    {},
    optional={
        **{field: plausible_values for field in COMMITTEE_DATA},
        "category": st.one_of(st.sampled_from(V2_CATEGORIES), plausible_values),
    },
)
member_data = st.fixed_dictionaries(
    {},
    optional={
        **{field: plausible_values for field in MEMBER_DATA},
        "role": st.one_of(
            plausible_values,
            st.fixed_dictionaries(
                {
                    "name": plausible_values,
                    "start_date": plausible_dates,
                    "end_date": plausible_dates,
                }
            ),
        ),
        "voting": st.fixed_dictionaries(
            {"status": plausible_values, "start_date": plausible_dates, "end_date": plausible_dates}
        ),
        "organization": st.fixed_dictionaries(
            {"id": st.one_of(st.just(ACCOUNT_ID), plausible_values)}
        ),
    },
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=committee_data)
def test_every_committee_body_with_its_required_keys_is_one_v1_accepts(
    data: dict[str, Any],
) -> None:
    translated = v1_committee_body(data)
    validate_v1_committee_body(translated.body, creating=False)
    if not translated.missing_for_create:
        validate_v1_committee_body(translated.body, creating=True)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=member_data, contact=st.one_of(st.none(), st.just(CONTACT_ID), st.text(max_size=5)))
def test_every_member_body_with_its_required_keys_is_one_v1_accepts(
    data: dict[str, Any], contact: str | None
) -> None:
    translated = v1_member_body(data, contact)
    validate_v1_member_body(translated.body, creating=False)
    if not translated.missing_for_create:
        validate_v1_member_body(translated.body, creating=True)


def test_an_address_that_is_not_one_is_left_out_with_a_warning() -> None:
    translated = v1_committee_body({**COMMITTEE_DATA, "mailing_list": "Governing Board"})
    assert "MailingList" not in translated.body
    assert translated.warnings[0].startswith("mailing_list: ")
    assert v1_member_body({"email": "jane"}).missing_for_create == ("Email",)


def test_an_events_fingerprint_is_its_objects_and_a_delete_has_none() -> None:
    committee = parse_v2_event(envelope())
    member = parse_v2_event(
        envelope("committee_member", "created", MEMBER_DATA["uid"], data=MEMBER_DATA)
    )
    deleted = parse_v2_event(envelope(action="deleted", data={}))
    assert isinstance(committee, V2Event)
    assert isinstance(member, V2Event)
    assert isinstance(deleted, V2Event)
    assert event_fingerprint(committee) == committee_fingerprint(COMMITTEE_DATA)
    assert event_fingerprint(member) == member_fingerprint(MEMBER_DATA)
    assert event_fingerprint(member) != committee_fingerprint(MEMBER_DATA)
    assert event_fingerprint(deleted) is None
