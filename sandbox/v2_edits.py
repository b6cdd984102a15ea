"""The V2 edit phase of ``make run``: a person edits a few committees and members in V2.

With ``SYNC_V2_TO_V1`` on, once the forward phases have settled, ``apply_edits``
makes ``EDITS`` through the sandbox's V2 HTTP API as ``PERSON`` (a sandbox
user's Heimdall JWT, never the service's identity), so the committee fakes
publish the indexer's events as for any write and the V2 -> V1 direction
carries each edit into V1. The edits are few and fixed: three committee
updates, two members added to a committee V1 has, one member's role and
voting status changed, one member removed, and a new committee (with one
member) in a project V1 knows.

``expected_after_edits`` turns the sample expectations (``expected.json``)
into what V2 must hold after the edits, so ``sandbox.sample_check`` keeps
checking V2 object by object; ``sandbox.edit_check`` checks what reached V1.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from sandbox.service import JWKS_PATH
from sync_core.keys import COMMITTEE_KEYS, MEMBER_KEYS
from tasks.clients.identity import Identity
from tasks.clients.tokens import TokenMinter
from tasks.clients.v2 import V2Service
from tasks.kinds.committees import COMMITTEE_AUDIENCE
from tasks.stores.id_mappings import MappingStore

# A V1 user of the sample set (users.json) who never writes a sample record, so
# that every V2 write of this principal is one of the edits.
PERSON = Identity(principal="member1", sub="member1", email="member1@example.org")
PERSON_WRITER = {
    "kind": "user",
    "principal": PERSON.principal,
    "sub": PERSON.sub,
    "email": PERSON.email,
    "on_behalf_of": None,
}
# The fields a committee or member GET returns that a PUT must not send back.
COMMITTEE_READ_ONLY = ("uid", "sso_group_name", "project_name", "total_members")
MEMBER_READ_ONLY = (
    "uid",
    "committee_uid",
    "committee_name",
    "committee_category",
    "created_at",
    "updated_at",
)
# Objects the edits create have no V1 key beforehand: their expectations go by these.
NEW_KEY_PREFIX = "v2-edit."
DELETE_SHAPE = "V2 delete"
V2_TIMEOUT = 10.0


class Action(enum.StrEnum):
    """What an edit does in V2 (and so which V1 write it must cause)."""

    UPDATE_COMMITTEE = "update_committee"
    CREATE_COMMITTEE = "create_committee"
    ADD_MEMBER = "add_member"
    UPDATE_MEMBER = "update_member"
    DELETE_MEMBER = "delete_member"


@dataclass(frozen=True)
class Edit:
    """One V2 write of the edit phase.

    ``target``: the sample key of the committee (updates, added members) or
    member (member update or delete), the project sfid of a new committee, or
    the ``key`` of a committee an earlier edit creates. ``v2_fields``: what the
    person sends (object values are merged into the current ones on an
    update). ``v1_columns``: what the V1 row must then hold, as the V1 API
    fake writes it. ``key``: the expectation key of an object the edit creates.
    """

    action: Action
    target: str
    v2_fields: Mapping[str, Any] = field(default_factory=dict)
    v1_columns: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None

    @property
    def label(self) -> str:
        """How problems and the summary name the edit."""
        what = self.key or self.target
        return f"V2 edit {self.action.value} {what}"


NODEJS_MAINTAINERS = "platform-collaboration__c.f02fd01c-6cb7-49f2-852e-dc2cd74e5710"
PROMETHEUS_SFID = "a0941000002BUmjAAG"
NEW_COMMITTEE = NEW_KEY_PREFIX + "committee.prometheus-documentation"
ACME = {"id": "0014100000PnjbRAAR", "name": "Acme Corporation"}

EDITS: tuple[Edit, ...] = (
    # cncf Marketing Committee: a new description.
    Edit(
        Action.UPDATE_COMMITTEE,
        "platform-collaboration__c.dabbdd98-a41f-4bf2-995c-bf94d2b5cbb4",
        {"description": "Plans KubeCon marketing and the CNCF blog (edited in V2)."},
        {"description__c": "Plans KubeCon marketing and the CNCF blog (edited in V2)."},
    ),
    # kubernetes Maintainers: gets a mailing list.
    Edit(
        Action.UPDATE_COMMITTEE,
        "platform-collaboration__c.6174f1f5-679e-4e10-8b0b-eae9b57bf848",
        {"mailing_list": "kubernetes-maintainers@lists.example.org"},
        {"mailing_list_email": "kubernetes-maintainers@lists.example.org"},
    ),
    # openjs Legal Committee: both.
    Edit(
        Action.UPDATE_COMMITTEE,
        "platform-collaboration__c.691d1f35-dbbb-4242-9b29-26b6dad5996c",
        {
            "description": "Reviews the OpenJS licences and trademarks.",
            "mailing_list": "openjs-legal@lists.example.org",
        },
        {
            "description__c": "Reviews the OpenJS licences and trademarks.",
            "mailing_list_email": "openjs-legal@lists.example.org",
        },
    ),
    # Two new members of nodejs Maintainers.
    Edit(
        Action.ADD_MEMBER,
        NODEJS_MAINTAINERS,
        {
            "email": "ada.lovelace@acme.example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "job_title": "Staff Engineer",
            "role": {"name": "Lead"},
            "voting": {"status": "Voting Rep"},
            "organization": ACME,
        },
        {
            "contactemail__c": "ada.lovelace@acme.example.com",
            "title": "Staff Engineer",
            "role__c": "Lead",
            "voting_status__c": "Voting Rep",
            "account__c": ACME["id"],
        },
        key=NEW_KEY_PREFIX + "member.nodejs-maintainers.ada.lovelace",
    ),
    Edit(
        Action.ADD_MEMBER,
        NODEJS_MAINTAINERS,
        {
            "email": "grace.hopper@example.net",
            "first_name": "Grace",
            "last_name": "Hopper",
            "role": {"name": "Developer Seat"},
            "voting": {"status": "Observer"},
        },
        {
            "contactemail__c": "grace.hopper@example.net",
            "role__c": "Developer Seat",
            "voting_status__c": "Observer",
        },
        key=NEW_KEY_PREFIX + "member.nodejs-maintainers.grace.hopper",
    ),
    # member19.okafor in prometheus Maintainers: Vice Chair and Observer -> Chair, Voting Rep.
    Edit(
        Action.UPDATE_MEMBER,
        "platform-community__c.6c845c3f-6ff6-4f3a-b92b-c998f61d1124",
        {"role": {"name": "Chair"}, "voting": {"status": "Voting Rep"}},
        {"role__c": "Chair", "voting_status__c": "Voting Rep"},
    ),
    # member26.kim leaves helm Maintainers.
    Edit(
        Action.DELETE_MEMBER,
        "platform-community__c.e6807cd0-34c8-4dd7-b0c5-e17990f355d4",
        {},
        {"isdeleted": True},
    ),
    # A new committee of prometheus, and its first member.
    Edit(
        Action.CREATE_COMMITTEE,
        PROMETHEUS_SFID,
        {
            "name": "Documentation Working Group",
            "category": "Working Group",
            "description": "Writes and reviews the Prometheus documentation.",
            "mailing_list": "prometheus-docs@lists.example.org",
        },
        {
            "mailing_list__c": "Documentation Working Group",
            "type__c": "Working Group",
            "project_name__c": PROMETHEUS_SFID,
            "description__c": "Writes and reviews the Prometheus documentation.",
            "mailing_list_email": "prometheus-docs@lists.example.org",
        },
        key=NEW_COMMITTEE,
    ),
    Edit(
        Action.ADD_MEMBER,
        NEW_COMMITTEE,
        {
            "email": "katherine.johnson@example.org",
            "first_name": "Katherine",
            "last_name": "Johnson",
            "role": {"name": "Chair"},
        },
        {"contactemail__c": "katherine.johnson@example.org", "role__c": "Chair"},
        key=NEW_KEY_PREFIX + "member.prometheus-documentation.katherine.johnson",
    ),
)


@dataclass
class AppliedEdit:
    """An edit as made: the V2 object it wrote (the uid of the member or committee)."""

    edit: Edit
    uid: str
    committee_uid: str | None = None


def sfid_of(key: str) -> str:
    """The sfid of a sample key (everything after the first ``.``)."""
    return key.partition(".")[2]


def merged(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with ``changes``; an object value is merged into the current object."""
    out = dict(current)
    for name, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(name), Mapping):
            out[name] = {**out[name], **value}
        else:
            out[name] = copy.deepcopy(value)
    return out


def edits_for(actions: tuple[Action, ...], edits: tuple[Edit, ...] = EDITS) -> list[Edit]:
    """The edits of some actions, in table order."""
    return [edit for edit in edits if edit.action in actions]


# -- making the edits ------------------------------------------------------------------


class PersonClient:
    """The sandbox's committee service as ``PERSON`` calls it (a Heimdall JWT of a user)."""

    def __init__(self, sandbox_url: str, heimdall_key: RSAPrivateKey, key_id: str) -> None:
        minter = TokenMinter(heimdall_key, key_id=key_id, jwks_url=sandbox_url + JWKS_PATH)
        self.committees = V2Service(
            sandbox_url,
            "committees",
            COMMITTEE_AUDIENCE,
            minter,
            timeout=V2_TIMEOUT,
            service="committee",
        )

    def members(self, committee_uid: str) -> V2Service:
        """The members collection of one committee."""
        return self.committees.collection_under(committee_uid, "members")

    def close(self) -> None:
        """Close the HTTP connections."""
        self.committees.close()


def apply_edits(
    client: PersonClient, mappings: MappingStore, edits: tuple[Edit, ...] = EDITS
) -> list[AppliedEdit]:
    """Make every edit in V2, in order; the V2 objects each one wrote.

    The objects are found by their V1 ids through ``v1-mappings`` (the forward
    path wrote them); a committee an earlier edit created, by its ``key``.
    Raises ``LookupError`` naming an edit whose object V2 does not have.
    """
    applied: list[AppliedEdit] = []
    created: dict[str, str] = {}  # an edit's key -> the uid it created
    for edit in edits:
        if edit.action is Action.CREATE_COMMITTEE:
            project_uid = _found(mappings.project_uid(edit.target), edit)
            body = {**edit.v2_fields, "project_uid": project_uid}
            uid = str(client.committees.create(body, PERSON)["uid"])
            applied.append(AppliedEdit(edit, uid))
        elif edit.action is Action.UPDATE_COMMITTEE:
            uid = _found(mappings.committee_uid(sfid_of(edit.target)), edit)
            current = client.committees.get(uid, PERSON)
            body = merged(_editable(current.record, COMMITTEE_READ_ONLY), edit.v2_fields)
            client.committees.update(uid, body, current.etag, PERSON)
            applied.append(AppliedEdit(edit, uid))
        elif edit.action is Action.ADD_MEMBER:
            committee_uid = created.get(edit.target) or _found(
                mappings.committee_uid(sfid_of(edit.target)), edit
            )
            member = client.members(committee_uid).create(dict(edit.v2_fields), PERSON)
            applied.append(AppliedEdit(edit, str(member["uid"]), committee_uid))
        else:
            place = mappings.member_place(sfid_of(edit.target))
            if place is None:
                raise LookupError(f"{edit.label}: the member has no V2 object")
            committee_uid, uid = place
            members = client.members(committee_uid)
            current = members.get(uid, PERSON)
            if edit.action is Action.UPDATE_MEMBER:
                body = merged(_editable(current.record, MEMBER_READ_ONLY), edit.v2_fields)
                members.update(uid, body, current.etag, PERSON)
            else:
                members.delete(uid, current.etag, PERSON)
            applied.append(AppliedEdit(edit, uid, committee_uid))
        if edit.key is not None:
            created[edit.key] = applied[-1].uid
    return applied


def _found(uid: str | None, edit: Edit) -> str:
    if uid is None:
        raise LookupError(f"{edit.label}: {edit.target} has no V2 object")
    return uid


def _editable(record: Mapping[str, Any], read_only: tuple[str, ...]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name not in read_only}


# -- what V2 holds after them ------------------------------------------------------------


def expected_after_edits(
    expected: dict[str, Any], edits: tuple[Edit, ...] = EDITS
) -> dict[str, Any]:
    """The sample expectations once the edits are made (a copy; ``expected`` is kept).

    Edited objects get the new values and ``PERSON`` as their last writer; the
    removed member is an accepted delete by ``PERSON`` (its mappings
    tombstoned); created objects are new expectations under their ``key``;
    ``counts`` follow, with one more phase. The delete outcome count grows by
    the removal: the V2 -> V1 run of it counts ``deleted`` as the forward runs do.
    """
    after = copy.deepcopy(expected)
    keys: dict[str, dict[str, Any]] = after["keys"]
    counts: dict[str, int] = after["counts"]
    counts["phases"] += 1
    for edit in edits:
        if edit.action in (Action.UPDATE_COMMITTEE, Action.UPDATE_MEMBER):
            entry = keys[edit.target]
            entry["fields"] = merged(entry["fields"], edit.v2_fields)
            entry["dropped"] = [n for n in entry.get("dropped", []) if n not in edit.v2_fields]
            entry["writer"] = dict(PERSON_WRITER)
        elif edit.action is Action.DELETE_MEMBER:
            keys[edit.target]["delete"] = {
                "shape": DELETE_SHAPE,
                "phase": counts["phases"],
                "accepted": True,
                "deleter": dict(PERSON_WRITER),
            }
            counts["members_in_v2"] -= 1
            counts["deleted"] += 1
        elif edit.action is Action.CREATE_COMMITTEE:
            assert edit.key is not None
            keys[edit.key] = {
                "outcome": "synced",
                "type": "committee",
                "sfid": edit.key,
                "project_sfid": edit.target,
                "fields": dict(edit.v2_fields),
                "dropped": [],
                "writer": dict(PERSON_WRITER),
            }
            counts["committees_in_v2"] += 1
        else:
            assert edit.key is not None
            committee = keys[edit.target]
            keys[edit.key] = {
                "outcome": "synced",
                "type": "committee_member",
                "sfid": edit.key,
                "committee_sfid": committee["sfid"],
                "fields": dict(edit.v2_fields),
                "dropped": [],
                "writer": dict(PERSON_WRITER),
            }
            counts["members_in_v2"] += 1
    return after


def v1_key_prefix(action: Action) -> str:
    """The ``v1-objects`` prefix of the V1 rows an action writes."""
    committee = action in (Action.UPDATE_COMMITTEE, Action.CREATE_COMMITTEE)
    return (COMMITTEE_KEYS if committee else MEMBER_KEYS).prefix
