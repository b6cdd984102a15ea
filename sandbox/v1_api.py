"""The fake V1 committee API (project service behind the LFX API gateway).

Enforces the contract of ``reverse-sync.md`` and writes every change into
``v1-objects`` as the Meltano loader would, so the forward path sees the
reverse path's writes come back (its echoes):

- ``POST   /project-service/v2/projects/{project_sfid}/committees`` -> 201 ``{"ID", …}``;
- ``PATCH  …/committees/{committee_sfid}`` -> 200; ``DELETE`` -> 204;
- ``POST   …/committees/{committee_sfid}/members`` -> **200** ``{"ID", "MemberID", …}``;
- ``PATCH  …/members/{member_id}`` -> 200; ``DELETE`` -> 204; ``member_id`` is the
  person's **contact id** (``MemberID``), never the member record's sfid.

Every call needs an Auth0 access token the sandbox's tenant issued (401
otherwise); the row V1 stores carries ``lastmodifiedbyid = {client_id}@clients``
of that token. Bodies are JSON objects with the PascalCase keys of the
reference, each a string (``null``: absent); ``Name`` is required on a
committee POST, ``Email`` on a member POST. A key the reference does not list
is refused (400): V1 would drop it silently, and a client sending one has a
bug the tests should see. A PATCH leaves absent keys unchanged. A committee
or member V1 does not have (or has deleted) is a 404.

The V1 state is ``v1-objects`` itself: committees and members created by the
sample loader can be patched and deleted like the fake's own. A delete is
written as the loader writes one: a PUT with ``_sdc_deleted_at`` and
``isdeleted``.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
import string
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from nats.aio.msg import Msg

from sandbox.api_error import ApiError
from sandbox.validation import COMMITTEE_CATEGORIES
from sync_core.kv_listing import PUT, kv_stream, kv_subject, last_per_subject, operation_of
from sync_core.nats_client import SyncNats
from tasks.errors import InvalidRecord
from tasks.mapping.codec import decode_value

COMMITTEE_PREFIX = "platform-collaboration__c."
MEMBER_PREFIX = "platform-community__c."
CLIENT_SUFFIX = "@clients"
SALESFORCE_ID = re.compile(r"^[A-Za-z0-9]{18}$")
UUID_ID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CONTACT_ID_PREFIX = "003"
ID_ALPHABET = string.ascii_letters + string.digits
KV_TIMEOUT = 10.0

# V1's committee categories: the V2 fake's, with V2's two technical ones as one value here.
V2_TECHNICAL_CATEGORIES = frozenset(
    {"Technical Oversight Committee", "Technical Advisory Committee"}
)
V1_CATEGORIES = (frozenset(COMMITTEE_CATEGORIES) - V2_TECHNICAL_CATEGORIES) | {
    "Technical Oversight Committee/Technical Advisory Committee"
}
# Body key -> the column of the V1 row it lands in.
COMMITTEE_COLUMNS = {
    "Name": "mailing_list__c",
    "Category": "type__c",
    "Description": "description__c",
    "CommitteeWebsite": "committee_website__c",
    "MailingList": "mailing_list_email",
    "ChatChannel": "chat_channel",
    "JoinMode": "join_mode",
    "SSOGroupName": "sso_group_name",
}
# Answer-only keys of a committee: column and default.
COMMITTEE_ANSWER_COLUMNS = {
    "SSOGroupEnabled": ("sso_group_enabled", False),
    "PublicEnabled": ("public_enabled", False),
    "PublicName": ("public_name", None),
}
MEMBER_COLUMNS = {
    "Email": "contactemail__c",
    "MemberID": "contact_name__c",
    "Title": "title",
    "Role": "role__c",
    "RoleStartDate": "start_date__c",
    "RoleEndDate": "end_date__c",
    "Status": "status__c",
    "AppointedBy": "appointed_by__c",
    "VotingStatus": "voting_status__c",
    "VotingStartDate": "voting_start_date__c",
    "VotingEndDate": "voting_end_date__c",
    "OrganizationID": "account__c",
}
# The person's names live on the contact, not on the member row.
CONTACT_KEYS = ("FirstName", "LastName")
MEMBER_DATE_KEYS = frozenset({"RoleStartDate", "RoleEndDate", "VotingStartDate", "VotingEndDate"})


def loader_time(now: datetime.datetime | None = None) -> str:
    """A time as Meltano writes it: ``2020-03-01T00:00:00+00:00``."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return moment.replace(microsecond=0).isoformat()


def _id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(18 - len(prefix)))


class V1CommitteeApi:
    """The fake's state: ``v1-objects`` through ``nats``, plus the contacts it knows.

    Parameters:
        nats: a blocking NATS handle (the sandbox's own connection).
        bucket: the ``v1-objects`` bucket.
    """

    def __init__(self, nats: SyncNats, bucket: str) -> None:
        self.nats = nats
        self.bucket = bucket
        self._lock = threading.Lock()
        # contact id -> {"Email", "FirstName", "LastName"}; V1's contact records.
        self.contacts: dict[str, dict[str, Any]] = {}
        # While the loader is held (``hold_loader``), V1's changes wait here
        # instead of reaching ``v1-objects``: key -> the row's stored form.
        self._unloaded: dict[str, bytes] | None = None

    # -- the loader -----------------------------------------------------------------

    def hold_loader(self) -> None:
        """From now on V1 keeps its changes to itself: a loader running late."""
        with self._lock:
            if self._unloaded is None:
                self._unloaded = {}

    def release_loader(self) -> int:
        """The loader catches up: every held change goes into ``v1-objects``; how many."""
        with self._lock:
            held, self._unloaded = self._unloaded or {}, None
            for key, value in held.items():
                self.nats.kv_put(self.bucket, key, value)
            return len(held)

    # -- committees ---------------------------------------------------------------

    def create_committee(self, project_sfid: str, body: object, client_id: str) -> dict[str, Any]:
        """POST: 201 with the new committee (``ID`` is its sfid, a UUID as in V1)."""
        _check_project(project_sfid)
        clean = validate_v1_committee_body(body, creating=True)
        sfid = str(uuid.uuid4())
        stamp = loader_time()
        row: dict[str, Any] = {
            "sfid": sfid,
            "project_name__c": project_sfid,
            "enable_voting__c": False,
            "sso_group_enabled": False,
            "public_enabled": False,
            "public_name": None,
            "isdeleted": False,
            "createddate": stamp,
        }
        row.update({COMMITTEE_COLUMNS[key]: value for key, value in clean.items()})
        with self._lock:
            self._write(COMMITTEE_PREFIX + sfid, row, client_id, stamp)
        return _committee_answer(row)

    def update_committee(
        self, project_sfid: str, committee_sfid: str, body: object, client_id: str
    ) -> dict[str, Any]:
        """PATCH: absent keys stay; 404 for a committee V1 lacks."""
        clean = validate_v1_committee_body(body, creating=False)
        with self._lock:
            row = self._committee(project_sfid, committee_sfid)
            row.update({COMMITTEE_COLUMNS[key]: value for key, value in clean.items()})
            self._write(COMMITTEE_PREFIX + committee_sfid, row, client_id)
        return _committee_answer(row)

    def delete_committee(self, project_sfid: str, committee_sfid: str, client_id: str) -> None:
        """DELETE: 204; the row is soft-deleted as the loader writes it."""
        with self._lock:
            row = self._committee(project_sfid, committee_sfid)
            self._soft_delete(COMMITTEE_PREFIX + committee_sfid, row, client_id)

    # -- members ------------------------------------------------------------------

    def create_member(
        self, project_sfid: str, committee_sfid: str, body: object, client_id: str
    ) -> dict[str, Any]:
        """POST: **200** with ``ID`` (the row's sfid) and ``MemberID`` (the contact id)."""
        clean = validate_v1_member_body(body, creating=True)
        with self._lock:
            self._committee(project_sfid, committee_sfid)
            contact_id = self._contact_for(clean)
            if self._member_row(committee_sfid, contact_id) is not None:
                raise ApiError(409, f"contact {contact_id} is already a member of this committee")
            sfid = str(uuid.uuid4())
            stamp = loader_time()
            row: dict[str, Any] = {
                "sfid": sfid,
                "collaboration_name__c": committee_sfid,
                "project_name__c": project_sfid,
                "isdeleted": False,
                "createddate": stamp,
            }
            row.update(member_columns(clean))
            row["contact_name__c"] = contact_id
            self._write(MEMBER_PREFIX + sfid, row, client_id, stamp)
            return self._member_answer(row)

    def update_member(
        self,
        project_sfid: str,
        committee_sfid: str,
        contact_id: str,
        body: object,
        client_id: str,
    ) -> dict[str, Any]:
        """PATCH ``members/{contact_id}``: 404 when the committee has no such contact."""
        clean = validate_v1_member_body(body, creating=False)
        with self._lock:
            key, row = self._member(project_sfid, committee_sfid, contact_id)
            if "MemberID" in clean and clean["MemberID"] != contact_id:
                raise ApiError(400, "MemberID cannot change: it names the member in the URL")
            row.update(member_columns(clean))
            self._update_contact(contact_id, clean)
            self._write(key, row, client_id)
            return self._member_answer(row)

    def delete_member(
        self, project_sfid: str, committee_sfid: str, contact_id: str, client_id: str
    ) -> None:
        """DELETE ``members/{contact_id}``: 204."""
        with self._lock:
            key, row = self._member(project_sfid, committee_sfid, contact_id)
            self._soft_delete(key, row, client_id)

    # -- V1's state -----------------------------------------------------------------

    def _get(self, key: str) -> dict[str, Any] | None:
        value = (self._unloaded or {}).get(key)
        if value is None:
            entry = self.nats.kv_get(self.bucket, key)
            value = entry.value if entry is not None else None
        if not value:
            return None
        try:
            # The loader writes JSON or msgpack rows; V1 itself knows them all.
            row = decode_value(value)
        except InvalidRecord:
            return None
        if row.get("isdeleted") or row.get("_sdc_deleted_at"):
            return None
        return row

    def _write(
        self, key: str, row: dict[str, Any], client_id: str, stamp: str | None = None
    ) -> None:
        moment = stamp or loader_time()
        row.update(
            {
                "lastmodifiedbyid": client_id + CLIENT_SUFFIX,
                "lastmodifieddate": moment,
                "systemmodstamp": moment,
                "_sdc_extracted_at": moment,
                "_sdc_received_at": moment,
            }
        )
        value = json.dumps(row, default=_iso).encode()
        if self._unloaded is not None:
            self._unloaded[key] = value
        else:
            self.nats.kv_put(self.bucket, key, value)

    def _soft_delete(self, key: str, row: dict[str, Any], client_id: str) -> None:
        stamp = loader_time()
        row.update({"isdeleted": True, "_sdc_deleted_at": stamp})
        self._write(key, row, client_id, stamp)

    def _committee(self, project_sfid: str, committee_sfid: str) -> dict[str, Any]:
        _check_project(project_sfid)
        row = (
            self._get(COMMITTEE_PREFIX + committee_sfid) if UUID_ID.match(committee_sfid) else None
        )
        if row is None or row.get("project_name__c") != project_sfid:
            raise ApiError(404, f"committee {committee_sfid} not found in project {project_sfid}")
        return row

    def _member(
        self, project_sfid: str, committee_sfid: str, contact_id: str
    ) -> tuple[str, dict[str, Any]]:
        self._committee(project_sfid, committee_sfid)
        found = self._member_row(committee_sfid, contact_id)
        if found is None:
            raise ApiError(
                404, f"committee {committee_sfid} has no member with contact id {contact_id}"
            )
        return found

    def _member_row(
        self, committee_sfid: str, contact_id: str
    ) -> tuple[str, dict[str, Any]] | None:
        """The live row of ``contact_id`` in the committee (a scan, as a fake may)."""
        if not SALESFORCE_ID.match(contact_id):
            return None
        held = [key for key in self._unloaded or {} if key.startswith(MEMBER_PREFIX)]
        for key in [*self.nats.run(self._member_keys(), KV_TIMEOUT), *held]:
            row = self._get(key)
            if (
                row is not None
                and row.get("collaboration_name__c") == committee_sfid
                and row.get("contact_name__c") == contact_id
            ):
                return key, row
        return None

    async def _member_keys(self) -> list[str]:
        """Every live member key of the bucket (one listing of its stream, deletes skipped)."""
        keys: list[str] = []
        start = len(kv_subject(self.bucket, ""))

        def note(msg: Msg, _meta: Msg.Metadata) -> None:
            if operation_of(msg.headers) == PUT:
                keys.append(msg.subject[start:])

        await last_per_subject(
            self.nats.js,
            kv_stream(self.bucket),
            kv_subject(self.bucket, MEMBER_PREFIX + ">"),
            note,
            headers_only=True,
        )
        return keys

    def _contact_for(self, clean: Mapping[str, Any]) -> str:
        """The contact the member is: ``MemberID`` when given, else found or made by e-mail."""
        contact_id = clean.get("MemberID")
        email = str(clean["Email"]).strip().lower()
        if contact_id is None:
            contact_id = next(
                (cid for cid, c in self.contacts.items() if c["Email"].lower() == email), None
            )
        if contact_id is None:
            contact_id = _id(CONTACT_ID_PREFIX)
        self.contacts.setdefault(contact_id, {"Email": clean["Email"]})
        self._update_contact(contact_id, clean)
        return str(contact_id)

    def _update_contact(self, contact_id: str, clean: Mapping[str, Any]) -> None:
        contact = self.contacts.setdefault(contact_id, {"Email": clean.get("Email", "")})
        for key in CONTACT_KEYS:
            if key in clean:
                contact[key] = clean[key]

    def _member_answer(self, row: Mapping[str, Any]) -> dict[str, Any]:
        answer = {"ID": row["sfid"], "CommitteeID": row["collaboration_name__c"]}
        answer.update({key: row.get(column) for key, column in MEMBER_COLUMNS.items()})
        contact = self.contacts.get(str(row.get("contact_name__c")), {})
        answer.update({key: contact.get(key) for key in CONTACT_KEYS})
        return answer


def _iso(value: object) -> str:
    """A msgpack row's timestamps (``datetime``) as the loader's JSON text."""
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _committee_answer(row: Mapping[str, Any]) -> dict[str, Any]:
    answer = {"ID": row["sfid"], "ProjectID": row["project_name__c"]}
    answer.update({key: row.get(column) for key, column in COMMITTEE_COLUMNS.items()})
    answer.update(
        {
            key: row.get(column, default)
            for key, (column, default) in COMMITTEE_ANSWER_COLUMNS.items()
        }
    )
    return answer


def member_columns(clean: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a V1 member row a member body sets (dates as the loader writes them)."""
    columns: dict[str, Any] = {}
    for key, value in clean.items():
        if key in MEMBER_COLUMNS:
            # V1 stores dates as the loader writes date-times.
            columns[MEMBER_COLUMNS[key]] = (
                f"{value}T00:00:00+00:00" if key in MEMBER_DATE_KEYS else value
            )
    return columns


def _check_project(project_sfid: str) -> None:
    if not SALESFORCE_ID.match(project_sfid):
        raise ApiError(404, f"project {project_sfid} not found")


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _strings(body: dict[str, Any], allowed: frozenset[str]) -> dict[str, str]:
    """The body's keys with string values (null: absent); unknown keys and other types: 400."""
    problems = [f"unknown key {key!r}" for key in body if key not in allowed]
    clean: dict[str, str] = {}
    for key, value in body.items():
        if key not in allowed or value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"{key} must be a string")
        else:
            clean[key] = value
    if problems:
        raise ApiError(400, "; ".join(problems))
    return clean


def validate_v1_committee_body(body: object, *, creating: bool) -> dict[str, str]:
    """The committee body as V1 takes it, or ``ApiError(400)`` naming every problem."""
    clean = _strings(_object(body), frozenset(COMMITTEE_COLUMNS))
    problems = []
    if creating and not clean.get("Name", "").strip():
        problems.append("Name is required")
    if "Category" in clean and clean["Category"] not in V1_CATEGORIES:
        problems.append(f"Category {clean['Category']!r} is not a V1 category")
    if "MailingList" in clean and not EMAIL.match(clean["MailingList"]):
        problems.append("MailingList must be an email address")
    if problems:
        raise ApiError(400, "; ".join(problems))
    return clean


def validate_v1_member_body(body: object, *, creating: bool) -> dict[str, str]:
    """The member body as V1 takes it, or ``ApiError(400)`` naming every problem."""
    clean = _strings(_object(body), frozenset({*MEMBER_COLUMNS, *CONTACT_KEYS}))
    problems = []
    if creating and "Email" not in clean:
        problems.append("Email is required")
    if "Email" in clean and not EMAIL.match(clean["Email"]):
        problems.append("Email must be an email address")
    for key in ("MemberID", "OrganizationID"):
        if key in clean and not SALESFORCE_ID.match(clean[key]):
            problems.append(f"{key} must be an 18-character V1 id")
    for key in MEMBER_DATE_KEYS & set(clean):
        if not DATE.match(clean[key]):
            problems.append(f"{key} must be YYYY-MM-DD")
    if problems:
        raise ApiError(400, "; ".join(problems))
    return clean
