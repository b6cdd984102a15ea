"""Compare what the sandbox holds with what the sample data set expects.

``differences(state)`` takes the sandbox state (``Sandbox`` tables or the JSON
of ``GET /_sandbox/state``) and returns one line per mismatch: a project or
committee missing or unexpected, a field with the wrong value, a field that
should have been dropped, the wrong parent or project, the wrong identity
recorded for the last write; a committee member missing from its committee
(found by its trimmed, lower-cased email), with a wrong field, or unexpected;
a project's or committee's settings resource without what V1 owns (user
objects compared by e-mail, since V2 rewrites their names and avatars).

Deletes: an object whose V1 delete V2 accepted must be gone from its table
and listed in the sandbox's ``deleted`` table with the expected deleter (the
principal rule); the members of a deleted committee must be gone with it; an
object whose delete V2 refused must still be there, as synced. Given the
``v1-mappings`` entries that ``expected_mappings(state)`` names, the
mappings are checked too: ``!del`` forward and reverse for each deleted
object (a re-put did not bring it back), the uid and sfid kept for each
refused one. An empty list means the sync reached exactly the expected result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.samples import (
    delete_accepted,
    expected_deleter,
    expected_writer,
    load_expected,
    stays_in_v2,
)

WRITER_FIELDS = ("principal", "sub", "email", "on_behalf_of")
TOMBSTONE = "!del"
DELETED_FROM = "_deleted_from"
DELETED_BY = "_deleted_by"
# v1-mappings prefixes (forward sfid -> uid, reverse uid -> sfid) per object type.
MAPPING_PREFIXES = {
    "project": ("project.sfid.", "project.uid."),
    "committee": ("committee.sfid.", "committee.uid."),
    "committee_member": ("committee_member.sfid.", "committee_member.uid."),
}


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


def _compare_identity(
    label: str, what: str, got: dict[str, Any] | None, want: dict[str, Any], problems: list[str]
) -> None:
    got = got or {}
    for name in WRITER_FIELDS:
        if got.get(name) != want[name]:
            problems.append(f"{label}: {what} {name} is {got.get(name)!r}, expected {want[name]!r}")


def _compare_writer(
    label: str,
    stored: dict[str, Any],
    expectation: dict[str, Any],
    client_id: str,
    problems: list[str],
) -> None:
    want = expected_writer(expectation, client_id)
    _compare_identity(label, "last write", stored.get("_last_write"), want, problems)


class _Places:
    """Where each expected object is (or was) in the sandbox: uids by slug, name, email."""

    def __init__(self, state: dict[str, Any], keys: dict[str, dict[str, Any]]) -> None:
        self.keys = keys
        self.root_uid = state["root_uid"]
        deleted: dict[str, dict[str, Any]] = state.get("deleted", {})
        self.deleted = deleted
        self.project_uid = {str(p.get("slug")): uid for uid, p in state["projects"].items()}
        self.deleted_project_uid = {
            str(p.get("slug")): uid for uid, p in deleted.items() if p[DELETED_FROM] == "projects"
        }
        self.slug_by_sfid = {
            v["sfid"]: v["fields"]["slug"] for v in keys.values() if v.get("type") == "project"
        }
        self.committee_uid = {
            (str(c.get("project_uid")), str(c.get("name"))): uid
            for uid, c in state["committees"].items()
        }
        self.deleted_committee_uid = {
            (str(c.get("project_uid")), str(c.get("name"))): uid
            for uid, c in deleted.items()
            if c[DELETED_FROM] == "committees"
        }
        self.member_uid = {
            (str(m.get("committee_uid")), _email(m.get("email"))): uid
            for uid, m in state.get("members", {}).items()
        }
        self.deleted_member_uid = {
            (str(m.get("committee_uid")), _email(m.get("email"))): uid
            for uid, m in deleted.items()
            if m[DELETED_FROM] == "members"
        }

    def project_of(self, sfid: str | None) -> str | None:
        """The uid of a project by sfid, wherever it is (live or deleted)."""
        slug = self.slug_by_sfid.get(sfid or "", "?")
        return self.project_uid.get(slug) or self.deleted_project_uid.get(slug)

    def committee_place(self, expectation: dict[str, Any]) -> tuple[str, str]:
        return (str(self.project_of(expectation["project_sfid"])), expectation["fields"]["name"])

    def committee_of(self, sfid: str) -> str | None:
        """The uid of a committee by sfid, wherever it is (live or deleted)."""
        expectation = next(
            (v for v in self.keys.values() if v.get("type") == "committee" and v["sfid"] == sfid),
            None,
        )
        if expectation is None:
            return None
        place = self.committee_place(expectation)
        return self.committee_uid.get(place) or self.deleted_committee_uid.get(place)

    def locate(self, expectation: dict[str, Any]) -> tuple[str | None, str | None]:
        """(live uid, deleted uid) of the object of a typed expectation."""
        kind = expectation["type"]
        if kind == "project":
            slug = expectation["fields"]["slug"]
            return self.project_uid.get(slug), self.deleted_project_uid.get(slug)
        if kind == "committee":
            place = self.committee_place(expectation)
            return self.committee_uid.get(place), self.deleted_committee_uid.get(place)
        member = (
            str(self.committee_of(expectation["committee_sfid"])),
            _email(expectation["fields"]["email"]),
        )
        return self.member_uid.get(member), self.deleted_member_uid.get(member)


def _email(value: Any) -> str:
    return str(value or "").strip().lower()


def _label(key: str, expectation: dict[str, Any], places: _Places) -> str:
    kind = expectation["type"]
    if kind == "project":
        return f"project {expectation['fields']['slug']} ({key})"
    if kind == "committee":
        project = places.slug_by_sfid.get(expectation["project_sfid"], "?")
        return f"committee {expectation['fields']['name']!r} of {project} ({key})"
    return f"member {expectation['fields']['email']} ({key})"


def differences(
    state: dict[str, Any],
    expected: dict[str, Any] | None = None,
    heimdall_client_id: str | None = None,
    mappings: Mapping[str, str | None] | None = None,
) -> list[str]:
    """Every way ``state`` differs from the expectations (empty: all as expected).

    ``state`` needs ``root_uid``, ``projects``, ``committees``, ``members``
    (uid -> record with ``_last_write``) and ``deleted`` (uid -> record with
    ``_deleted_from`` and ``_deleted_by``), as ``GET /_sandbox/state`` returns
    them. ``mappings``: the ``v1-mappings`` values of the keys
    ``expected_mappings`` names (``None`` for a missing key); without it the
    mappings are not checked.
    """
    expected = expected or load_expected()
    client_id = heimdall_client_id or expected["heimdall_client_id"]
    keys: dict[str, dict[str, Any]] = expected["keys"]
    places = _Places(state, keys)
    problems: list[str] = []
    for key, expectation in keys.items():
        if "type" not in expectation:
            continue
        label = _label(key, expectation, places)
        if expectation["type"] != "project" and _parent_missing(expectation, places):
            problems.append(f"{label}: its {_parent_word(expectation)} is not in the sandbox")
            continue
        live, deleted = places.locate(expectation)
        if stays_in_v2(expectation):
            _check_present(label, expectation, live, state, places, client_id, problems)
        elif delete_accepted(expectation):
            _check_deleted(label, expectation, live, deleted, state, client_id, problems)
        elif live is not None:
            problems.append(f"{label}: should be gone with its committee, is still there")
    _unexpected(state, keys, places, problems)
    if mappings is not None:
        for key, want in expected_mappings(state, expected).items():
            if mappings.get(key) != want:
                problems.append(f"mapping {key} is {mappings.get(key)!r}, expected {want!r}")
    return problems


def _parent_word(expectation: dict[str, Any]) -> str:
    return "project" if expectation["type"] == "committee" else "committee"


def _parent_missing(expectation: dict[str, Any], places: _Places) -> bool:
    if expectation["type"] == "committee":
        return places.project_of(expectation["project_sfid"]) is None
    return places.committee_of(expectation["committee_sfid"]) is None


def _check_present(
    label: str,
    expectation: dict[str, Any],
    uid: str | None,
    state: dict[str, Any],
    places: _Places,
    client_id: str,
    problems: list[str],
) -> None:
    if uid is None:
        problems.append(f"{label}: not in the sandbox")
        return
    table = {"project": "projects", "committee": "committees", "committee_member": "members"}
    stored = state[table[expectation["type"]]][uid]
    _compare_fields(label, stored, expectation, problems)
    if expectation["type"] == "project":
        parent_sfid = expectation["parent_sfid"]
        want_parent = places.root_uid if parent_sfid is None else places.project_of(parent_sfid)
        if stored.get("parent_uid") != want_parent:
            parent = "ROOT" if parent_sfid is None else places.slug_by_sfid[parent_sfid]
            problems.append(
                f"{label}: parent_uid is {stored.get('parent_uid')}, expected {want_parent} "
                f"({parent})"
            )
    if "settings" in expectation:
        settings_table = f"{expectation['type']}_settings"
        stored_settings = state.get(settings_table, {}).get(uid, {})
        _compare_settings(label, stored_settings, expectation["settings"], problems)
    _compare_writer(label, stored, expectation, client_id, problems)


def _compare_settings(
    label: str, stored: dict[str, Any], wanted: dict[str, Any], problems: list[str]
) -> None:
    """The settings V1 owns; a user object by its e-mail (V2 rewrites the rest)."""
    for name, value in wanted.items():
        got = stored.get(name)
        if isinstance(value, dict):
            same = isinstance(got, dict) and _email(got.get("email")) == _email(value["email"])
        else:
            same = got == value
        if not same:
            problems.append(f"{label}: settings {name} is {got!r}, expected {value!r}")


def _check_deleted(
    label: str,
    expectation: dict[str, Any],
    live: str | None,
    deleted: str | None,
    state: dict[str, Any],
    client_id: str,
    problems: list[str],
) -> None:
    shape = expectation["delete"]["shape"]
    if live is not None:
        again = " (re-created by the re-put)" if "reput_phase" in expectation else ""
        problems.append(f"{label}: deleted in V1 ({shape}) but still in the sandbox{again}")
        return
    if deleted is None:
        problems.append(f"{label}: not deleted through the V2 API ({shape})")
        return
    _compare_identity(
        label,
        "delete",
        state["deleted"][deleted].get(DELETED_BY),
        expected_deleter(expectation, client_id),
        problems,
    )


def _unexpected(
    state: dict[str, Any], keys: dict[str, dict[str, Any]], places: _Places, problems: list[str]
) -> None:
    """Objects in the sandbox that no expectation keeps there."""
    wanted: dict[str, set[Any]] = {"project": set(), "committee": set(), "committee_member": set()}
    for expectation in keys.values():
        if "type" in expectation and stays_in_v2(expectation):
            live, _ = places.locate(expectation)
            wanted[expectation["type"]].add(live)
    for uid, project in state["projects"].items():
        if uid != places.root_uid and uid not in wanted["project"]:
            problems.append(f"project {project.get('slug')} ({uid}): not expected")
    for uid, committee in state["committees"].items():
        if uid not in wanted["committee"]:
            problems.append(
                f"committee {committee.get('name')!r} ({uid}) of project "
                f"{committee.get('project_uid')}: not expected"
            )
    for uid, member in state.get("members", {}).items():
        if uid not in wanted["committee_member"]:
            problems.append(
                f"member {_email(member.get('email'))} ({uid}) of committee "
                f"{member.get('committee_uid')}: not expected"
            )


def expected_mappings(
    state: dict[str, Any], expected: dict[str, Any] | None = None
) -> dict[str, str]:
    """``v1-mappings`` key -> the value it must hold, for every key a V1 delete touched.

    Accepted: forward and reverse ``!del``. Refused: forward the live uid
    (``{committee_uid}:{member_uid}`` for members), reverse the sfid. Objects
    not found in ``state`` are left out (``differences`` reports them).
    """
    expected = expected or load_expected()
    keys: dict[str, dict[str, Any]] = expected["keys"]
    places = _Places(state, keys)
    wanted: dict[str, str] = {}
    for expectation in keys.values():
        if "delete" not in expectation:
            continue
        forward, reverse = MAPPING_PREFIXES[expectation["type"]]
        sfid = expectation["sfid"]
        live, deleted = places.locate(expectation)
        if delete_accepted(expectation):
            wanted[forward + sfid] = TOMBSTONE
            if deleted is not None:
                wanted[reverse + deleted] = TOMBSTONE
        elif live is not None:
            if expectation["type"] == "committee_member":
                wanted[forward + sfid] = f"{state['members'][live]['committee_uid']}:{live}"
            else:
                wanted[forward + sfid] = live
            wanted[reverse + live] = sfid
    return wanted
