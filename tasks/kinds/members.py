"""V1 committee members (``platform-community__c``) as an ``ObjectKind`` of the shared path.

- **Parent.** ``collaboration_name__c`` holds the committee's sfid; its V2 uid
  comes from ``committee.sfid.{sfid}`` (missing: ``MissingMapping``
  ``missing_committee``, waiting on that key). The member collection lives
  under it: ``/committees/{committee_uid}/members``.
- **Body.** ``tasks.mapping.members.map_member`` (pure), then the names of the V1 user
  behind ``contact_name__c`` and of the organization behind ``account__c``
  (``complete_member``); a failed lookup leaves them out and still syncs.
- **Create.** ``X-Skip-Notification: true`` unless ``SYNC_MEMBER_NOTIFICATIONS``.
  A 409 (the committee has a member with that email, usually our own create
  whose answer or mapping write was lost) asks ``lfx.committee-api.list_members``
  for the committee's members and adopts the one with the same trimmed,
  lower-cased email, unless another V1 member record owns it.
- **Mappings.** ``committee_member.sfid.{sfid}`` = ``{committee_uid}:{member_uid}``,
  ``committee_member.uid.{member_uid}`` = sfid.
- **Moves.** A record whose committee changed is deleted from the old
  committee (``moved_from``: the shared path deletes it there) and created in the new one; the
  old reverse mapping becomes the tombstone. Killed anywhere in between, the
  next run deletes again (404: already gone) and creates or adopts.
"""

from __future__ import annotations

import logging
from typing import Any

from sync_core.keys import MEMBER_KEYS
from tasks.clients.identity import Identity
from tasks.clients.v2 import V2Service, members_of
from tasks.errors import MissingMapping, PermanentError, SlugConflict, TransientError
from tasks.kinds.base import (
    Desired,
    KindReport,
    KindRuntime,
    ObjectKind,
    Place,
    log_mapping_warnings,
    log_more_warnings,
)
from tasks.kinds.committees import COMMITTEE_SERVICE
from tasks.kinds.member_rules import apply_member_rules
from tasks.mapping.members import (
    MEMBER_READ_ONLY,
    MemberFields,
    MemberLookups,
    complete_member,
    map_member,
    normalized_email,
)
from tasks.stores.id_mappings import COMMITTEE_SFID, MEMBER_SFID, MEMBER_UID

log = logging.getLogger(__name__)


class MemberKind(ObjectKind):
    """Committee members in the V2 Committee Service."""

    keys = MEMBER_KEYS
    v2 = COMMITTEE_SERVICE
    read_only = MEMBER_READ_ONLY
    reference_columns = ("collaboration_name__c", "project_name__c")
    sfid_prefix = MEMBER_SFID
    uid_prefix = MEMBER_UID
    has_children = False
    uid_field = "member_uid"

    def desired(
        self, runtime: KindRuntime, record: dict[str, Any], identity: Identity, report: KindReport
    ) -> Desired:
        fields = map_member(record)
        report.sfid = fields.sfid
        committee_uid = runtime.mappings.committee_uid(fields.committee_sfid)
        if committee_uid is None:
            raise MissingMapping(
                f"committee {fields.committee_sfid} of the member has no V2 uid yet",
                kind="missing_committee",
                parent_key=COMMITTEE_SFID + fields.committee_sfid,
            )
        report.committee_uid = committee_uid
        body, warnings = complete_member(fields, lookups(runtime, fields))
        log_mapping_warnings(warnings, report)
        body, refused = apply_member_rules(
            self.top_service(runtime), committee_uid, fields.sfid, body, identity
        )
        log_more_warnings(refused, report)
        return Desired(sfid=fields.sfid, body=body, parent_uid=committee_uid)

    def service(self, runtime: KindRuntime, desired: Desired) -> V2Service:
        assert desired.parent_uid is not None  # desired() always sets the committee
        return self._members(runtime, desired.parent_uid)

    def locate(self, runtime: KindRuntime, sfid: str) -> Place | None:
        """The member's uid under its committee (the forward mapping holds both)."""
        place = runtime.mappings.member_place(sfid)
        if place is None:
            return None
        committee_uid, member_uid = place
        return Place(member_uid, self._members(runtime, committee_uid))

    def moved_from(self, runtime: KindRuntime, desired: Desired) -> Place | None:
        """The member in its old committee when ``collaboration_name__c`` changed."""
        place = runtime.mappings.member_place(desired.sfid)
        if place is None or place[0] == desired.parent_uid:
            return None
        old_committee, old_member = place
        return Place(
            old_member,
            self._members(runtime, old_committee),
            {"from_committee_uid": old_committee},
        )

    def mapped_uid(self, runtime: KindRuntime, desired: Desired) -> str | None:
        place = runtime.mappings.member_place(desired.sfid)
        if place is None or place[0] != desired.parent_uid:
            return None
        return place[1]

    def record_mappings(self, runtime: KindRuntime, desired: Desired, uid: str) -> None:
        assert desired.parent_uid is not None
        runtime.mappings.record_member(desired.sfid, desired.parent_uid, uid)

    def adopt_existing(
        self,
        runtime: KindRuntime,
        desired: Desired,
        identity: Identity,
        report: KindReport,
        conflict: SlugConflict,
    ) -> str:
        """The member of the committee with the same email, unless another V1 record owns it.

        Not listed yet (an index catching up) is transient; owned by another V1
        member record (two V1 records, one email, one committee) is permanent.
        """
        assert desired.parent_uid is not None
        email = normalized_email(str(desired.body["email"]))
        uid = next(
            (
                str(member["uid"])
                for member in runtime.list_members(desired.parent_uid)
                if isinstance(member.get("email"), str)
                and normalized_email(member["email"]) == email
                and isinstance(member.get("uid"), str)
                and member["uid"]
            ),
            None,
        )
        if uid is None:
            raise TransientError(
                "member create answered 409 but list_members has no member with that email",
                kind="conflict_unresolved",
                status=409,
            )
        owner = runtime.mappings.member_sfid(uid)
        if owner is not None and owner != desired.sfid:
            raise PermanentError(
                f"the committee's member {uid} with this email belongs to V1 member {owner}",
                kind="member_email_taken",
                status=409,
            )
        return uid

    def _members(self, runtime: KindRuntime, committee_uid: str) -> V2Service:
        return members_of(self.top_service(runtime), committee_uid, runtime.settings)


MEMBERS = MemberKind()


def lookups(runtime: KindRuntime, fields: MemberFields) -> MemberLookups:
    """What the V1 user and organization services know of the member (cached)."""
    person = runtime.users.person(fields.contact_id) if fields.contact_id else None
    organization_name = (
        runtime.organizations.name_of(fields.organization_id) if fields.organization_id else None
    )
    return MemberLookups(
        username=person.username if person else None,
        first_name=person.first_name if person else None,
        last_name=person.last_name if person else None,
        organization_name=organization_name,
    )
