"""The second release's columns in the pure mapping (issue 23): today's V2 enums,
the added project and committee fields, the settings and their comparison.

Each column of ``v1-records.md`` "More columns the V2 objects need" has a test
here; property tests throw hostile values at the new columns and check that
the bodies still meet the fakes' rules (which restate ``v2-contract.md``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.user_objects import rewrite_users
from sandbox.validation import (
    COMMITTEE_SETTINGS_RULES,
    PROJECT_SETTINGS_RULES,
    validate_body,
    validate_committee,
    validate_project,
)
from tasks.errors import InvalidRecord
from tasks.mapping.committees import map_committee, split_technical_category
from tasks.mapping.merge import merge_over
from tasks.mapping.project_settings import (
    StaffMember,
    complete_settings,
    map_project_settings,
    same_user,
)
from tasks.mapping.projects import map_project
from tasks.mapping.settings_merge import planned_settings, settings_body
from tests.v1_examples import committee, full_committee, full_project, project

PARENT_UID = "5b3c1f0e-1d2a-4c3b-8e9f-0a1b2c3d4e5f"
EXAMPLES = 200


def warned(warnings: tuple[str, ...], v2_field: str) -> bool:
    return any(warning.startswith(f"{v2_field} ") for warning in warnings)


# --- committee categories of today ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Technical Advisory Council", "Technical Advisory Committee"),
        ("CNCF TAC", "Technical Advisory Committee"),
        ("tac-members", "Technical Advisory Committee"),
        ("Technical Oversight Committee", "Technical Oversight Committee"),
        ("TOC", "Technical Oversight Committee"),
        ("Contact list", "Technical Oversight Committee"),  # "tac" inside a word is no TAC
    ],
)
def test_the_combined_toc_tac_value_is_split_by_the_name(name: str, expected: str) -> None:
    fields = map_committee(
        committee(
            mailing_list__c=name,
            type__c="Technical Oversight Committee/Technical Advisory Committee",
        )
    )
    assert fields.body["category"] == expected
    assert warned(fields.warnings, "category")
    validate_committee({**fields.body, "project_uid": PARENT_UID})


@pytest.mark.parametrize(
    "category", ["Technical Oversight Committee", "Technical Advisory Committee", "Newsletter"]
)
def test_todays_committee_categories_pass_unchanged(category: str) -> None:
    fields = map_committee(committee(type__c=category))
    assert fields.body["category"] == category
    assert not warned(fields.warnings, "category")


def test_split_technical_category_is_toc_unless_advisory() -> None:
    assert split_technical_category("Advisory Board") == "Technical Advisory Committee"
    assert split_technical_category("Steering") == "Technical Oversight Committee"


# --- project base fields --------------------------------------------------------------


def test_every_new_project_column_reaches_its_v2_field() -> None:
    fields = map_project(full_project(parent_entity_relationship__c="a0941000002wLEGALX"))
    body = fields.body
    assert body["category"] == "Graduated"  # admin_category__c
    assert body["funding"] == "Funded"  # funding__c
    assert body["funding_model"] == ["Membership", "Alternate Funding"]  # model__c
    assert body["charter_url"] == "https://example.org/charter.pdf"  # charterurl__c
    assert body["autojoin_enabled"] is True  # auto_join_enabled__c
    assert body["entity_dissolution_date"] == "2030-06-30"
    assert body["entity_formation_document_url"] == "https://docs.example.org/formation.pdf"
    assert fields.legal_parent_sfid == "a0941000002wLEGALX"  # parent_entity_relationship__c
    # The settings columns stay out of the base.
    assert not {"mission_statement", "announcement_date", "executive_director"} & body.keys()
    validate_project({**body, "parent_uid": PARENT_UID, "legal_parent_uid": PARENT_UID})


@pytest.mark.parametrize(
    ("value", "expected", "warns"),
    [
        ("Graduated", "Graduated", False),
        ("sandbox", "Sandbox", True),
        ("Incubation", "NONE", True),
        ("", None, False),
        ("nil", None, False),
        (None, None, False),
        (7, "NONE", True),
    ],
)
def test_admin_category_outside_the_enum_becomes_none(
    value: Any, expected: str | None, warns: bool
) -> None:
    fields = map_project(project(admin_category__c=value))
    assert fields.body.get("category") == expected
    assert warned(fields.warnings, "category") is warns


@pytest.mark.parametrize(
    ("value", "expected", "warns"),
    [
        ("Crowdfunding", ["Crowdfunding"], False),
        (" Membership ;crowdfunding", ["Membership", "Crowdfunding"], True),
        ("Membership;Grants", ["Membership"], True),
        ("Grants", None, True),
        ("Membership;;Membership", ["Membership"], False),
        ("", None, False),
        (["Membership"], None, True),
    ],
)
def test_funding_model_is_split_on_semicolons_each_part_in_the_enum(
    value: Any, expected: list[str] | None, warns: bool
) -> None:
    fields = map_project(project(model__c=value))
    assert fields.body.get("funding_model") == expected
    assert warned(fields.warnings, "funding_model") is warns


@pytest.mark.parametrize(
    ("value", "expected", "warns"),
    [("Unfunded", "Unfunded", False), ("Sponsored", None, True), ("nil", None, False)],
)
def test_funding_is_a_v2_enum(value: Any, expected: str | None, warns: bool) -> None:
    fields = map_project(project(funding__c=value))
    assert fields.body.get("funding") == expected
    assert warned(fields.warnings, "funding") is warns


def test_bad_dissolution_date_and_formation_document_are_dropped_with_warnings() -> None:
    fields = map_project(
        project(
            project_entity_dissolution_date__c="2024-02-30",
            project_entity_formation_document__c="not a url",
        )
    )
    assert "entity_dissolution_date" not in fields.body
    assert "entity_formation_document_url" not in fields.body
    assert warned(fields.warnings, "entity_dissolution_date")
    assert warned(fields.warnings, "entity_formation_document_url")
    assert fields.body["name"] == "The Linux Foundation"  # the rest still syncs


def test_archived_without_a_dissolution_date_drops_the_stage_only() -> None:
    fields = map_project(project(project_status__c="Archived"))
    assert "stage" not in fields.body
    assert warned(fields.warnings, "stage")
    with_date = map_project(
        project(project_status__c="Archived", project_entity_dissolution_date__c="2024-01-31")
    )
    assert with_date.body["stage"] == "Archived"


@pytest.mark.parametrize("value", ["not-an-id", 12, "a0941000002wBz9AAE"])
def test_a_legal_parent_that_is_not_an_id_or_the_project_itself_is_dropped(value: Any) -> None:
    fields = map_project(project(parent_entity_relationship__c=value))
    assert fields.legal_parent_sfid is None
    assert warned(fields.warnings, "legal_parent_uid")


# --- committee base fields and settings -----------------------------------------------


def test_every_new_committee_column_reaches_its_v2_field() -> None:
    fields = map_committee(full_committee())
    assert fields.body["mailing_list"] == "tac@lists.example.org"  # mailing_list_email
    assert fields.body["chat_channel"] == "#tac"  # chat_channel
    assert fields.body["join_mode"] == "application"  # join_mode
    assert fields.body["category"] == "Technical Advisory Committee"  # type__c split
    assert fields.settings == {"business_email_required": True}  # business_email_required__c
    assert "business_email_required" not in fields.body
    validate_committee({**fields.body, "project_uid": PARENT_UID})


def test_committee_extras_are_cleaned_or_dropped_with_warnings() -> None:
    fields = map_committee(
        committee(
            mailing_list_email="not an address",
            chat_channel="x" * 600,
            join_mode="everyone",
            business_email_required__c="yes",
        )
    )
    assert "mailing_list" not in fields.body
    assert len(fields.body["chat_channel"]) == 500
    assert "join_mode" not in fields.body
    assert fields.settings == {}  # carried but unusable: V2's value stays
    for v2_field in ("mailing_list", "chat_channel", "join_mode", "business_email_required"):
        assert warned(fields.warnings, v2_field), v2_field


def test_a_committee_without_settings_columns_has_no_settings() -> None:
    assert map_committee(committee()).settings is None


# --- project settings -----------------------------------------------------------------

DIRECTOR = StaffMember("jdoe@example.com", "jdoe", "Jane", "Doe")
OWNER = StaffMember("olga.owner@example.org", "", "Olga", "Owner", "photos.example.org/o.png")


def test_settings_columns_map_to_the_settings_resource() -> None:
    fields = map_project_settings(full_project())
    assert fields is not None
    assert fields.body == {
        "mission_statement": "Open source for everyone.",  # mission_statement
        "announcement_date": "2025-09-01",  # expected_announcement_date__c
    }
    assert fields.staff == {
        "executive_director": "0032M00002XyZabQAB",  # executive_director__c
        "program_manager": "0032M00002PmAbcQAB",  # program_manager__c
    }
    assert fields.owners == {"opportunity_owner": "0054100000AbCdEAAZ"}  # opportunity_owner__c
    body, _ = complete_settings(
        fields,
        {"executive_director": DIRECTOR, "program_manager": None, "opportunity_owner": OWNER},
    )
    assert body["executive_director"] == {
        "name": "Jane Doe",
        "email": "jdoe@example.com",
        "username": "jdoe",
        "avatar": "",
    }
    assert body["opportunity_owner"]["avatar"] == "https://photos.example.org/o.png"
    assert "program_manager" not in body  # a failed lookup leaves V2's value
    validate_body(body, PROJECT_SETTINGS_RULES)


def test_a_record_without_settings_columns_has_no_settings() -> None:
    assert map_project_settings(project()) is None


def test_same_user_compares_by_email_then_username() -> None:
    sent = {"name": "Jane Doe", "email": "JDoe@example.com", "username": "jane", "avatar": ""}
    stored = {"name": "J. Doe", "email": "jdoe@example.com", "username": "jdoe", "avatar": "x"}
    # V2 rewrote name, avatar and username from its directory: the same person.
    assert same_user(sent, stored)
    assert not same_user({**sent, "email": "else@example.com"}, stored)
    assert not same_user({**sent, "email": ""}, stored)
    no_email = {"name": "", "email": "", "username": "jdoe", "avatar": ""}
    assert same_user(no_email, {**no_email, "name": "Jane"})
    assert not same_user(no_email, {**no_email, "username": "other"})
    assert not same_user({**no_email, "username": ""}, {**no_email, "username": ""})


def test_settings_merge_keeps_v2_lists_and_rewritten_users_and_sees_no_change() -> None:
    writers = [{"name": "W", "email": "w@example.org", "username": "w", "avatar": "", "invite": {}}]
    current = {
        "uid": PARENT_UID,
        "mission_statement": "Open source for everyone.",
        "executive_director": {
            "name": "Jane Q. Doe",
            "email": "jdoe@example.com",
            "username": "jdoe",
            "avatar": "https://avatars.example.org/jdoe",
        },
        "writers": writers,
        "created_at": "2025-01-01T00:00:00Z",
    }
    v1 = {
        "mission_statement": "Open source for everyone.",
        "executive_director": {
            "name": "Jane Doe",
            "email": "jdoe@example.com",
            "username": "jdoe",
            "avatar": "",
        },
    }
    assert planned_settings(current, v1) is None
    changed = planned_settings(current, {**v1, "mission_statement": "New."})
    assert changed is not None
    assert changed["mission_statement"] == "New."
    assert changed["executive_director"] == current["executive_director"]
    assert changed["writers"] == [{k: v for k, v in writers[0].items() if k != "invite"}]
    assert not {"uid", "created_at"} & changed.keys()


def test_committee_settings_body_keeps_v2_fields() -> None:
    current = {"business_email_required": False, "member_visibility": "hidden", "uid": "x"}
    body = settings_body(current, {"business_email_required": True})
    assert body == {"business_email_required": True, "member_visibility": "hidden"}
    validate_body(body, COMMITTEE_SETTINGS_RULES)


# --- properties -----------------------------------------------------------------------

hostile = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "",
            " ",
            "nil",
            "Graduated",
            " funded ",
            "Membership;Crowdfunding;Bogus",
            ";;",
            "2024-02-30",
            "2020-03-01T00:00:00+00:00",
            "www.example.org/doc",
            "javascript:alert(1)",
            "x" * 700,
            "a@b.co",
            "open",
            "Archived",
            "a0941000002wBz9AAE",
            "0032M00002XyZabQAB",
        ]
    )
    | st.lists(st.text(max_size=5), max_size=2)
)
PROJECT_NEW_COLUMNS = [
    "admin_category__c",
    "funding__c",
    "model__c",
    "charterurl__c",
    "auto_join_enabled__c",
    "project_entity_dissolution_date__c",
    "project_entity_formation_document__c",
    "parent_entity_relationship__c",
    "project_status__c",
    "mission_statement",
    "expected_announcement_date__c",
    "executive_director__c",
    "program_manager__c",
    "opportunity_owner__c",
]
COMMITTEE_NEW_COLUMNS = [
    "type__c",
    "mailing_list__c",
    "mailing_list_email",
    "chat_channel",
    "join_mode",
    "business_email_required__c",
]
staff_members = st.builds(
    StaffMember,
    st.text(max_size=20) | st.just("a@b.co"),
    st.text(max_size=10),
    st.text(max_size=10),
    st.text(max_size=10),
    st.text(max_size=20) | st.just("photos.example.org/p.png"),
)


@given(st.dictionaries(st.sampled_from(PROJECT_NEW_COLUMNS), hostile, max_size=6), staff_members)
@settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
def test_any_new_project_column_gives_bodies_v2_accepts(
    changes: dict[str, Any], person: StaffMember
) -> None:
    record = full_project(**changes)
    fields = map_project(record)
    body = {**fields.body, "parent_uid": PARENT_UID}
    validate_project(json.loads(json.dumps(body)))
    settings_fields = map_project_settings(record)
    if settings_fields is not None:
        found = dict.fromkeys((*settings_fields.staff, *settings_fields.owners), person)
        settings_body_, _ = complete_settings(settings_fields, found)
        validate_body(json.loads(json.dumps(settings_body_)), PROJECT_SETTINGS_RULES)
    assert all(len(warning) < 400 for warning in fields.warnings)


@given(st.dictionaries(st.sampled_from(COMMITTEE_NEW_COLUMNS), hostile, max_size=4))
@settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
def test_any_new_committee_column_gives_bodies_v2_accepts(changes: dict[str, Any]) -> None:
    record = full_committee(**changes)
    name = record.get("mailing_list__c")
    if not isinstance(name, str) or not name.strip():
        # Only a blank name refuses the record (as in the first release).
        with pytest.raises(InvalidRecord, match="mailing_list__c"):
            map_committee(record)
        return
    fields = map_committee(record)
    validate_committee(json.loads(json.dumps({**fields.body, "project_uid": PARENT_UID})))
    if fields.settings is not None:
        settings_ = settings_body({"business_email_required": False}, fields.settings)
        validate_body(settings_, COMMITTEE_SETTINGS_RULES)


emails = st.sampled_from(["a@example.org", "B@example.org", "c@example.org", ""])
users = st.fixed_dictionaries(
    {
        "name": st.text(max_size=8),
        "email": emails,
        "username": st.sampled_from(["", "a", "b"]),
        "avatar": st.sampled_from(["", "https://x.example.org/a.png"]),
    }
)
stored_settings = st.fixed_dictionaries(
    {},
    optional={
        "mission_statement": st.text(max_size=10),
        "announcement_date": st.sampled_from(["2025-01-01", "2026-02-02"]),
        "executive_director": users,
        "program_manager": users,
        "writers": st.lists(users.map(lambda u: {**u, "invite": {"status": "sent"}}), max_size=2),
        "meeting_coordinators": st.lists(users, max_size=2),
    },
)
v1_settings = st.fixed_dictionaries(
    {},
    optional={
        "mission_statement": st.text(max_size=10),
        "announcement_date": st.sampled_from(["2025-01-01", "2026-02-02"]),
        "executive_director": users.filter(lambda u: bool(u["email"])),
        "opportunity_owner": users.filter(lambda u: bool(u["email"])),
    },
)


def directory_rewrite(body: dict[str, Any], known: bool) -> dict[str, Any]:
    """What a V2 write stores: user objects rewritten from its directory by e-mail."""

    def directory(email: str) -> dict[str, str] | None:
        if not known or not email:
            return None
        local = email.split("@")[0].lower()
        return {"username": "v2-" + local, "name": local.title(), "avatar": ""}

    return rewrite_users(body, directory)


@given(stored_settings, v1_settings, st.booleans())
@settings(deadline=None, max_examples=EXAMPLES)
def test_after_one_settings_put_the_next_run_puts_nothing_and_v2_lists_stay(
    current: dict[str, Any], v1: dict[str, Any], known: bool
) -> None:
    body = settings_body(current, v1)
    stored = directory_rewrite(body, known)
    assert planned_settings(stored, v1) is None
    for name in ("writers", "meeting_coordinators"):
        if name in current:
            assert [u["email"] for u in body[name]] == [u["email"] for u in current[name]]
            assert all("invite" not in user for user in body[name])


@given(
    st.dictionaries(
        st.sampled_from(["is_foundation", "requires_review", "join_mode", "calendar", "scope"]),
        st.booleans() | st.text(max_size=5),
        min_size=1,
    ),
    st.dictionaries(st.sampled_from(["name", "description", "public"]), st.text(max_size=5)),
)
@settings(deadline=None, max_examples=EXAMPLES)
def test_full_replace_keeps_every_field_v1_does_not_own(
    v2_only: dict[str, Any], v1_fields: dict[str, Any]
) -> None:
    current = {"uid": PARENT_UID, "name": "old", **v2_only}
    merged = merge_over(current, v1_fields, frozenset({"uid"}))
    for name, value in v2_only.items():
        assert merged[name] == value
    for name, value in v1_fields.items():
        assert merged[name] == value
