"""The committee service's member rules, applied before the member is sent.

- ``voting.status`` ``None`` (any case) is refused on a committee with
  ``enable_voting``: the member syncs without ``voting`` (a warning), so V2
  keeps what it has.
- On a committee with ``enable_voting`` or ``business_email_required`` (its
  settings), a member needs ``organization.id`` or both ``organization.name``
  and ``organization.website``. V1 without one is a permanent error
  ``member_needs_organization``: one dead letter that says so, no retries in vain.

The committee (and its settings) is read only when a rule could apply: a
member with an organization and a voting status other than None costs nothing.
"""

from __future__ import annotations

from typing import Any

from tasks.clients.identity import Identity
from tasks.clients.v2 import V2Service
from tasks.errors import PermanentError

NONE_VOTING_STATUS = "none"
MEMBER_NEEDS_ORGANIZATION = "member_needs_organization"
SETTINGS_RESOURCE = "settings"


def has_organization(body: dict[str, Any]) -> bool:
    """Whether the member body names its organization the way the service requires."""
    organization = body.get("organization")
    if not isinstance(organization, dict):
        return False
    return bool(organization.get("id")) or bool(
        organization.get("name") and organization.get("website")
    )


def votes_none(body: dict[str, Any]) -> bool:
    """Whether the member body's ``voting.status`` is ``None`` (any case)."""
    voting = body.get("voting")
    status = voting.get("status") if isinstance(voting, dict) else None
    return isinstance(status, str) and status.strip().casefold() == NONE_VOTING_STATUS


def apply_member_rules(
    committees: V2Service,
    committee_uid: str,
    sfid: str,
    body: dict[str, Any],
    identity: Identity,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``body`` as the committee will accept it, and the warnings; raises when it never will."""
    check_voting, check_organization = votes_none(body), not has_organization(body)
    if not check_voting and not check_organization:
        return body, ()
    committee = committees.get(committee_uid, identity).record
    voting = committee.get("enable_voting") is True
    warnings: tuple[str, ...] = ()
    if check_voting and voting:
        body = {key: value for key, value in body.items() if key != "voting"}
        warnings = (
            "voting (from voting_status__c): 'None' is refused on a voting committee; "
            "voting left as V2 has it",
        )
    if check_organization:
        required = voting or _business_email_required(committees, committee_uid, identity)
        if required:
            reason = "voting" if voting else "business e-mail required"
            raise PermanentError(
                f"committee member {sfid}: committee {committee_uid} ({reason}) needs the "
                "member's organization and V1 has none (account__c)",
                kind=MEMBER_NEEDS_ORGANIZATION,
            )
    return body, warnings


def _business_email_required(committees: V2Service, uid: str, identity: Identity) -> bool:
    settings = committees.below(uid).get(SETTINGS_RESOURCE, identity).record
    return settings.get("business_email_required") is True
