"""V1 records to V2 bodies: field by field, fallback by fallback, drop by drop.

The V2 rules are restated here from ``reference/v2-contract.md`` (not imported from
``tasks.mapping``) so that a typo in the module's enums or patterns fails a test.
"""

from __future__ import annotations

import re
import string
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tasks.errors import InvalidRecord, PermanentError
from tasks.mapping.committees import COMMITTEE_READ_ONLY, CommitteeFields, map_committee
from tasks.mapping.merge import merge_over, needs_update
from tasks.mapping.projects import PROJECT_READ_ONLY, ProjectFields, default_public, map_project
from tasks.mapping.record_ids import is_v1_id
from tasks.mapping.values import clean_url, to_date
from tests.v1_examples import committee, project

# --- The V2 contract, restated -------------------------------------------------------

V2_SLUG = re.compile(r"^[a-z][a-z0-9_\-]*[a-z0-9]\Z")
V2_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z", re.ASCII)
V2_STAGES = {
    "Formation - Exploratory", "Formation - Engaged", "Active", "Archived",
    "Formation - On Hold", "Formation - Disengaged", "Formation - Confidential", "Prospect",
}  # fmt: skip
V2_LEGAL_ENTITY_TYPES = {
    "Subproject", "Incorporated Entity", "Series LLC", "Unofficial Subproject",
    "Internal Allocation", "None",
}  # fmt: skip
V2_COMMITTEE_CATEGORIES = {
    "Ambassador", "Board", "Code of Conduct", "Committers", "Expert Group",
    "Finance Committee", "Government Advisory Council", "Legal Committee", "Maintainers",
    "Marketing Committee/Sub Committee", "Marketing Mailing List",
    "Marketing Oversight Committee/Marketing Advisory Committee", "Newsletter", "Other",
    "Product Security", "Special Interest Group", "Technical Advisory Committee",
    "Technical Mailing List", "Technical Oversight Committee",
    "Technical Steering Committee", "Working Group",
}  # fmt: skip
PROJECT_STRINGS = {"name", "description", "legal_entity_name"}
PROJECT_BOOLEANS = {"public", "autojoin_enabled"}
PROJECT_URIS = {"logo_url", "repository_url", "website_url", "charter_url"}
PROJECT_FIELDS_V1_CAN_FILL = (
    PROJECT_STRINGS
    | PROJECT_BOOLEANS
    | PROJECT_URIS
    | {"slug", "formation_date", "stage", "legal_entity_type"}
)
COMMITTEE_BOOLEANS = {"enable_voting", "public", "sso_group_enabled"}
COMMITTEE_FIELDS_V1_CAN_FILL = COMMITTEE_BOOLEANS | {
    "name", "display_name", "description", "website", "category",
}  # fmt: skip
# RFC 3986 characters; the generic syntax of its appendix B.
RFC3986_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+\Z")
RFC3986_SYNTAX = re.compile(r"^(([^:/?#]+):)?(//([^/?#]*))?([^?#]*)(\?([^#]*))?(#(.*))?")


def is_contract_uri(value: Any) -> bool:
    """An absolute http(s) URI with a host, RFC 3986 characters only, no spaces."""
    if not isinstance(value, str) or not RFC3986_CHARS.match(value):
        return False
    parts = RFC3986_SYNTAX.match(value)
    assert parts is not None  # the appendix-B pattern matches every string
    scheme, authority = parts.group(2), parts.group(4)
    return (
        (scheme or "").lower() in {"http", "https"}
        and bool(urlsplit(value).hostname)
        and (bool(authority))
    )


def assert_project_body_meets_contract(fields: ProjectFields) -> None:
    """Every rule of the V2 project write contract a V1-made body can break."""
    body = fields.body
    assert set(body) <= PROJECT_FIELDS_V1_CAN_FILL, set(body) - PROJECT_FIELDS_V1_CAN_FILL
    assert {"name", "slug", "description"} <= set(body)
    assert V2_SLUG.match(body["slug"])
    assert body["slug"] == fields.slug
    assert all(isinstance(body[name], str) for name in PROJECT_STRINGS & set(body))
    assert body["name"].strip()
    assert all(type(body[name]) is bool for name in PROJECT_BOOLEANS & set(body))
    assert all(is_contract_uri(body[name]) for name in PROJECT_URIS & set(body))
    if "formation_date" in body:
        assert V2_DATE.match(body["formation_date"])
        date.fromisoformat(body["formation_date"])
    assert body.get("stage", "Active") in V2_STAGES
    assert body.get("legal_entity_type", "None") in V2_LEGAL_ENTITY_TYPES
    assert fields.parent_sfid is None or fields.parent_sfid.strip()
    assert all(isinstance(warning, str) for warning in fields.warnings)


def assert_committee_body_meets_contract(fields: CommitteeFields) -> None:
    """Every rule of the V2 committee write contract a V1-made body can break."""
    body = fields.body
    assert set(body) <= COMMITTEE_FIELDS_V1_CAN_FILL, set(body) - COMMITTEE_FIELDS_V1_CAN_FILL
    assert isinstance(body["name"], str)
    assert 0 < len(body["name"]) <= 100
    assert body["category"] in V2_COMMITTEE_CATEGORIES
    assert len(body.get("display_name", "")) <= 100
    assert len(body.get("description", "")) <= 2000
    assert all(isinstance(body[name], str) for name in {"display_name", "description"} & set(body))
    assert all(type(body[name]) is bool for name in COMMITTEE_BOOLEANS & set(body))
    assert "website" not in body or is_contract_uri(body["website"])
    assert fields.project_sfid


def warned_fields(warnings: tuple[str, ...]) -> list[str]:
    """The V2 field each warning names (its first word)."""
    return [warning.split(" ", 1)[0] for warning in warnings]


# --- Projects: the example record ----------------------------------------------------


def test_the_example_project_maps_to_this_body() -> None:
    fields = map_project(project())
    assert fields.sfid == "a0941000002wBz9AAE"
    assert fields.slug == "tlf"
    assert fields.parent_sfid is None
    assert fields.body == {
        "name": "The Linux Foundation",
        "slug": "tlf",
        "description": "An umbrella foundation.",
        "legal_entity_name": "The Linux Foundation",
        "formation_date": "2000-01-01",
        "legal_entity_type": "Incorporated Entity",
        "stage": "Active",
        "logo_url": "https://example.org/tlf.svg",
        "repository_url": "https://github.com/linuxfoundation",
        "website_url": "https://www.linuxfoundation.org",
        "autojoin_enabled": False,
    }
    # charter "nil" means no charter: left out, and not worth a warning
    assert warned_fields(fields.warnings) == ["repository_url", "website_url"]
    assert_project_body_meets_contract(fields)


def test_a_minimal_project_sends_only_what_v2_requires() -> None:
    fields = map_project({"sfid": "a0941000002wBz9AAE", "name": "Tiny", "slug__c": "tiny"})
    assert fields.body == {"name": "Tiny", "slug": "tiny", "description": ""}
    assert fields.warnings == ()


def test_null_optional_columns_are_left_out_not_sent_as_null() -> None:
    nulls = {
        column: None
        for column in (
            "public__c", "formation_date__c", "start_date__c", "legal_entity_name__c",
            "project_entity_name__c", "legal_entity_type__c", "category__c", "logo_url__c",
            "project_logo__c", "repository_url__c", "repositoryurl__c", "website_url__c",
            "website__c", "stage__c", "project_status__c", "charter_url__c", "charterurl__c",
            "autojoin_enabled__c", "auto_join_enabled__c", "description__c",
        )
    }  # fmt: skip
    fields = map_project(project(**nulls))
    assert fields.body == {"name": "The Linux Foundation", "slug": "tlf", "description": ""}
    assert None not in fields.body.values()
    assert fields.warnings == ()


def test_the_body_never_carries_parent_uid_or_read_only_fields() -> None:
    record = project(
        parent_project__c="a0941000002wBzAAAU",
        uid="0b2c7a43-4f0e-4d7e-8d43-9f0f4bbd9c11",
        parent_uid="0b2c7a43-4f0e-4d7e-8d43-9f0f4bbd9c12",
        created_at="2025-01-01T00:00:00Z",
        updated_at="2025-01-01T00:00:00Z",
    )
    fields = map_project(record)
    assert fields.parent_sfid == "a0941000002wBzAAAU"
    assert not {"parent_uid", *PROJECT_READ_ONLY} & set(fields.body)


# --- Projects: documented name first, real column as fallback ------------------------

# (V2 field, documented column, its value, real column, its value, V2 value of each)
PROJECT_FALLBACKS = [
    ("formation_date", "formation_date__c", "2021-05-04", "start_date__c",
     "2000-01-01T00:00:00+00:00", "2021-05-04", "2000-01-01"),
    ("legal_entity_name", "legal_entity_name__c", "LF Projects, LLC", "project_entity_name__c",
     "The Linux Foundation", "LF Projects, LLC", "The Linux Foundation"),
    ("legal_entity_type", "legal_entity_type__c", "Series LLC", "category__c",
     "Incorporated Entity", "Series LLC", "Incorporated Entity"),
    ("logo_url", "logo_url__c", "https://cdn.example.org/new.svg", "project_logo__c",
     "https://example.org/tlf.svg", "https://cdn.example.org/new.svg",
     "https://example.org/tlf.svg"),
    ("repository_url", "repository_url__c", "https://gitlab.com/lf", "repositoryurl__c",
     "https://github.com/linuxfoundation", "https://gitlab.com/lf",
     "https://github.com/linuxfoundation"),
    ("website_url", "website_url__c", "https://lf.example.org", "website__c",
     "https://www.linuxfoundation.org", "https://lf.example.org",
     "https://www.linuxfoundation.org"),
    ("stage", "stage__c", "Prospect", "project_status__c", "Active", "Prospect", "Active"),
    ("charter_url", "charter_url__c", "https://example.org/charter-v2.pdf", "charterurl__c",
     "https://example.org/charter.pdf", "https://example.org/charter-v2.pdf",
     "https://example.org/charter.pdf"),
    ("autojoin_enabled", "autojoin_enabled__c", True, "auto_join_enabled__c", False, True, False),
    ("autojoin_enabled", "autojoin_enabled__c", False, "auto_join_enabled__c", True, False, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("v2_field", "documented", "documented_value", "real", "real_value", "from_documented",
     "from_real"),
    PROJECT_FALLBACKS,
    ids=[f"{case[0]}-{case[2]}" for case in PROJECT_FALLBACKS],
)  # fmt: skip
def test_the_documented_column_wins_and_the_real_one_is_the_fallback(
    v2_field: str,
    documented: str,
    documented_value: Any,
    real: str,
    real_value: Any,
    from_documented: Any,
    from_real: Any,
) -> None:
    both = map_project(project(**{documented: documented_value, real: real_value}))
    assert both.body[v2_field] == from_documented
    documented_null = map_project(project(**{documented: None, real: real_value}))
    assert documented_null.body[v2_field] == from_real
    only_real = project(**{real: real_value})
    only_real.pop(documented, None)
    assert map_project(only_real).body[v2_field] == from_real
    only_documented = project(**{documented: documented_value})
    only_documented.pop(real, None)
    assert map_project(only_documented).body[v2_field] == from_documented
    neither = project()
    neither.pop(documented, None)
    neither.pop(real, None)
    assert v2_field not in map_project(neither).body


def test_an_empty_documented_url_still_wins_and_means_no_url() -> None:
    # documented and non-null wins, even when it is "": the field is left out
    fields = map_project(project(website_url__c="", website__c="https://www.linuxfoundation.org"))
    assert "website_url" not in fields.body


# --- Projects: required fields -------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"sfid": None}, "sfid missing"),
        ({"sfid": ""}, "sfid missing"),
        ({"sfid": 12345}, "sfid missing"),
        ({"sfid": "a09 41000"}, "sfid missing"),
        ({"sfid": "a09.41000"}, "sfid missing"),  # would add a token to the KV key
        ({"name": None}, "name missing or blank"),
        ({"name": ""}, "name missing or blank"),
        ({"name": "   "}, "name missing or blank"),
        ({"name": 42}, "name missing or blank"),
        ({"slug__c": None}, "slug__c missing"),
        ({"slug__c": ""}, "slug__c missing"),
        ({"slug__c": " \t"}, "slug__c missing"),
        ({"slug__c": ["tlf"]}, "slug__c missing"),
        ({"slug__c": "t"}, "does not match"),  # one character cannot match
        ({"slug__c": "1tlf"}, "does not match"),
        ({"slug__c": "-tlf"}, "does not match"),
        ({"slug__c": "tlf-"}, "does not match"),
        ({"slug__c": "tlf_"}, "does not match"),
        ({"slug__c": "the linux foundation"}, "does not match"),
        ({"slug__c": "tlf.org"}, "does not match"),
        ({"slug__c": "tlf\nx"}, "does not match"),
        ({"slug__c": "zürich"}, "does not match"),
        ({"slug__c": "İstanbul"}, "does not match"),  # lower() gives a dotted i + combining dot
        (
            {"parent_project__c": 42},
            "parent_project__c 42 is not an 18-character Salesforce id or a UUID",
        ),
        ({"parent_project__c": "not an id"}, "is not an 18-character"),
        ({"parent_project__c": "a0941000002wBz9AAE"}, "is the project itself"),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else None,
)
def test_a_project_v2_cannot_take_is_an_invalid_record(
    changes: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(InvalidRecord) as raised:
        map_project(project(**changes))
    assert complaint in raised.value.message
    assert raised.value.kind == "invalid_record"
    assert isinstance(raised.value, PermanentError)


@pytest.mark.parametrize("column", ["sfid", "name", "slug__c"])
def test_a_project_without_a_required_column_is_an_invalid_record(column: str) -> None:
    record = project()
    del record[column]
    with pytest.raises(InvalidRecord, match=column):
        map_project(record)


@pytest.mark.parametrize(
    ("slug", "expected"),
    [
        ("TLF", "tlf"),
        ("tlf", "tlf"),
        (" CNCF ", "cncf"),
        ("tlf\n", "tlf"),
        ("Open-Mainframe_Project2", "open-mainframe_project2"),
        ("a1", "a1"),
        ("ab", "ab"),
        ("a--b", "a--b"),
    ],
)
def test_slugs_are_trimmed_and_lower_cased(slug: str, expected: str) -> None:
    fields = map_project(project(slug__c=slug))
    assert fields.slug == expected
    assert fields.body["slug"] == expected
    assert V2_SLUG.match(fields.slug)


@pytest.mark.parametrize(
    ("name", "expected", "warned"),
    [
        ("The Linux Foundation", "The Linux Foundation", False),
        ("  The Linux Foundation\n", "The Linux Foundation", True),
        ("x" * 500, "x" * 500, False),  # no length rule for project names
    ],
)
def test_project_names_are_trimmed_with_a_warning(name: str, expected: str, warned: bool) -> None:
    fields = map_project(project(name=name))
    assert fields.body["name"] == expected
    assert ("name" in warned_fields(fields.warnings)) is warned


# --- Projects: parent ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("parent", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("a0941000002wBzAAAU", "a0941000002wBzAAAU"),
    ],
)
def test_the_parent_sfid_is_none_for_projects_under_root(
    parent: str | None, expected: str | None
) -> None:
    assert map_project(project(parent_project__c=parent)).parent_sfid == expected


def test_a_record_without_the_parent_column_goes_under_root() -> None:
    record = project()
    del record["parent_project__c"]
    assert map_project(record).parent_sfid is None


# --- Projects: description and public -------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected", "warned"),
    [
        ({"description__c": "An umbrella foundation."}, "An umbrella foundation.", False),
        ({"description__c": ""}, "", False),
        ({"description__c": None}, "", False),
        ({"description__c": "  spaced\n"}, "  spaced\n", False),  # descriptions kept verbatim
        ({"description__c": 7}, "", True),
        ({"description__c": {"text": "x"}}, "", True),
    ],
)
def test_the_description_is_always_sent(
    changes: dict[str, Any], expected: str, warned: bool
) -> None:
    fields = map_project(project(**changes))
    assert fields.body["description"] == expected
    assert ("description" in warned_fields(fields.warnings)) is warned


def test_a_project_without_a_description_column_sends_an_empty_one() -> None:
    record = project()
    del record["description__c"]
    assert map_project(record).body["description"] == ""


@pytest.mark.parametrize(
    ("changes", "expected", "warned"),
    [
        ({}, "absent", False),  # the example: no public__c column at all
        ({"public__c": None}, "absent", False),
        ({"public__c": True}, True, False),
        ({"public__c": False}, False, False),
        ({"public__c": "true"}, "absent", True),
        ({"public__c": "false"}, "absent", True),
        ({"public__c": 1}, "absent", True),
    ],
)
def test_public_comes_only_from_a_real_public_boolean(
    changes: dict[str, Any], expected: Any, warned: bool
) -> None:
    fields = map_project(project(**changes))
    assert fields.body.get("public", "absent") == expected
    assert type(fields.body.get("public", "absent")) is type(expected)
    assert ("public" in warned_fields(fields.warnings)) is warned


@pytest.mark.parametrize(
    ("stage", "parent_public", "expected"),
    [
        ("Active", None, True),  # parent is ROOT
        ("Active", True, True),
        ("Active", False, False),
        ("Archived", None, False),
        ("Formation - Exploratory", None, False),
        ("Prospect", True, False),
        (None, None, False),
        (None, True, False),
        ("active", None, False),  # the mapped stage is canonical already
    ],
)
def test_default_public(stage: str | None, parent_public: bool | None, expected: bool) -> None:
    assert default_public(stage, parent_public) is expected


# --- Projects: dates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-03-01T00:00:00+00:00", "2020-03-01"),  # Meltano
        ("2025-11-27T18:01:25", "2025-11-27"),  # no zone: UTC
        ("2025-11-27T18:01:25Z", "2025-11-27"),  # RFC 3339
        ("2025-11-27T18:01:25.123Z", "2025-11-27"),
        ("2025-11-27T18:01:25.123456789Z", "2025-11-27"),
        ("2025-11-27T18:01:25z", "2025-11-27"),
        ("2025-11-27 18:01:25+00", "2025-11-27"),  # PostgreSQL text
        ("2025-11-27T18:01", "2025-11-27"),
        ("2020-03-01", "2020-03-01"),  # plain date
        (" 2020-03-01 ", "2020-03-01"),
        ("2020-02-29", "2020-02-29"),
        # the calendar date as written: the zone is not applied
        ("2020-03-01T00:00:00+02:00", "2020-03-01"),
        ("2020-03-01T23:30:00-05:00", "2020-03-01"),
        (datetime(2020, 3, 1, 0, 0, tzinfo=UTC), "2020-03-01"),  # msgpack timestamp
        (datetime(2020, 3, 1, 23, 0, tzinfo=timezone(timedelta(hours=-5))), "2020-03-01"),
        (date(2020, 3, 1), "2020-03-01"),
        (date(999, 1, 2), "0999-01-02"),
    ],
)
def test_dates_become_yyyy_mm_dd(value: Any, expected: str) -> None:
    assert to_date(value) == expected
    fields = map_project(project(start_date__c=value))
    assert fields.body["formation_date"] == expected
    assert "formation_date" not in warned_fields(fields.warnings)


@pytest.mark.parametrize(
    "value",
    [
        "2020-02-30",
        "2021-02-29",
        "2020-13-01",
        "2020-00-10",
        "0000-01-01",
        "2020-3-1",
        "20200301",
        "01/03/2020",
        "March 1, 2020",
        "2020-03-01T24:00:00",
        "2020-03-01T12:60:00",
        "2020-03-01T12:00:61",
        "2020-03-01T12:00:00+25:00",
        "2020-03-01Tnoon",
        "2020-03-01T00:00:00+00:00 extra",
        "\uff12\uff10\uff12\uff10-\uff10\uff13-\uff10\uff11",  # full-width: \d without re.ASCII
        "",
        "nil",
        20200301,
        1583020800.0,
        True,
        ["2020-03-01"],
    ],
)
def test_a_bad_date_is_dropped_with_a_warning(value: Any) -> None:
    assert to_date(value) is None
    fields = map_project(project(start_date__c=value))
    assert "formation_date" not in fields.body
    assert warned_fields(fields.warnings).count("formation_date") == 1


# --- Projects: enums -----------------------------------------------------------------


@pytest.mark.parametrize("stage", sorted(V2_STAGES))
def test_every_v2_stage_passes_unchanged(stage: str) -> None:
    # Archived only with a dissolution date (V2 refuses it without one).
    dissolved = {"project_entity_dissolution_date__c": "2024-05-01T00:00:00+00:00"}
    fields = map_project(project(project_status__c=stage, **dissolved))
    assert fields.body["stage"] == stage
    assert "stage" not in warned_fields(fields.warnings)


@pytest.mark.parametrize("entity_type", sorted(V2_LEGAL_ENTITY_TYPES))
def test_every_v2_legal_entity_type_passes_unchanged(entity_type: str) -> None:
    fields = map_project(project(category__c=entity_type))
    assert fields.body["legal_entity_type"] == entity_type
    assert "legal_entity_type" not in warned_fields(fields.warnings)


@pytest.mark.parametrize(
    ("column", "v2_field", "value", "expected"),
    [
        ("project_status__c", "stage", "active", "Active"),
        ("project_status__c", "stage", " PROSPECT ", "Prospect"),
        ("project_status__c", "stage", "formation -  on hold", "Formation - On Hold"),
        ("category__c", "legal_entity_type", "incorporated entity", "Incorporated Entity"),
        ("category__c", "legal_entity_type", "series llc", "Series LLC"),
        ("category__c", "legal_entity_type", "none", "None"),
    ],
)
def test_an_enum_value_spelled_loosely_is_read_with_a_warning(
    column: str, v2_field: str, value: str, expected: str
) -> None:
    fields = map_project(project(**{column: value}))
    assert fields.body[v2_field] == expected
    assert warned_fields(fields.warnings).count(v2_field) == 1


@pytest.mark.parametrize(
    ("column", "v2_field", "value"),
    [
        ("project_status__c", "stage", "Dormant"),
        ("project_status__c", "stage", "Formation"),
        ("project_status__c", "stage", ""),
        ("project_status__c", "stage", 3),
        ("project_status__c", "stage", True),
        ("category__c", "legal_entity_type", "LLC"),
        ("category__c", "legal_entity_type", "Sandbox"),  # a project category, not an entity
        ("category__c", "legal_entity_type", ["Subproject"]),
    ],
)
def test_a_value_outside_an_enum_is_dropped_with_a_warning(
    column: str, v2_field: str, value: Any
) -> None:
    fields = map_project(project(**{column: value}))
    assert v2_field not in fields.body
    assert warned_fields(fields.warnings).count(v2_field) == 1
    assert "dropped" in fields.warnings[warned_fields(fields.warnings).index(v2_field)]


# --- URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://example.org/tlf.svg", "https://example.org/tlf.svg"),
        ("http://example.org", "http://example.org"),
        ("HTTPS://Example.ORG/Path", "HTTPS://Example.ORG/Path"),
        (" www.linuxfoundation.org", "https://www.linuxfoundation.org"),
        ("github.com/linuxfoundation", "https://github.com/linuxfoundation"),
        ("lists.example.org/g/board", "https://lists.example.org/g/board"),
        ("//cdn.example.org/logo.png", "https://cdn.example.org/logo.png"),
        ("example.org:8443/x?y=1&z=%20#top", "https://example.org:8443/x?y=1&z=%20#top"),
        ("https://example.org/ü", "https://example.org/%C3%BC"),
        ('https://example.org/a"b', "https://example.org/a%22b"),
        ("https://example.org/{x}|y", "https://example.org/%7Bx%7D%7Cy"),
        ("https://[2001:db8::1]:8080/", "https://[2001:db8::1]:8080/"),
        ("http://192.0.2.10/logo.svg", "http://192.0.2.10/logo.svg"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("https://example.org.", "https://example.org."),
        ("\thttps://example.org\n", "https://example.org"),
    ],
)
def test_url_clean_up_keeps_or_repairs(value: str, expected: str) -> None:
    assert clean_url(value) == (expected, None)
    assert is_contract_uri(expected)


@pytest.mark.parametrize("value", ["", "   ", "nil", "NIL", " Nil "])
def test_empty_and_nil_urls_are_no_value_without_a_warning(value: str) -> None:
    assert clean_url(value) == (None, None)
    fields = map_project(project(website__c=value))
    assert "website_url" not in fields.body
    assert "website_url" not in warned_fields(fields.warnings)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("https://example.org/my page", "spaces"),
        ("www.example .org", "spaces"),
        ("https://example.org/\x00", "control"),
        ("https://exa\u200bmple.org", "control"),  # zero-width space
        ("ftp://example.org/file", "not a valid"),
        ("git://github.com/x/y", "not a valid"),
        ("git@github.com:org/repo.git", "not a valid"),
        ("mailto:board@example.org", "not a valid"),
        ("board@example.org", "not a valid"),
        ("https://user:secret@example.org", "not a valid"),
        ("http:/example.org", "not a valid"),
        ("https://", "not a valid"),
        ("https:///path", "not a valid"),
        ("TBD", "not a valid"),
        ("n/a", "not a valid"),
        ("null", "not a valid"),
        ("-", "not a valid"),
        ("https://exämple.org", "not a valid"),
        ("https://example.org:99999", "not a valid"),
        ("https://example.org:port", "not a valid"),
        ("https://example.org/100%", "not a valid"),
        ("https://example.org/a[1]", "not a valid"),
        ("https://[::1", "not a valid"),
        ("https://-.-", "not a valid"),
        ("https://x.org/\ud800", "control"),  # a lone surrogate cannot be UTF-8
        (42, "not a URL"),
        (True, "not a URL"),
        (["https://example.org"], "not a URL"),
    ],
)
def test_what_is_still_not_a_uri_is_dropped_with_a_reason(value: Any, problem: str) -> None:
    url, reason = clean_url(value)
    assert url is None
    assert reason is not None
    assert problem in reason


@pytest.mark.parametrize(
    ("column", "v2_field"),
    [
        ("project_logo__c", "logo_url"),
        ("repositoryurl__c", "repository_url"),
        ("website__c", "website_url"),
        ("charterurl__c", "charter_url"),
    ],
)
def test_every_project_url_field_is_cleaned_or_dropped_with_a_warning(
    column: str, v2_field: str
) -> None:
    cleaned = map_project(project(**{column: " example.org/x "}))
    assert cleaned.body[v2_field] == "https://example.org/x"
    assert warned_fields(cleaned.warnings).count(v2_field) == 1
    dropped = map_project(project(**{column: "see the wiki"}))
    assert v2_field not in dropped.body
    warning = dropped.warnings[warned_fields(dropped.warnings).index(v2_field)]
    assert column in warning
    assert "dropped" in warning


# --- Projects: booleans --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "warned"),
    [
        (False, False, False),
        (True, True, False),
        (None, "absent", False),
        ("true", "absent", True),
        ("False", "absent", True),
        (0, "absent", True),
    ],
)
def test_autojoin_takes_real_booleans_only(value: Any, expected: Any, warned: bool) -> None:
    fields = map_project(project(auto_join_enabled__c=value))
    assert fields.body.get("autojoin_enabled", "absent") == expected
    assert type(fields.body.get("autojoin_enabled", "absent")) is type(expected)
    assert ("autojoin_enabled" in warned_fields(fields.warnings)) is warned


def test_non_string_text_is_dropped_with_a_warning() -> None:
    fields = map_project(project(project_entity_name__c=12))
    assert "legal_entity_name" not in fields.body
    assert warned_fields(fields.warnings).count("legal_entity_name") == 1


def test_every_warning_names_its_v2_field_and_v1_column() -> None:
    fields = map_project(
        project(
            name=" The Linux Foundation ",
            description__c=1,
            project_status__c="Bogus",
            category__c="bogus",
            start_date__c="soon",
            project_logo__c="logo",
            repositoryurl__c=3,
            website__c="a b",
            charterurl__c="x",
            auto_join_enabled__c="yes",
            public__c="yes",
            project_entity_name__c=False,
        )
    )
    assert sorted(warned_fields(fields.warnings)) == sorted(
        [
            "name", "description", "stage", "legal_entity_type", "formation_date", "logo_url",
            "repository_url", "website_url", "charter_url", "autojoin_enabled", "public",
            "legal_entity_name",
        ]
    )  # fmt: skip
    for warning in fields.warnings:
        assert re.match(r"^\w+ \(from \w+\): ", warning), warning
    assert_project_body_meets_contract(fields)


def test_long_values_are_shortened_in_warnings() -> None:
    fields = map_project(project(project_status__c="x" * 10_000))
    assert len(fields.warnings[0]) < 200


# --- Committees ----------------------------------------------------------------------


def test_the_example_committee_maps_to_this_body() -> None:
    fields = map_committee(committee())
    assert fields.sfid == "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a"
    assert fields.project_sfid == "a0941000002wBz9AAE"
    assert fields.body == {
        "name": "Governing Board",
        "category": "Board",
        "description": "The board.",
        "display_name": "Governing Board",
        "website": "https://lists.example.org/g/board",
        "enable_voting": True,
        "public": True,
        "sso_group_enabled": False,
    }
    assert warned_fields(fields.warnings) == ["website"]
    assert_committee_body_meets_contract(fields)


def test_a_minimal_committee_sends_name_and_category() -> None:
    fields = map_committee(
        {
            "sfid": "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a",
            "mailing_list__c": "TSC",
            "project_name__c": "a0941000002wBz9AAE",
            "type__c": "Technical Steering Committee",
        }
    )
    assert fields.body == {"name": "TSC", "category": "Technical Steering Committee"}
    assert fields.warnings == ()


def test_null_committee_columns_are_left_out() -> None:
    fields = map_committee(
        committee(
            description__c=None,
            public_name=None,
            committee_website__c=None,
            enable_voting__c=None,
            public_enabled=None,
            sso_group_enabled=None,
        )
    )
    assert fields.body == {"name": "Governing Board", "category": "Board"}
    assert fields.warnings == ()


@pytest.mark.parametrize(
    "extra",
    [
        {"sso_group_name": "board-group"},
        {"is_audit": True},
        {"is_audit__c": True},
        {"uid": "0b2c7a43-4f0e-4d7e-8d43-9f0f4bbd9c11", "total_members": 3},
        {"project_uid": "0b2c7a43-4f0e-4d7e-8d43-9f0f4bbd9c11"},
    ],
)
def test_a_committee_body_never_carries_v2_owned_fields(extra: dict[str, Any]) -> None:
    fields = map_committee(committee(**extra))
    assert not {"sso_group_name", "is_audit", "project_uid", *COMMITTEE_READ_ONLY} & set(
        fields.body
    )


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"sfid": None}, "committee: sfid missing"),
        ({"sfid": ""}, "committee: sfid missing"),
        ({"sfid": "{3f0c2a8e}"}, "committee: sfid missing"),
        ({"mailing_list__c": None}, "mailing_list__c missing or blank"),
        ({"mailing_list__c": "  "}, "mailing_list__c missing or blank"),
        ({"mailing_list__c": 5}, "mailing_list__c missing or blank"),
        ({"project_name__c": None}, "project_name__c missing"),
        ({"project_name__c": ""}, "project_name__c missing"),
        ({"project_name__c": "The Linux Foundation"}, "project_name__c missing or not an 18"),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else None,
)
def test_a_committee_v2_cannot_take_is_an_invalid_record(
    changes: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(InvalidRecord) as raised:
        map_committee(committee(**changes))
    assert complaint in raised.value.message


@pytest.mark.parametrize("column", ["sfid", "mailing_list__c", "project_name__c"])
def test_a_committee_without_a_required_column_is_an_invalid_record(column: str) -> None:
    record = committee()
    del record[column]
    with pytest.raises(InvalidRecord, match=column):
        map_committee(record)


@pytest.mark.parametrize(
    ("column", "v2_field", "limit"),
    [
        ("mailing_list__c", "name", 100),
        ("public_name", "display_name", 100),
        ("description__c", "description", 2000),
    ],
)
def test_committee_texts_are_truncated_to_the_v2_limit_with_a_warning(
    column: str, v2_field: str, limit: int
) -> None:
    at_limit = map_committee(committee(**{column: "é" * limit}))
    assert at_limit.body[v2_field] == "é" * limit
    assert v2_field not in warned_fields(at_limit.warnings)
    over = map_committee(committee(**{column: "B" + "é" * limit}))
    assert over.body[v2_field] == "B" + "é" * (limit - 1)
    assert len(over.body[v2_field]) == limit
    assert warned_fields(over.warnings).count(v2_field) == 1
    assert f"truncated to {limit}" in over.warnings[0]


def test_a_committee_name_is_trimmed_before_it_is_truncated() -> None:
    fields = map_committee(committee(mailing_list__c=" " * 150 + "Board"))
    assert fields.body["name"] == "Board"
    assert warned_fields(fields.warnings).count("name") == 1


@pytest.mark.parametrize(
    ("changes", "column", "v2_field"),
    [
        ({"description__c": 3}, "description__c", "description"),
        ({"public_name": ["Board"]}, "public_name", "display_name"),
    ],
)
def test_committee_non_string_text_is_dropped(
    changes: dict[str, Any], column: str, v2_field: str
) -> None:
    fields = map_committee(committee(**changes))
    assert v2_field not in fields.body
    assert warned_fields(fields.warnings) == [v2_field, "website"]
    assert column in fields.warnings[0]


@pytest.mark.parametrize("category", sorted(V2_COMMITTEE_CATEGORIES))
def test_every_v2_committee_category_passes_unchanged(category: str) -> None:
    fields = map_committee(committee(type__c=category))
    assert fields.body["category"] == category
    assert "category" not in warned_fields(fields.warnings)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("board", "Board"),
        ("TECHNICAL STEERING COMMITTEE", "Technical Steering Committee"),
        ("Marketing Committee/Sub  Committee", "Marketing Committee/Sub Committee"),
        ("Bogus", "Other"),
        ("Governing Board", "Other"),
        ("", "Other"),
        (None, "Other"),
        (7, "Other"),
    ],
)
def test_a_committee_category_outside_the_enum_is_other_with_a_warning(
    value: Any, expected: str
) -> None:
    fields = map_committee(committee(type__c=value))
    assert fields.body["category"] == expected
    assert warned_fields(fields.warnings).count("category") == 1


def test_a_committee_without_a_type_column_is_other_with_a_warning() -> None:
    record = committee()
    del record["type__c"]
    fields = map_committee(record)
    assert fields.body["category"] == "Other"
    assert "category" in warned_fields(fields.warnings)


@pytest.mark.parametrize(
    ("column", "v2_field"),
    [
        ("enable_voting__c", "enable_voting"),
        ("public_enabled", "public"),
        ("sso_group_enabled", "sso_group_enabled"),
    ],
)
@pytest.mark.parametrize(
    ("value", "expected", "warned"),
    [(True, True, False), (False, False, False), ("true", "absent", True), (1, "absent", True)],
)
def test_committee_booleans_are_real_booleans_only(
    column: str, v2_field: str, value: Any, expected: Any, warned: bool
) -> None:
    fields = map_committee(committee(**{column: value}))
    assert fields.body.get(v2_field, "absent") == expected
    assert type(fields.body.get(v2_field, "absent")) is type(expected)
    assert (v2_field in warned_fields(fields.warnings)) is warned


@pytest.mark.parametrize(
    ("value", "expected", "warned"),
    [
        ("https://lists.example.org/g/board", "https://lists.example.org/g/board", False),
        ("lists.example.org/g/board", "https://lists.example.org/g/board", True),
        ("nil", "absent", False),
        ("", "absent", False),
        ("the mailing list", "absent", True),
    ],
)
def test_the_committee_website_is_cleaned_up(value: str, expected: str, warned: bool) -> None:
    fields = map_committee(committee(committee_website__c=value))
    assert fields.body.get("website", "absent") == expected
    assert ("website" in warned_fields(fields.warnings)) is warned


# --- Updates: merge_over and needs_update -----------------------------------------------

CURRENT_PROJECT = {
    "uid": "0b2c7a43-4f0e-4d7e-8d43-9f0f4bbd9c11",
    "created_at": "2025-01-01T00:00:00Z",
    "updated_at": "2025-06-01T00:00:00Z",
    "name": "The Linux Foundation",
    "slug": "tlf",
    "description": "An umbrella foundation.",
    "parent_uid": "0b2c7a43-4f0e-4d7e-8d43-9f0f4bbd9c00",
    "public": True,
    "autojoin_enabled": True,
    "mission_statement": "Open source, together.",  # V2 only
    "category": "Active",  # V2 only
    "logo_url": None,
}


def test_merge_over_lays_v1_over_the_current_v2_record() -> None:
    merged = merge_over(
        CURRENT_PROJECT,
        {"name": "LF", "public": False, "autojoin_enabled": False, "description": ""},
        PROJECT_READ_ONLY,
    )
    assert merged == {
        "name": "LF",
        "slug": "tlf",
        "description": "",  # "" wins
        "parent_uid": "0b2c7a43-4f0e-4d7e-8d43-9f0f4bbd9c00",
        "public": False,  # False wins
        "autojoin_enabled": False,
        "mission_statement": "Open source, together.",  # V2-only kept
        "category": "Active",
    }


def test_merge_over_never_sends_read_only_fields_even_from_v1() -> None:
    merged = merge_over(
        CURRENT_PROJECT, {"uid": "x", "updated_at": "y", "name": "LF"}, PROJECT_READ_ONLY
    )
    assert not PROJECT_READ_ONLY & set(merged)
    assert merged["name"] == "LF"


def test_merge_over_drops_committee_read_only_fields() -> None:
    current = {
        "uid": "0b2c7a43-4f0e-4d7e-8d43-9f0f4bbd9c11",
        "project_uid": "0b2c7a43-4f0e-4d7e-8d43-9f0f4bbd9c00",
        "project_name": "The Linux Foundation",
        "sso_group_name": "tlf-board",
        "total_members": 12,
        "name": "Governing Board",
        "category": "Board",
        "requires_review": True,
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
    }
    merged = merge_over(current, map_committee(committee()).body, COMMITTEE_READ_ONLY)
    assert merged == {
        "project_uid": "0b2c7a43-4f0e-4d7e-8d43-9f0f4bbd9c00",
        "name": "Governing Board",
        "category": "Board",
        "requires_review": True,
        "description": "The board.",
        "display_name": "Governing Board",
        "website": "https://lists.example.org/g/board",
        "enable_voting": True,
        "public": True,
        "sso_group_enabled": False,
    }


def test_merge_over_leaves_its_inputs_alone() -> None:
    current = dict(CURRENT_PROJECT)
    v1 = {"name": "LF"}
    merge_over(current, v1, PROJECT_READ_ONLY)
    assert current == CURRENT_PROJECT
    assert v1 == {"name": "LF"}


@pytest.mark.parametrize(
    ("v1_fields", "expected"),
    [
        ({}, False),
        ({"name": "The Linux Foundation", "public": True}, False),
        ({"logo_url": None}, False),  # null and absent are the same
        ({"name": "LF"}, True),
        ({"public": False}, True),
        ({"description": ""}, True),
        ({"website_url": "https://www.linuxfoundation.org"}, True),  # a new field
    ],
)
def test_needs_update_after_merge(v1_fields: dict[str, Any], expected: bool) -> None:
    desired = merge_over(CURRENT_PROJECT, v1_fields, PROJECT_READ_ONLY)
    assert needs_update(CURRENT_PROJECT, desired, PROJECT_READ_ONLY) is expected


@pytest.mark.parametrize(
    ("current", "desired", "expected"),
    [
        ({"uid": "a", "name": "x"}, {"uid": "b", "name": "x"}, False),  # read-only ignored
        ({"updated_at": "t1", "name": "x"}, {"name": "x"}, False),
        ({"public": True}, {"public": 1}, True),  # a boolean is not a number
        ({"public": False}, {"public": 0}, True),
        ({"n": 1}, {"n": 1.0}, False),
        ({"tags": ["a", "b"]}, {"tags": ["a", "b"]}, False),
        ({"tags": ["a", "b"]}, {"tags": ["b", "a"]}, True),
        ({"tags": [True]}, {"tags": [1]}, True),
        ({"meta": {"a": False}}, {"meta": {"a": False}}, False),
        ({"meta": {"a": False}}, {"meta": {"a": 0}}, True),
        ({"meta": {"a": 1}}, {"meta": {"a": 1, "b": 2}}, True),
        ({"name": "x", "mission_statement": "m"}, {"name": "x"}, True),  # a full-base PUT clears
        ({"name": "x", "logo_url": None}, {"name": "x"}, False),
    ],
)
def test_needs_update_compares_like_json(
    current: dict[str, Any], desired: dict[str, Any], expected: bool
) -> None:
    assert needs_update(current, desired, PROJECT_READ_ONLY) is expected


def test_read_only_sets_are_the_contract_ones() -> None:
    assert frozenset({"uid", "created_at", "updated_at"}) == PROJECT_READ_ONLY
    assert {"uid", "sso_group_name", "project_name", "total_members"} <= COMMITTEE_READ_ONLY
    assert {"name", "category", "project_uid", "public"}.isdisjoint(COMMITTEE_READ_ONLY)


# --- Properties --------------------------------------------------------------------

PROJECT_COLUMNS = [
    "sfid", "name", "slug__c", "description__c", "public__c", "parent_project__c",
    "formation_date__c", "start_date__c", "legal_entity_name__c", "project_entity_name__c",
    "legal_entity_type__c", "category__c", "logo_url__c", "project_logo__c",
    "repository_url__c", "repositoryurl__c", "website_url__c", "website__c", "stage__c",
    "project_status__c", "charter_url__c", "charterurl__c", "autojoin_enabled__c",
    "auto_join_enabled__c", "isdeleted", "_sdc_deleted_at",
]  # fmt: skip
COMMITTEE_COLUMNS = [
    "sfid", "mailing_list__c", "project_name__c", "description__c", "type__c",
    "committee_website__c", "enable_voting__c", "sso_group_enabled", "sso_group_name",
    "public_enabled", "public_name", "is_audit",
]  # fmt: skip

URL_ISH_ALPHABET = string.ascii_letters + string.digits + "-_./:%?#@[]"
# Values like the ones V1 columns hold, and the ones they should not.
v1_texts = st.sampled_from(
    [
        "a0941000002wBz9AAE", "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a", "TLF", "Board", "Active",
        "Incorporated Entity", "active", "nil", "", " ", "github.com/x", " www.example.org",
        "https://example.org/ü", "2020-03-01T00:00:00+00:00", "2025-11-27T18:01:25",
        "2025-11-27T18:01:25Z", "2020-02-30", "true", "x" * 2500,
    ]
)  # fmt: skip
v1_texts |= st.text(max_size=30) | st.text(alphabet=URL_ISH_ALPHABET, max_size=30)
v1_values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | v1_texts
    | st.dates()
    | st.datetimes(timezones=st.just(UTC))
    | st.lists(st.text(max_size=3), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


def records_with(columns: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Records with any subset of ``columns`` (plus odd ones) holding any V1-ish value."""
    known = st.dictionaries(st.sampled_from(columns), v1_values, max_size=len(columns))
    odd = st.dictionaries(st.text(max_size=10), v1_values, max_size=3)
    return st.builds(lambda a, b: {**b, **a}, known, odd)


@given(records_with(PROJECT_COLUMNS))
@settings(deadline=None, max_examples=400)
def test_map_project_returns_a_contract_body_or_raises_invalid_record(
    record: dict[str, Any],
) -> None:
    try:
        fields = map_project(record)
    except InvalidRecord:
        return
    assert_project_body_meets_contract(fields)


@given(
    st.fixed_dictionaries(
        {
            "sfid": st.just("a0941000002wBz9AAE"),
            "name": st.just("The Linux Foundation"),
            "slug__c": st.just("tlf"),
        }
    ),
    records_with(PROJECT_COLUMNS[3:]),
)
@settings(deadline=None, max_examples=400)
def test_a_project_with_its_required_fields_always_maps(
    required: dict[str, Any], rest: dict[str, Any]
) -> None:
    # Only the parent can still make it invalid: it must be a V1 id or nothing.
    parent = rest.get("parent_project__c")
    assume(
        parent is None
        or (isinstance(parent, str) and not parent.strip())
        or (isinstance(parent, str) and is_v1_id(parent.strip()))
    )
    assume(parent != required["sfid"])
    fields = map_project({**rest, **required})
    assert_project_body_meets_contract(fields)


@given(records_with(COMMITTEE_COLUMNS))
@settings(deadline=None, max_examples=400)
def test_map_committee_returns_a_contract_body_or_raises_invalid_record(
    record: dict[str, Any],
) -> None:
    try:
        fields = map_committee(record)
    except InvalidRecord:
        return
    assert_committee_body_meets_contract(fields)


@given(st.text(max_size=60) | v1_texts)
@settings(deadline=None, max_examples=500)
def test_clean_url_gives_a_contract_uri_and_is_idempotent(value: str) -> None:
    url, problem = clean_url(value)
    if url is None:
        return
    assert problem is None
    assert is_contract_uri(url), url
    assert clean_url(url) == (url, None)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(
        ["%Y-%m-%dT%H:%M:%S+00:00", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d",
         "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S-07:00"]
    ),
)  # fmt: skip
@settings(deadline=None)
def test_every_v1_date_shape_gives_its_calendar_date(moment: datetime, shape: str) -> None:
    text = moment.strftime(shape)
    # strftime does not zero-pad years before 1000 on every platform
    assume(text[:4].isdigit() and text[4] == "-")
    assert to_date(text) == moment.date().isoformat()


writable = st.dictionaries(
    st.sampled_from(["name", "description", "public", "stage", "logo_url", "mission_statement"]),
    st.none() | st.booleans() | st.integers(0, 2) | st.sampled_from(["", "a", "b"]),
    max_size=6,
)


@given(writable, writable)
@settings(deadline=None, max_examples=300)
def test_needs_update_is_true_exactly_when_v1_changes_a_value(
    current: dict[str, Any], v1_fields: dict[str, Any]
) -> None:
    v1_fields = {key: value for key, value in v1_fields.items() if value is not None}
    current_with_read_only = {**current, "uid": "u", "updated_at": "t"}
    desired = merge_over(current_with_read_only, v1_fields, PROJECT_READ_ONLY)
    changes = any(
        current.get(key) is None or type(current[key]) is not type(value) or current[key] != value
        for key, value in v1_fields.items()
    )
    assert needs_update(current_with_read_only, desired, PROJECT_READ_ONLY) is changes
    assert all(desired[key] == value for key, value in v1_fields.items())
    assert not PROJECT_READ_ONLY & set(desired)
