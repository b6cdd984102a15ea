"""Compare what the sandbox holds with what the sample data set expects.

``differences(state)`` takes the sandbox state (``Sandbox`` tables or the JSON
of ``GET /_sandbox/state``) and returns one line per mismatch: a project or
committee missing or unexpected, a field with the wrong value, a field that
should have been dropped, the wrong parent or project, the wrong identity
recorded for the last write; a committee member missing from its committee
(found by its trimmed, lower-cased email), with a wrong field, or unexpected.
An empty list means the sync reached exactly the expected result.
"""

from __future__ import annotations

from typing import Any

from sandbox.samples import expected_writer, load_expected

WRITER_FIELDS = ("principal", "sub", "email", "on_behalf_of")


def _compare_fields(
    label: str, stored: dict[str, Any], expectation: dict[str, Any], problems: list[str]
) -> None:
    for name, value in expectation["fields"].items():
        if name not in stored:
            problems.append(f"{label}: {name} missing, expected {value!r}")
        elif stored[name] != value:
            problems.append(f"{label}: {name} is {stored[name]!r}, expected {value!r}")
    for name in expectation.get("dropped", []):
        if name in stored:
            problems.append(f"{label}: {name} should have been dropped, is {stored[name]!r}")


def _compare_writer(
    label: str,
    stored: dict[str, Any],
    expectation: dict[str, Any],
    client_id: str,
    problems: list[str],
) -> None:
    want = expected_writer(expectation, client_id)
    got = stored.get("_last_write") or {}
    for name in WRITER_FIELDS:
        if got.get(name) != want[name]:
            problems.append(
                f"{label}: last write {name} is {got.get(name)!r}, expected {want[name]!r}"
            )


def differences(
    state: dict[str, Any],
    expected: dict[str, Any] | None = None,
    heimdall_client_id: str | None = None,
) -> list[str]:
    """Every way ``state`` differs from the expectations (empty: all as expected).

    ``state`` needs ``root_uid``, ``projects``, ``committees`` and ``members``
    (uid -> record with ``_last_write``), as ``GET /_sandbox/state`` returns them.
    """
    expected = expected or load_expected()
    client_id = heimdall_client_id or expected["heimdall_client_id"]
    keys: dict[str, dict[str, Any]] = expected["keys"]
    projects: dict[str, dict[str, Any]] = state["projects"]
    committees: dict[str, dict[str, Any]] = state["committees"]
    root_uid = state["root_uid"]
    problems: list[str] = []

    uid_by_slug = {str(p.get("slug")): uid for uid, p in projects.items()}
    slug_by_sfid = {
        v["sfid"]: v["fields"]["slug"] for v in keys.values() if v.get("type") == "project"
    }
    expected_slugs = set(slug_by_sfid.values())
    for key, expectation in keys.items():
        if expectation.get("type") != "project":
            continue
        slug = expectation["fields"]["slug"]
        label = f"project {slug} ({key})"
        uid = uid_by_slug.get(slug)
        if uid is None:
            problems.append(f"{label}: not in the sandbox")
            continue
        stored = projects[uid]
        _compare_fields(label, stored, expectation, problems)
        parent_sfid = expectation["parent_sfid"]
        want_parent = (
            root_uid if parent_sfid is None else uid_by_slug.get(slug_by_sfid[parent_sfid])
        )
        if stored.get("parent_uid") != want_parent:
            problems.append(
                f"{label}: parent_uid is {stored.get('parent_uid')}, expected {want_parent} "
                f"({'ROOT' if parent_sfid is None else slug_by_sfid[parent_sfid]})"
            )
        _compare_writer(label, stored, expectation, client_id, problems)
    for uid, project in projects.items():
        if uid != root_uid and project.get("slug") not in expected_slugs:
            problems.append(f"project {project.get('slug')} ({uid}): not expected")

    committee_by_place = {
        (str(c.get("project_uid")), str(c.get("name"))): uid for uid, c in committees.items()
    }
    expected_places: set[tuple[str, str]] = set()
    for key, expectation in keys.items():
        if expectation.get("type") != "committee":
            continue
        project_slug = slug_by_sfid.get(expectation["project_sfid"], "?")
        name = expectation["fields"]["name"]
        label = f"committee {name!r} of {project_slug} ({key})"
        project_uid = uid_by_slug.get(project_slug)
        if project_uid is None:
            problems.append(f"{label}: its project is not in the sandbox")
            continue
        expected_places.add((project_uid, name))
        committee_uid = committee_by_place.get((project_uid, name))
        if committee_uid is None:
            problems.append(f"{label}: not in the sandbox")
            continue
        stored = committees[committee_uid]
        _compare_fields(label, stored, expectation, problems)
        _compare_writer(label, stored, expectation, client_id, problems)
    for place, uid in committee_by_place.items():
        if place not in expected_places:
            problems.append(f"committee {place[1]!r} ({uid}) of project {place[0]}: not expected")
    committee_uid_by_sfid = {
        expectation["sfid"]: committee_by_place.get(
            (
                uid_by_slug.get(slug_by_sfid.get(expectation["project_sfid"], "?"), ""),
                expectation["fields"]["name"],
            )
        )
        for expectation in keys.values()
        if expectation.get("type") == "committee"
    }
    _member_differences(keys, state.get("members", {}), committee_uid_by_sfid, client_id, problems)
    return problems


def _member_differences(
    keys: dict[str, dict[str, Any]],
    members: dict[str, dict[str, Any]],
    committee_uid_by_sfid: dict[str, str | None],
    client_id: str,
    problems: list[str],
) -> None:
    """Each expected member in its committee with its fields and writer; none unexpected."""
    by_place = {
        (str(m.get("committee_uid")), str(m.get("email", "")).strip().lower()): uid
        for uid, m in members.items()
    }
    expected_places: set[tuple[str, str]] = set()
    for key, expectation in keys.items():
        if expectation.get("type") != "committee_member":
            continue
        email = expectation["fields"]["email"]
        label = f"member {email} ({key})"
        committee_uid = committee_uid_by_sfid.get(expectation["committee_sfid"])
        if committee_uid is None:
            problems.append(f"{label}: its committee is not in the sandbox")
            continue
        place = (committee_uid, email.strip().lower())
        expected_places.add(place)
        uid = by_place.get(place)
        if uid is None:
            problems.append(f"{label}: not in the sandbox")
            continue
        _compare_fields(label, members[uid], expectation, problems)
        _compare_writer(label, members[uid], expectation, client_id, problems)
    for place, uid in by_place.items():
        if place not in expected_places:
            problems.append(f"member {place[1]} ({uid}) of committee {place[0]}: not expected")
