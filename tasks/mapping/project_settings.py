"""V1 projects to the V2 project settings resource (``/projects/{uid}/settings``), pure.

The settings are a second V2 resource beside the base, with their own ETag.
V1 owns ``mission_statement``, ``announcement_date`` and three staff users
(``executive_director``, ``program_manager``, ``opportunity_owner``); V2 owns the
lists ``writers``, ``auditors`` and ``meeting_coordinators``, which the sync never
changes. ``map_project_settings`` reads the columns; the task looks the staff
ids up (``StaffLookups``) and ``complete_settings`` turns them into user objects.

A record that carries none of the settings columns has no settings (None): the
task then neither reads nor writes the resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.mapping.record_ids import is_v1_id
from tasks.mapping.values import EMAIL_PATTERN, BodyBuilder, FieldSource, clean_url, show

SETTINGS_MISSION = FieldSource("mission_statement", "mission_statement")


SETTINGS_ANNOUNCEMENT = FieldSource(
    "expected_announcement_date__c", "expected_announcement_date__c"
)


# Staff from the V1 user directory: V2 field -> column holding a V1 platform (contact) id.
SETTINGS_STAFF_FIELDS = {
    "executive_director": FieldSource("executive_director__c", "executive_director__c"),
    "program_manager": FieldSource("program_manager__c", "program_manager__c"),
}


# Staff from ``salesforce_b2b-User.{id}`` records: V2 field -> column holding a Salesforce user id.
SETTINGS_OWNER_FIELDS = {
    "opportunity_owner": FieldSource("opportunity_owner__c", "opportunity_owner__c"),
}


SETTINGS_COLUMNS: tuple[FieldSource, ...] = (
    SETTINGS_MISSION,
    SETTINGS_ANNOUNCEMENT,
    *SETTINGS_STAFF_FIELDS.values(),
    *SETTINGS_OWNER_FIELDS.values(),
)


USER_FIELDS = ("name", "email", "username", "avatar")


@dataclass(frozen=True)
class SettingsFields:
    """A V1 project's settings before the staff lookups.

    ``body`` holds the plain values; ``staff`` the V1 platform ids and ``owners``
    the Salesforce user ids to look up, by V2 field.
    """

    body: dict[str, Any]
    staff: dict[str, str]
    owners: dict[str, str]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class StaffMember:
    """What a directory knows of one person (empty strings: unknown)."""

    email: str = ""
    username: str = ""
    first_name: str = ""
    last_name: str = ""
    avatar: str = ""


def carries_settings(record: Mapping[str, Any]) -> bool:
    """Whether ``record`` has a settings column with a value (null counts as absent)."""
    return any(
        record.get(source.documented) is not None or record.get(source.real) is not None
        for source in SETTINGS_COLUMNS
    )


def map_project_settings(record: Mapping[str, Any]) -> SettingsFields | None:
    """The settings a V1 project record carries, or None when it carries none."""
    if not carries_settings(record):
        return None
    builder = BodyBuilder(record)
    builder.put_text("mission_statement", SETTINGS_MISSION, blank_is_absent=True)
    builder.put_date("announcement_date", SETTINGS_ANNOUNCEMENT)
    staff = _ids(builder, SETTINGS_STAFF_FIELDS)
    owners = _ids(builder, SETTINGS_OWNER_FIELDS)
    return SettingsFields(builder.body, staff, owners, tuple(builder.warnings))


def complete_settings(
    fields: SettingsFields, found: Mapping[str, StaffMember | None]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The V1-owned settings: ``fields.body`` plus a user object per staff member found.

    ``found`` maps a V2 field to what its lookup gave (None: failed, unknown or
    deleted): such a field is left out, so V2 keeps what it has. A person without
    a usable e-mail is left out too (V2 names users by e-mail), with a warning.
    """
    body = dict(fields.body)
    warnings = list(fields.warnings)
    for v2_field in (*fields.staff, *fields.owners):
        person = found.get(v2_field)
        if person is None:
            continue
        user = user_object(person)
        if user is None:
            warnings.append(f"{v2_field}: the V1 user has no usable e-mail address; left as in V2")
            continue
        body[v2_field] = user
    return body, tuple(warnings)


def user_object(person: StaffMember) -> dict[str, str] | None:
    """A V2 user object for ``person``, or None without a usable e-mail.

    The avatar goes only when it is a valid URI (V2 refuses others).
    """
    email = person.email.strip()
    if not EMAIL_PATTERN.fullmatch(email):
        return None
    avatar, problem = clean_url(person.avatar) if person.avatar.strip() else (None, None)
    name = " ".join(part.strip() for part in (person.first_name, person.last_name) if part.strip())
    return {
        "name": name,
        "email": email,
        "username": person.username.strip(),
        "avatar": avatar if avatar is not None and problem is None else "",
    }


def same_user(left: Any, right: Any) -> bool:
    """Whether two V2 user objects name the same person, as V2 would store them.

    V2 rewrites ``name``, ``avatar`` and ``username`` from its own directory by
    e-mail on every write, so the e-mail (case-insensitive) decides; a username
    V2 rewrote to its own spelling must not look like a change, or every run
    would PUT. Only when neither carries an e-mail do the usernames decide.
    """
    if not isinstance(left, Mapping) or not isinstance(right, Mapping):
        return False
    left_email, right_email = _lower(left.get("email")), _lower(right.get("email"))
    if left_email or right_email:
        return left_email == right_email
    left_name, right_name = _lower(left.get("username")), _lower(right.get("username"))
    return bool(left_name) and left_name == right_name


def _lower(value: Any) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def _ids(builder: BodyBuilder, sources: Mapping[str, FieldSource]) -> dict[str, str]:
    """The V1 ids of ``sources`` by V2 field; a value that is not an id is dropped (warning)."""
    ids: dict[str, str] = {}
    for v2_field, source in sources.items():
        column, value = builder.pick_present(source)
        if value is None:
            continue
        if not isinstance(value, str) or not is_v1_id(value.strip()):
            builder.warn(v2_field, column, f"{show(value)} is not an id; dropped")
            continue
        ids[v2_field] = value.strip()
    return ids
