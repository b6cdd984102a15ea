"""The in-memory state of the fake V2 services, with their business rules.

Projects, committees and committee members, keyed by UID, behind one lock.
Every write takes the next number of one global revision counter (as the
real services use their NATS KV revision) and records who made it in
``_last_write``. Internal fields start with ``_`` and are never sent back by
the API; the view shows them.
"""

from __future__ import annotations

import copy
import datetime
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sandbox.api_error import ApiError
from sandbox.user_objects import UserDirectory, no_directory, rewrite_users
from sandbox.validation import (
    PROJECT_SETTINGS_RULES,
    validate_body,
    validate_committee,
    validate_committee_settings,
    validate_member,
    validate_project,
    validate_project_settings,
)

ROOT_SLUG = "ROOT"
ROOT_NAME = "ROOT"
REVISION_FIELD = "_revision"
LAST_WRITE_FIELD = "_last_write"
# Whether the member's create asked V2 not to send the welcome e-mail (X-Skip-Notification).
SKIP_NOTIFICATION_FIELD = "_skip_notification"
STALE_REVISION_STATUSES = (400, 409, 412)
REVISION_MISMATCH_MESSAGE = "revision mismatch"
CROWDFUNDING = ["Crowdfunding"]
# Stale ETags on a committee DELETE: the committee service answers 409 or 412, never 400.
COMMITTEE_DELETE_STALE_STATUSES = (409, 412)
SEED_PRINCIPAL = "sandbox@clients"
# On a record of the ``deleted`` table: who deleted it, and which table it was in.
DELETED_BY_FIELD = "_deleted_by"
DELETED_FROM_FIELD = "_deleted_from"
# The member rules of voting and business-e-mail committees.
NONE_VOTING_STATUS = "none"
VOTING_NONE_REFUSED = 'voting_status "None" is not allowed on voting-enabled committees'
ORGANIZATION_REQUIRED = (
    "organization.id, or organization.name and organization.website, is required on "
    "committees with voting or business e-mail required"
)
_SSO_UNSAFE = re.compile(r"[^a-z0-9]+")
_WORD = re.compile(r"[a-z0-9]+")

Record = dict[str, Any]


@dataclass(frozen=True)
class Writer:
    """Who made a write: the verified JWT claims and the ``X-On-Behalf-Of`` header."""

    principal: str
    sub: str
    email: str | None
    on_behalf_of: str | None
    method: str

    @classmethod
    def from_claims(cls, claims: dict[str, Any], on_behalf_of: str | None, method: str) -> Writer:
        """The writer of a request whose bearer JWT carried ``claims``."""
        email = claims.get("email")
        return cls(
            principal=str(claims["principal"]),
            sub=str(claims["sub"]),
            email=str(email) if email else None,
            on_behalf_of=on_behalf_of or None,
            method=method,
        )

    def as_dict(self) -> dict[str, Any]:
        """The ``_last_write`` value stored with a record."""
        return {
            "principal": self.principal,
            "sub": self.sub,
            "email": self.email,
            "on_behalf_of": self.on_behalf_of,
            "method": self.method,
        }


SEED_WRITER = Writer(SEED_PRINCIPAL, SEED_PRINCIPAL.removesuffix("@clients"), None, None, "SEED")


def now_rfc3339() -> str:
    """The current UTC time as the services write it (``...Z``)."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def public_view(record: Record) -> Record:
    """A copy of ``record`` without the internal ``_`` fields: what the API returns."""
    return {k: copy.deepcopy(v) for k, v in record.items() if not k.startswith("_")}


def _internal(record: Record) -> Record:
    return {k: copy.deepcopy(v) for k, v in record.items() if k.startswith("_")}


def parse_if_match(value: str | None) -> int | None:
    """The revision of an ``If-Match`` header (``"5"``, ``5`` or ``W/"5"``); ``None`` if absent.

    A value that is not a decimal revision answers 400.
    """
    if value is None or not value.strip():
        return None
    text = value.strip().removeprefix("W/").strip().strip('"')
    if not text.isdigit():
        raise ApiError(400, f"If-Match must be a revision number, got {value!r}")
    return int(text)


def sso_group_name(project_slug: str, committee_name: str) -> str:
    """The SSO group name the committee service derives: ``{project-slug}-{name}`` slugified."""
    return _SSO_UNSAFE.sub("-", f"{project_slug}-{committee_name}".lower()).strip("-")


class V2Store:
    """Projects, committees and members with the services' rules; thread-safe."""

    def __init__(
        self, stale_revision_status: int = 409, crowdfunding_slugs: frozenset[str] = frozenset()
    ) -> None:
        """``crowdfunding_slugs``: projects created with these slugs are crowdfunded."""
        if stale_revision_status not in STALE_REVISION_STATUSES:
            raise ValueError(f"stale_revision_status must be one of {STALE_REVISION_STATUSES}")
        self.stale_revision_status = stale_revision_status
        # V1 does not send funding_model: projects created with these slugs get
        # ["Crowdfunding"], the only ones the project service lets us delete.
        self.crowdfunding_slugs = set(crowdfunding_slugs)
        self._lock = threading.RLock()
        self._revision = 0
        self.projects: dict[str, Record] = {}
        self.committees: dict[str, Record] = {}
        self.members: dict[str, Record] = {}
        # What clients deleted (not the members a committee delete took along), with
        # the deleter: the read-only view shows who deleted what; the API never does.
        self.deleted: dict[str, Record] = {}
        # The settings resources, by the project's or committee's uid, each with its
        # own revision; user objects are rewritten from ``user_directory`` on write.
        self.project_settings: dict[str, Record] = {}
        self.committee_settings: dict[str, Record] = {}
        self.user_directory: UserDirectory = no_directory
        # The query service's index is eventually consistent: a committee is
        # listed ``index_delay`` seconds after its create (monotonic clock).
        self.index_delay = 0.0
        self._indexed_at: dict[str, float] = {}
        self.root_uid = self._seed_root()

    # -- helpers -----------------------------------------------------------

    def _next_revision(self) -> int:
        self._revision += 1
        return self._revision

    def _seed_root(self) -> str:
        uid = str(uuid.uuid4())
        stamp = now_rfc3339()
        self.projects[uid] = {
            "uid": uid,
            "name": ROOT_NAME,
            "slug": ROOT_SLUG,
            "description": "The root of every V2 project.",
            "public": True,
            "created_at": stamp,
            "updated_at": stamp,
            REVISION_FIELD: self._next_revision(),
            LAST_WRITE_FIELD: SEED_WRITER.as_dict(),
        }
        return uid

    def _check_revision(
        self, record: Record, if_match: str | None, *, missing_is_stale: bool = False
    ) -> None:
        """A current ``If-Match`` or an error: a missing one is a 400, or stale for project PUTs."""
        revision = parse_if_match(if_match)
        if revision is None:
            if not missing_is_stale:
                raise ApiError(400, "If-Match header is required")
            raise self._stale("If-Match header is required: " + REVISION_MISMATCH_MESSAGE)
        if revision != record[REVISION_FIELD]:
            raise self._stale(REVISION_MISMATCH_MESSAGE)

    def _stale(self, message: str) -> ApiError:
        status = self.stale_revision_status
        if status == 400:
            return ApiError(400, message)
        return ApiError(status, message if status == 409 else "precondition failed: " + message)

    def _get(self, table: dict[str, Record], uid: str, what: str) -> Record:
        record = table.get(uid)
        if record is None:
            raise ApiError(404, f"{what} not found")
        return record

    def _stamp(self, record: Record, writer: Writer) -> None:
        record[REVISION_FIELD] = self._next_revision()
        record[LAST_WRITE_FIELD] = writer.as_dict()

    # -- lookups -------------------------------------------------------------

    def add_crowdfunding_slug(self, slug: str) -> None:
        """Projects created with ``slug`` from now on get ``funding_model: ["Crowdfunding"]``."""
        with self._lock:
            self.crowdfunding_slugs.add(slug)

    def revision_of(self, table: str, uid: str) -> int:
        """The current revision of a stored object (``table``: projects, committees, members)."""
        with self._lock:
            return int(getattr(self, table)[uid][REVISION_FIELD])

    def uid_for_slug(self, slug: str) -> str | None:
        """The UID of the project with exactly this slug (``ROOT`` included)."""
        with self._lock:
            for uid, project in self.projects.items():
                if project.get("slug") == slug:
                    return uid
        return None

    def snapshot(self) -> dict[str, dict[str, Record]]:
        """Deep copies of every table as the API shows them, plus the internal fields."""
        with self._lock:
            return {
                "projects": copy.deepcopy(self.projects),
                "committees": {
                    uid: {**self._committee_view(record), **_internal(record)}
                    for uid, record in self.committees.items()
                },
                "members": {
                    uid: {**self._member_view(record), **_internal(record)}
                    for uid, record in self.members.items()
                },
                "deleted": copy.deepcopy(self.deleted),
                "project_settings": copy.deepcopy(self.project_settings),
                "committee_settings": copy.deepcopy(self.committee_settings),
            }

    def _remember_deleted(self, table: str, record: Record, writer: Writer | None) -> None:
        """Keep the deleted ``record`` of ``table`` with its deleter (``None``: unknown)."""
        self.deleted[record["uid"]] = {
            **public_view(record),
            DELETED_FROM_FIELD: table,
            DELETED_BY_FIELD: writer.as_dict() if writer is not None else None,
        }

    # -- projects ----------------------------------------------------------

    def _check_project_links(self, body: Record, uid: str | None) -> None:
        for field in ("parent_uid", "legal_parent_uid"):
            target = body.get(field)
            if target is None:
                continue
            if target == uid:
                raise ApiError(400, f"{field} must not be the project itself")
            if target not in self.projects:
                raise ApiError(400, f"{field} {target} does not exist")
        owner = self.uid_for_slug(body["slug"])
        if owner is not None and owner != uid:
            raise ApiError(409, f"project with slug {body['slug']!r} already exists")

    def create_project(self, body: object, writer: Writer) -> Record:
        """``POST /projects``: 201 with the new project.

        The body may carry the settings fields too: they become the project's
        settings resource (the create answer shows the base only).
        """
        base, settings = _split(body, PROJECT_SETTINGS_RULES)
        clean = validate_project(base)
        settings_clean = validate_body(settings, PROJECT_SETTINGS_RULES)
        with self._lock:
            self._check_project_links(clean, None)
            uid = str(uuid.uuid4())
            stamp = now_rfc3339()
            if clean["slug"] in self.crowdfunding_slugs and "funding_model" not in clean:
                clean["funding_model"] = list(CROWDFUNDING)
            # The settings first: the base's revision is then the newest, as callers expect.
            self.project_settings[uid] = self._new_settings(uid, settings_clean, writer)
            record = {"uid": uid, **clean, "created_at": stamp, "updated_at": stamp}
            self._stamp(record, writer)
            self.projects[uid] = record
            return public_view(record)

    def get_project(self, uid: str) -> tuple[Record, int]:
        """``GET /projects/{uid}``: the project and its revision."""
        with self._lock:
            record = self._get(self.projects, uid, "project")
            return public_view(record), int(record[REVISION_FIELD])

    def update_project(
        self, uid: str, body: object, if_match: str | None, writer: Writer
    ) -> Record:
        """``PUT /projects/{uid}``: replace the base with ``body`` (not a patch)."""
        clean = validate_project(body)
        with self._lock:
            record = self._get(self.projects, uid, "project")
            self._check_revision(record, if_match, missing_is_stale=True)
            self._check_project_links(clean, uid)
            replaced = {
                "uid": uid,
                **clean,
                "created_at": record["created_at"],
                "updated_at": now_rfc3339(),
            }
            self._stamp(replaced, writer)
            self.projects[uid] = replaced
            return public_view(replaced)

    # -- settings resources ----------------------------------------------------

    def _new_settings(self, uid: str, clean: Record, writer: Writer) -> Record:
        stamp = now_rfc3339()
        record = {
            "uid": uid,
            **rewrite_users(clean, self.user_directory),
            "created_at": stamp,
            "updated_at": stamp,
        }
        self._stamp(record, writer)
        return record

    def _settings_of(
        self, table: dict[str, Record], owners: dict[str, Record], uid: str, what: str
    ) -> Record:
        """The settings of ``uid`` (made empty on first use for seeded objects)."""
        self._get(owners, uid, what)
        if uid not in table:
            table[uid] = self._new_settings(uid, {}, SEED_WRITER)
        return table[uid]

    def get_project_settings(self, uid: str) -> tuple[Record, int]:
        """``GET /projects/{uid}/settings``: the settings and their revision."""
        with self._lock:
            record = self._settings_of(self.project_settings, self.projects, uid, "project")
            return public_view(record), int(record[REVISION_FIELD])

    def update_project_settings(
        self, uid: str, body: object, if_match: str | None, writer: Writer
    ) -> Record:
        """``PUT /projects/{uid}/settings``: full replace, ``If-Match`` required (stale: 409)."""
        clean = validate_project_settings(body)
        with self._lock:
            record = self._settings_of(self.project_settings, self.projects, uid, "project")
            return self._replace_settings(self.project_settings, record, clean, if_match, writer)

    def get_committee_settings(self, uid: str) -> tuple[Record, int]:
        """``GET /committees/{uid}/settings``: the settings and their revision."""
        with self._lock:
            record = self._committee_settings(uid)
            return public_view(record), int(record[REVISION_FIELD])

    def update_committee_settings(
        self, uid: str, body: object, if_match: str | None, writer: Writer
    ) -> Record:
        """``PUT /committees/{uid}/settings``: full replace, ``If-Match`` required (stale: 409)."""
        clean = validate_committee_settings(body)
        with self._lock:
            record = self._committee_settings(uid)
            return self._replace_settings(self.committee_settings, record, clean, if_match, writer)

    def _committee_settings(self, uid: str) -> Record:
        record = self._settings_of(self.committee_settings, self.committees, uid, "committee")
        record.setdefault("business_email_required", False)
        return record

    def _replace_settings(
        self,
        table: dict[str, Record],
        record: Record,
        clean: Record,
        if_match: str | None,
        writer: Writer,
    ) -> Record:
        revision = parse_if_match(if_match)
        if revision is None:
            raise ApiError(400, "If-Match header is required")
        if revision != record[REVISION_FIELD]:
            raise ApiError(409, REVISION_MISMATCH_MESSAGE)
        replaced = {
            "uid": record["uid"],
            **rewrite_users(clean, self.user_directory),
            "created_at": record["created_at"],
            "updated_at": now_rfc3339(),
        }
        self._stamp(replaced, writer)
        table[record["uid"]] = replaced
        return public_view(replaced)

    def delete_project(self, uid: str, if_match: str | None, writer: Writer | None = None) -> None:
        """``DELETE /projects/{uid}``: a current ``If-Match`` (stale: 400 ``revision mismatch``).

        Refused (400) unless the project's ``funding_model`` is exactly ``["Crowdfunding"]``.
        """
        with self._lock:
            record = self._get(self.projects, uid, "project")
            revision = parse_if_match(if_match)
            if revision is None:
                raise ApiError(400, "If-Match header is required")
            if revision != record[REVISION_FIELD]:
                raise ApiError(400, REVISION_MISMATCH_MESSAGE)
            if record.get("funding_model") != CROWDFUNDING:
                raise ApiError(
                    400,
                    "only projects whose funding model is Crowdfunding can be deleted; "
                    f"project {record['slug']} has {record.get('funding_model') or []}",
                )
            del self.projects[uid]
            self.project_settings.pop(uid, None)
            self._remember_deleted("projects", record, writer)

    # -- committees ----------------------------------------------------------

    def _committee_view(self, record: Record) -> Record:
        view = public_view(record)
        project = self.projects.get(record["project_uid"], {})
        view["project_name"] = project.get("name", "")
        view["total_members"] = sum(
            1 for m in self.members.values() if m["committee_uid"] == record["uid"]
        )
        view["sso_group_name"] = (
            sso_group_name(str(project.get("slug", "")), record["name"])
            if record.get("sso_group_enabled")
            else ""
        )
        return view

    def _check_committee_links(self, body: Record, uid: str | None) -> None:
        if body["project_uid"] not in self.projects:
            raise ApiError(404, f"project {body['project_uid']} not found")
        parent = body.get("parent_uid")
        if parent is not None and (parent == uid or parent not in self.committees):
            raise ApiError(400, f"parent committee {parent} does not exist")
        for other_uid, other in self.committees.items():
            if (
                other_uid != uid
                and other["project_uid"] == body["project_uid"]
                and other["name"] == body["name"]
            ):
                raise ApiError(
                    409,
                    f"committee {body['name']!r} already exists in project {body['project_uid']}",
                )

    def create_committee(self, body: object, writer: Writer) -> Record:
        """``POST /committees``: 201 with the new committee; 404 for an unknown project.

        ``business_email_required`` in the body goes into the committee's settings.
        """
        clean = validate_committee(body)
        business_email = clean.pop("business_email_required", False)
        with self._lock:
            self._check_committee_links(clean, None)
            uid = str(uuid.uuid4())
            self.committee_settings[uid] = self._new_settings(
                uid, {"business_email_required": business_email}, writer
            )
            record = {"uid": uid, **clean}
            self._stamp(record, writer)
            self.committees[uid] = record
            self._indexed_at[uid] = time.monotonic() + self.index_delay
            return self._committee_view(record)

    def search_committees(self, project_uid: str | None, name_query: str) -> list[Record]:
        """The query service's committee search: indexed ones whose name matches by words.

        Like a typeahead, every word of ``name_query`` must start a word of the
        name (case-insensitive), so "Board" lists "Governing Board" and "Board
        of Advisors" alike; the client keeps the exact match.
        """
        words = _WORD.findall(name_query.lower())
        now = time.monotonic()
        with self._lock:
            found = []
            for uid, record in self.committees.items():
                if self._indexed_at.get(uid, 0.0) > now:
                    continue
                if project_uid is not None and record["project_uid"] != project_uid:
                    continue
                name_words = _WORD.findall(str(record["name"]).lower())
                if all(any(w.startswith(q) for w in name_words) for q in words):
                    found.append(self._committee_view(record))
            return sorted(found, key=lambda c: (c["name"], c["uid"]))

    def get_committee(self, uid: str) -> tuple[Record, int]:
        """``GET /committees/{uid}``: the committee and its revision."""
        with self._lock:
            record = self._get(self.committees, uid, "committee")
            return self._committee_view(record), int(record[REVISION_FIELD])

    def update_committee(
        self, uid: str, body: object, if_match: str | None, writer: Writer
    ) -> Record:
        """``PUT /committees/{uid}``: ``If-Match`` required (400 without it)."""
        clean = validate_committee(body)
        with self._lock:
            record = self._get(self.committees, uid, "committee")
            self._check_revision(record, if_match)
            self._check_committee_links(clean, uid)
            replaced = {"uid": uid, **clean}
            self._stamp(replaced, writer)
            self.committees[uid] = replaced
            return self._committee_view(replaced)

    def delete_committee(
        self, uid: str, if_match: str | None, writer: Writer | None = None
    ) -> None:
        """``DELETE /committees/{uid}``: removes its members too; stale is 409 or 412."""
        with self._lock:
            record = self._get(self.committees, uid, "committee")
            revision = parse_if_match(if_match)
            if revision is None:
                raise ApiError(400, "If-Match header is required")
            if revision != record[REVISION_FIELD]:
                status = self.stale_revision_status
                if status not in COMMITTEE_DELETE_STALE_STATUSES:
                    status = COMMITTEE_DELETE_STALE_STATUSES[0]
                raise ApiError(status, REVISION_MISMATCH_MESSAGE)
            del self.committees[uid]
            self.committee_settings.pop(uid, None)
            self._remember_deleted("committees", record, writer)
            for member_uid in [m for m, v in self.members.items() if v["committee_uid"] == uid]:
                del self.members[member_uid]

    # -- members -------------------------------------------------------------

    def _member_view(self, record: Record) -> Record:
        view = public_view(record)
        committee = self.committees.get(record["committee_uid"], {})
        view["committee_name"] = committee.get("name", "")
        view["committee_category"] = committee.get("category", "")
        return view

    def _check_member_email(self, committee_uid: str, email: str, uid: str | None) -> None:
        """The committee service's uniqueness: committee uid + lower(trim(email))."""
        wanted = email.strip().lower()
        for other_uid, other in self.members.items():
            if (
                other_uid != uid
                and other["committee_uid"] == committee_uid
                and other["email"].strip().lower() == wanted
            ):
                raise ApiError(409, f"member {email!r} already exists in this committee")

    def _check_member_rules(self, committee_uid: str, body: Record, stored: Record | None) -> None:
        """The committee service's member rules for voting and business-e-mail committees.

        ``voting.status`` None (any case) is refused on a voting committee, unless
        the stored member has it already; there, and where business e-mail is
        required, a member needs ``organization.id`` or its name and website.
        """
        committee = self.committees[committee_uid]
        voting = committee.get("enable_voting") is True
        settings = self.committee_settings.get(committee_uid, {})
        business = settings.get("business_email_required") is True
        status = (body.get("voting") or {}).get("status")
        stored_status = ((stored or {}).get("voting") or {}).get("status")
        if (
            voting
            and isinstance(status, str)
            and status.casefold() == NONE_VOTING_STATUS
            and not (
                isinstance(stored_status, str) and stored_status.casefold() == NONE_VOTING_STATUS
            )
        ):
            raise ApiError(400, VOTING_NONE_REFUSED)
        organization = body.get("organization") or {}
        named = organization.get("name") and organization.get("website")
        if (voting or business) and not (organization.get("id") or named):
            raise ApiError(400, ORGANIZATION_REQUIRED)

    def members_of(self, committee_uid: str) -> list[Record]:
        """The members of one committee as the API shows them (``list_members``)."""
        with self._lock:
            return [
                self._member_view(record)
                for record in self.members.values()
                if record["committee_uid"] == committee_uid
            ]

    def create_member(
        self, committee_uid: str, body: object, writer: Writer, *, skip_notification: bool = False
    ) -> Record:
        """``POST /committees/{uid}/members``: 201 with the new member; 404 unknown committee.

        ``skip_notification`` (the ``X-Skip-Notification: true`` header) is kept
        with the member as ``_skip_notification``.
        """
        clean = validate_member(body)
        with self._lock:
            self._get(self.committees, committee_uid, "committee")
            self._check_member_rules(committee_uid, clean, None)
            self._check_member_email(committee_uid, clean["email"], None)
            uid = str(uuid.uuid4())
            stamp = now_rfc3339()
            record = {
                "uid": uid,
                "committee_uid": committee_uid,
                **clean,
                "created_at": stamp,
                "updated_at": stamp,
                SKIP_NOTIFICATION_FIELD: skip_notification,
            }
            self._stamp(record, writer)
            self.members[uid] = record
            return self._member_view(record)

    def _member_of(self, committee_uid: str, uid: str) -> Record:
        self._get(self.committees, committee_uid, "committee")
        record = self._get(self.members, uid, "member")
        if record["committee_uid"] != committee_uid:
            raise ApiError(404, "member not found")
        return record

    def get_member(self, committee_uid: str, uid: str) -> tuple[Record, int]:
        """``GET /committees/{uid}/members/{member_uid}``."""
        with self._lock:
            record = self._member_of(committee_uid, uid)
            return self._member_view(record), int(record[REVISION_FIELD])

    def update_member(
        self, committee_uid: str, uid: str, body: object, if_match: str | None, writer: Writer
    ) -> Record:
        """``PUT /committees/{uid}/members/{member_uid}``: full body, ``If-Match`` required."""
        clean = validate_member(body)
        with self._lock:
            record = self._member_of(committee_uid, uid)
            self._check_revision(record, if_match)
            self._check_member_rules(committee_uid, clean, record)
            self._check_member_email(committee_uid, clean["email"], uid)
            replaced = {
                "uid": uid,
                "committee_uid": committee_uid,
                **clean,
                "created_at": record["created_at"],
                "updated_at": now_rfc3339(),
                SKIP_NOTIFICATION_FIELD: record.get(SKIP_NOTIFICATION_FIELD, False),
            }
            self._stamp(replaced, writer)
            self.members[uid] = replaced
            return self._member_view(replaced)

    def delete_member(
        self, committee_uid: str, uid: str, if_match: str | None, writer: Writer | None = None
    ) -> None:
        """``DELETE /committees/{uid}/members/{member_uid}``."""
        with self._lock:
            record = self._member_of(committee_uid, uid)
            self._check_revision(record, if_match)
            del self.members[uid]
            self._remember_deleted("members", record, writer)


def _split(body: object, rules: dict[str, Any]) -> tuple[object, Record]:
    """``body`` without the fields of ``rules``, and those fields (non-objects pass through)."""
    if not isinstance(body, dict):
        return body, {}
    inside = {k: v for k, v in body.items() if k in rules}
    return {k: v for k, v in body.items() if k not in rules}, inside
