"""The realistic V1 records of ``reference/v1-records.md``, verbatim, for tests.

Each is the JSON text as it sits in ``v1-objects``; ``record(...)`` gives a fresh
dict to vary.
"""

from __future__ import annotations

import json
from typing import Any

PROJECT_KEY = "salesforce-project__c.a0941000002wBz9AAE"
PROJECT_JSON = """
{"sfid": "a0941000002wBz9AAE", "name": "The Linux Foundation", "slug__c": "TLF",
 "description__c": "An umbrella foundation.", "project_status__c": "Active",
 "admin_category__c": null, "category__c": "Incorporated Entity",
 "parent_project__c": null, "project_entity_name__c": "The Linux Foundation",
 "start_date__c": "2000-01-01T00:00:00+00:00", "project_logo__c": "https://example.org/tlf.svg",
 "repositoryurl__c": "github.com/linuxfoundation", "website__c": " www.linuxfoundation.org",
 "charterurl__c": "nil", "auto_join_enabled__c": false, "isdeleted": false,
 "lastmodifiedbyid": "0032M00002XyZabQAB", "lastmodifieddate": "2025-11-19T21:04:05+00:00",
 "createddate": "2019-04-02T10:00:00+00:00", "systemmodstamp": "2025-11-19T21:04:05+00:00",
 "_sdc_extracted_at": "2025-11-19T21:05:00+00:00", "_sdc_received_at": "2025-11-19T21:05:01+00:00"}
"""

COMMITTEE_KEY = "platform-collaboration__c.3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a"
COMMITTEE_JSON = """
{"sfid": "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a", "mailing_list__c": "Governing Board",
 "project_name__c": "a0941000002wBz9AAE", "description__c": "The board.",
 "type__c": "Board", "committee_website__c": "lists.example.org/g/board",
 "enable_voting__c": true, "sso_group_enabled": false, "sso_group_name": null,
 "public_enabled": true, "public_name": "Governing Board",
 "lastmodifiedbyid": "v1_sync_helper@clients", "lastmodifieddate": "2025-11-20T08:00:00+00:00",
 "createddate": "2021-06-01T00:00:00+00:00"}
"""

MEMBER_KEY = "platform-community__c.51fde723-67df-4e0e-91c6-936d01d59559"
MEMBER_JSON = """
{"sfid": "51fde723-67df-4e0e-91c6-936d01d59559", "contact_name__c": "0031000001AbCdeAAB",
 "contactemail__c": "jane@example.com", "collaboration_name__c": "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a",
 "project_name__c": "a0941000002wBz9AAE", "account__c": "0014100000Te2ovAAB",
 "title": "CTO", "role__c": "Chair", "start_date__c": "2024-01-01T00:00:00+00:00",
 "end_date__c": null, "appointed_by__c": "Membership Entitlement", "status__c": "Active",
 "voting_status__c": "Voting Rep", "lastmodifiedbyid": "0032M00002XyZabQAB",
 "lastmodifieddate": "2025-11-21T09:00:00+00:00"}
"""  # noqa: E501 - verbatim from the reference


def record(text: str, **changes: Any) -> dict[str, Any]:
    """A fresh copy of an example record with ``changes`` applied."""
    return {**json.loads(text), **changes}


def project(**changes: Any) -> dict[str, Any]:
    """The example project (The Linux Foundation) with ``changes`` applied."""
    return record(PROJECT_JSON, **changes)


def committee(**changes: Any) -> dict[str, Any]:
    """The example committee (Governing Board) with ``changes`` applied."""
    return record(COMMITTEE_JSON, **changes)


# Every column of "More columns the V2 objects need" on top of the examples above
# (values illustrative; names and types exact).
PROJECT_FULL_JSON = """
{"sfid": "a0941000002wBz9AAE", "name": "The Linux Foundation", "slug__c": "TLF",
 "description__c": "An umbrella foundation.", "project_status__c": "Active",
 "admin_category__c": "Graduated", "category__c": "Incorporated Entity",
 "parent_project__c": null, "project_entity_name__c": "The Linux Foundation",
 "start_date__c": "2000-01-01T00:00:00+00:00", "project_logo__c": "https://example.org/tlf.svg",
 "repositoryurl__c": "github.com/linuxfoundation", "website__c": " www.linuxfoundation.org",
 "charterurl__c": "example.org/charter.pdf", "auto_join_enabled__c": true,
 "funding__c": "Funded", "model__c": "Membership; Alternate Funding",
 "project_entity_dissolution_date__c": "2030-06-30T00:00:00+00:00",
 "project_entity_formation_document__c": "docs.example.org/formation.pdf",
 "parent_entity_relationship__c": null,
 "mission_statement": "Open source for everyone.",
 "expected_announcement_date__c": "2025-09-01T00:00:00+00:00",
 "executive_director__c": "0032M00002XyZabQAB", "program_manager__c": "0032M00002PmAbcQAB",
 "opportunity_owner__c": "0054100000AbCdEAAZ",
 "isdeleted": false,
 "lastmodifiedbyid": "0032M00002XyZabQAB", "lastmodifieddate": "2025-11-19T21:04:05+00:00"}
"""

COMMITTEE_FULL_JSON = """
{"sfid": "3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a", "mailing_list__c": "Technical Advisory Council",
 "project_name__c": "a0941000002wBz9AAE", "description__c": "The TAC.",
 "type__c": "Technical Oversight Committee/Technical Advisory Committee",
 "committee_website__c": "lists.example.org/g/tac",
 "enable_voting__c": true, "sso_group_enabled": false, "sso_group_name": null,
 "public_enabled": true, "public_name": "TAC",
 "mailing_list_email": "tac@lists.example.org", "chat_channel": "#tac",
 "join_mode": "application", "business_email_required__c": true,
 "lastmodifiedbyid": "v1_sync_helper@clients", "lastmodifieddate": "2025-11-20T08:00:00+00:00"}
"""

# The ``salesforce_b2b-User.{id}`` record ``opportunity_owner__c`` names.
SALESFORCE_USER_KEY = "salesforce_b2b-User.0054100000AbCdEAAZ"
SALESFORCE_USER_JSON = """
{"Id": "0054100000AbCdEAAZ", "FirstName": "Olga", "LastName": "Owner",
 "Email": "olga.owner@example.org", "FullPhotoUrl": "https://photos.example.org/olga.png",
 "IsActive": true}
"""


def full_project(**changes: Any) -> dict[str, Any]:
    """The example project with every column of the second release, ``changes`` applied."""
    return record(PROJECT_FULL_JSON, **changes)


def full_committee(**changes: Any) -> dict[str, Any]:
    """The example committee with every column of the second release, ``changes`` applied."""
    return record(COMMITTEE_FULL_JSON, **changes)
