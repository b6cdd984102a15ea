"""Write the shipped sample records into ``v1-objects``: ``python -m sandbox.sample_loader``.

Used by ``v1-sync-helper dev`` and by the compose file's one-shot loader. It
reads ``NATS_URL``, ``V1_OBJECTS_BUCKET``, ``SYNC_STATE_BUCKET`` and
``SAMPLE_PHASE_TIMEOUT`` (seconds, default 300) from the environment.

The set comes in phases (``sandbox.samples.load_phases``): the first holds
every put, the later ones the deletes and the re-puts of deleted records. A
phase is written only once every key written before it has *settled*: its
durable sync state in ``v1-sync-state`` records a terminal outcome (created,
dead-lettered, deleted, ...) for the latest revision the loader wrote. So a
delete always finds its object synced, and a re-put finds the delete done,
however slow the pipeline is. Keys of tables the service does not sync get no
sync state and are not waited for.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from sandbox.samples import SampleRecord, encode, load_phases
from sync_core.keys import parse_key
from sync_core.nats_client import connect
from sync_core.nats_connection import NatsTarget
from sync_core.settings import NatsSettings, load_settings
from sync_core.sync_state import DEFAULT_STATE_BUCKET, decode_state

DEFAULT_PHASE_TIMEOUT = 300.0
SETTLE_POLL_SECONDS = 0.5
# The headers of a KV delete marker (what ``kv.delete``/``kv.purge`` publish); written
# by hand so that the marker's revision comes back, as ``kv.put`` returns a put's.
KV_OPERATION_HEADER = "KV-Operation"
ROLLUP_HEADER = "Nats-Rollup"
ROLLUP_SUBJECT = "sub"

Say = Callable[[str], None]


class PhaseNotSettled(RuntimeError):
    """The keys of a phase did not all settle before the deadline."""


async def _write(js: JetStreamContext, kv: KeyValue, bucket: str, record: SampleRecord) -> int:
    """Write one record; returns the revision (stream sequence) of the entry it made."""
    if not record.is_delete:
        return int(await kv.put(record.key, encode(record)))
    headers = {KV_OPERATION_HEADER: record.operation}
    if record.operation == "PURGE":
        headers[ROLLUP_HEADER] = ROLLUP_SUBJECT
    ack = await js.publish(f"$KV.{bucket}.{record.key}", headers=headers)
    return int(ack.seq)


async def settled(state_kv: KeyValue, key: str, revision: int) -> bool:
    """Whether ``key``'s durable sync state records a terminal outcome for ``revision``."""
    try:
        entry = await state_kv.get(key)
    except KeyNotFoundError:  # no state yet (KeyDeletedError is one too)
        return False
    return decode_state(entry.value, key).settled(revision)


async def wait_until_settled(state_kv: KeyValue, revisions: dict[str, int], timeout: float) -> None:
    """Return once every key of ``revisions`` settled; ``PhaseNotSettled`` at the deadline.

    Keys are checked in write order and a poll stops at the first one not
    settled: keys settle roughly in the order they were written, so the whole
    wait costs about one read per key, not one per key and poll (hundreds of
    reads a second would slow the very pipeline it waits for).
    """
    deadline = time.monotonic() + timeout
    waiting = list(revisions.items())
    while True:
        while waiting and await settled(state_kv, *waiting[0]):
            waiting.pop(0)
        if not waiting:
            return
        if time.monotonic() >= deadline:
            sample = ", ".join(key for key, _ in waiting[:5])
            raise PhaseNotSettled(
                f"{len(waiting)} keys did not settle in {timeout:.0f} s: {sample}"
            )
        await asyncio.sleep(SETTLE_POLL_SECONDS)


async def open_state_bucket(js: JetStreamContext, name: str, timeout: float) -> KeyValue:
    """The sync state bucket, once the pipeline made it (the loader never creates it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await js.key_value(name)
        except BucketNotFoundError:
            if time.monotonic() >= deadline:
                raise PhaseNotSettled(f"no bucket {name} after {timeout:.0f} s") from None
            await asyncio.sleep(SETTLE_POLL_SECONDS)


async def load_in_phases(
    nats_url: NatsTarget | str,
    bucket: str = "v1-objects",
    state_bucket: str = DEFAULT_STATE_BUCKET,
    phase_timeout: float = DEFAULT_PHASE_TIMEOUT,
    phases: list[list[SampleRecord]] | None = None,
    say: Say | None = None,
    settle_last: bool = False,
) -> int:
    """Write each phase once the one before settled; returns how many records were written.

    ``settle_last``: return only once the last phase settled too (what comes
    next, the dev stack's V2 edits, must find every forward write done).
    """
    phases = load_phases() if phases is None else phases
    nc = await connect(nats_url, "sample-loader")
    written = 0
    started = time.monotonic()
    try:
        js = nc.jetstream()
        kv = await js.key_value(bucket)
        state_kv: KeyValue | None = None
        revisions: dict[str, int] = {}
        for number, records in enumerate(phases, start=1):
            if number > 1:
                state_kv = state_kv or await open_state_bucket(js, state_bucket, phase_timeout)
                await wait_until_settled(state_kv, revisions, phase_timeout)
            for record in records:
                revision = await _write(js, kv, bucket, record)
                if parse_key(record.key)[0] is not None:
                    revisions[record.key] = revision
            written += len(records)
            if say is not None:
                say(
                    f"Phase {number}/{len(phases)}: wrote {len(records)} records "
                    f"at {time.monotonic() - started:.1f} s"
                )
        if settle_last and revisions:
            state_kv = state_kv or await open_state_bucket(js, state_bucket, phase_timeout)
            await wait_until_settled(state_kv, revisions, phase_timeout)
    finally:
        await nc.drain()
    return written


def load_samples(
    nats_url: NatsTarget | str,
    bucket: str = "v1-objects",
    state_bucket: str = DEFAULT_STATE_BUCKET,
    phase_timeout: float = DEFAULT_PHASE_TIMEOUT,
    say: Say | None = None,
    settle_last: bool = False,
) -> int:
    """Blocking form of ``load_in_phases`` over the whole sample set."""
    return asyncio.run(
        load_in_phases(
            nats_url, bucket, state_bucket, phase_timeout, say=say, settle_last=settle_last
        )
    )


def main() -> int:
    # NATS_URL and its credentials and TLS settings (NATS_CREDS, NATS_TLS_CA, ...).
    nats_url = load_settings(NatsSettings).nats_target
    bucket = os.environ.get("V1_OBJECTS_BUCKET", "v1-objects")
    state_bucket = os.environ.get("SYNC_STATE_BUCKET", DEFAULT_STATE_BUCKET)
    timeout = float(os.environ.get("SAMPLE_PHASE_TIMEOUT", DEFAULT_PHASE_TIMEOUT))

    def say(text: str) -> None:
        print(json.dumps({"event": "sample_phase_written", "detail": text}), flush=True)

    try:
        count = load_samples(nats_url, bucket, state_bucket, timeout, say)
    except PhaseNotSettled as error:
        print(json.dumps({"event": "samples_not_settled", "error": str(error)}), flush=True)
        return 1
    print(json.dumps({"event": "samples_loaded", "count": count, "bucket": bucket}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
