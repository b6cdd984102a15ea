"""Which life of a KV bucket a revision belongs to: the bucket's *epoch*.

KV revisions are the sequence numbers of the bucket's stream, and they start
again at 1 when the stream is deleted and created again (a bucket rebuilt to
change its limits, a fresh full load into a new bucket). A revision is only
comparable with revisions of the same life of the stream. JetStream gives each
stream an identity that changes exactly then: its creation time
(``StreamInfo.created``). The epoch is that time in whole microseconds since
1970 (nats-py parses it to a ``datetime``, which keeps microseconds; two lives
of one stream never start within the same microsecond).

Every durable record that holds a ``v1-objects`` revision (the sync state, the
Redis "already synced" marker, dead letters, parked children) holds the epoch
beside it, and a revision of another epoch counts as unknown: the key syncs
again and ends ``unchanged`` where V2 already matches. A record without an
epoch (written before epochs existed) is of an unknown life and counts as
unknown too.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import StreamInfo

from sync_core.kv_listing import kv_stream as kv_stream

log = logging.getLogger(__name__)

# The keyword argument of ``sync_kv_entry`` that carries the epoch of its revision.
EPOCH_TASK_KWARG = "epoch"
# A stream whose info carries no creation time (a server that does not say):
# every record then shares this epoch, and revisions compare as before.
UNKNOWN_CREATION = 0
MICROSECONDS = 1_000_000


def epoch_of(info: StreamInfo) -> int:
    """The epoch of the stream ``info`` describes (its creation time in microseconds)."""
    created = info.created
    if not isinstance(created, datetime.datetime):
        return UNKNOWN_CREATION
    if created.tzinfo is None:
        created = created.replace(tzinfo=datetime.UTC)
    delta = created - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86_400 + delta.seconds) * MICROSECONDS + delta.microseconds


async def bucket_epoch(js: JetStreamContext, bucket: str) -> int:
    """The current epoch of KV bucket ``bucket`` (one stream-info request)."""
    return epoch_of(await js.stream_info(kv_stream(bucket)))


def format_epoch(epoch: int | None) -> str:
    """The epoch as a UTC timestamp people read (``unknown`` for None)."""
    if epoch is None:
        return "unknown (written before epochs)"
    when = datetime.datetime.fromtimestamp(epoch / MICROSECONDS, tz=datetime.UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class BucketLife:
    """What tells a bucket emptied or rebuilt since the last look: its epoch and message count.

    A rebuilt bucket has a new epoch; a purged one keeps its epoch but holds
    fewer messages than before (with history 1 a KV bucket's message count
    never falls in normal use: deletes and purges of single keys leave markers).
    """

    epoch: int
    messages: int

    def emptied_since(self, before: BucketLife | None) -> bool:
        """Whether entries may have vanished since ``before`` (unknown: True)."""
        return before is None or self.epoch != before.epoch or self.messages < before.messages


async def bucket_life(js: JetStreamContext, bucket: str) -> BucketLife:
    """The epoch and message count of KV bucket ``bucket`` (one stream-info request)."""
    info = await js.stream_info(kv_stream(bucket))
    return BucketLife(epoch_of(info), int(info.state.messages or 0))
