"""The key prefixes and the tombstone of the id mappings bucket ``v1-mappings``.

The layout is described in ``tasks.stores.id_mappings`` (the workers' store);
the bridge reads a V2 object's mapping too, to tell an echo of the forward path
(``bridge.v2_echoes``).
"""

from __future__ import annotations

PROJECT_SFID = "project.sfid."
PROJECT_SLUG = "project.slug."
PROJECT_UID = "project.uid."
COMMITTEE_SFID = "committee.sfid."
COMMITTEE_UID = "committee.uid."
MEMBER_SFID = "committee_member.sfid."
MEMBER_UID = "committee_member.uid."
MEMBER_PLACE_SEPARATOR = ":"
TOMBSTONE = "!del"
