"""The V2 indexer's events, as the sandbox's committee fakes publish them.

After each committee or member write the real indexer publishes, on core
NATS (fire-and-forget, no JetStream), ``lfx.committee.{action}`` or
``lfx.committee_member.{action}`` with the envelope of ``reverse-sync.md``;
the principals are those of the request's JWT. The sandbox does the same when
it is given NATS and ``publish_indexer_events``, so the V2 -> V1 direction can
be exercised end to end. A delete's ``data`` is empty, as the real one's may be.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from sandbox.store import Writer
from sync_core.nats_client import SyncNats

SUBJECT_PREFIX = "lfx"
COMMITTEE = "committee"
COMMITTEE_MEMBER = "committee_member"
DELETED = "deleted"


def indexer_timestamp() -> str:
    """RFC 3339 with microseconds and ``Z``, as the indexer (Go) writes it."""
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def indexer_event(
    object_type: str,
    action: str,
    object_id: str,
    data: dict[str, Any],
    writer: Writer,
    parent_refs: list[str],
) -> dict[str, Any]:
    """The envelope of one event (see the module docstring)."""
    ref = f"{object_type}:{object_id}"
    emails = [writer.email] if writer.email else []
    return {
        "document_id": ref,
        "object_id": object_id,
        "object_type": object_type,
        "action": action,
        "timestamp": indexer_timestamp(),
        "body": {
            "object_ref": ref,
            "object_type": object_type,
            "object_id": object_id,
            "parent_refs": parent_refs,
            f"{action}_by": [writer.principal],
            f"{action}_by_principals": [writer.principal],
            f"{action}_by_emails": emails,
            "data": {} if action == DELETED else data,
        },
    }


class IndexerEvents:
    """Publishes the events on the sandbox's NATS connection; thread-safe."""

    def __init__(self, nats: SyncNats) -> None:
        self.nats = nats

    def committee(self, action: str, committee: dict[str, Any], writer: Writer) -> None:
        """``lfx.committee.{action}`` for ``committee`` (the API view of it)."""
        parents = [f"project:{committee['project_uid']}"] if committee.get("project_uid") else []
        self._publish(COMMITTEE, action, str(committee["uid"]), committee, writer, parents)

    def member(self, action: str, member: dict[str, Any], writer: Writer) -> None:
        """``lfx.committee_member.{action}`` for ``member`` (the API view of it)."""
        parents = [f"committee:{member['committee_uid']}"]
        self._publish(COMMITTEE_MEMBER, action, str(member["uid"]), member, writer, parents)

    def _publish(
        self,
        object_type: str,
        action: str,
        object_id: str,
        data: dict[str, Any],
        writer: Writer,
        parents: list[str],
    ) -> None:
        event = indexer_event(object_type, action, object_id, data, writer, parents)
        subject = f"{SUBJECT_PREFIX}.{object_type}.{action}"

        async def publish() -> None:
            nc = self.nats.live()
            await nc.publish(subject, json.dumps(event).encode())
            # Out before the HTTP answer: a test that saw the answer finds the event.
            await nc.flush()

        self.nats.run(publish())
