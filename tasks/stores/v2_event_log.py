"""Reading one V2 indexer event back from its stream by sequence (V2 -> V1).

The bridge's ``sync_v2_event`` task carries only the event's stream sequence;
the run reads the event itself here, one ``STREAM.MSG.GET`` request. An
event the stream no longer holds (past ``V2_EVENTS_MAX_AGE``, or the stream
was recreated) reads as None.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.errors import NotFoundError

from sync_core.nats_client import SyncNats


@dataclass(frozen=True)
class StoredEvent:
    """One stream message: the subject it was published on and its payload."""

    subject: str
    data: bytes


def read_event(nats: SyncNats, stream: str, sequence: int) -> StoredEvent | None:
    """The message at ``sequence`` of ``stream``, or None when the stream has none there."""
    try:
        message = nats.run(nats.js.get_msg(stream, seq=sequence))
    except NotFoundError:
        return None
    return StoredEvent(subject=str(message.subject or ""), data=bytes(message.data or b""))
