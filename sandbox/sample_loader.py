"""Put the shipped sample records into ``v1-objects``: ``python -m sandbox.sample_loader``.

Used by ``v1-sync-helper dev`` and by the compose file's one-shot loader. It
reads ``NATS_URL`` and ``V1_OBJECTS_BUCKET`` from the environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from sandbox.samples import SampleRecord, encode, load_records
from sync_core.nats_client import connect


async def put_records(nats_url: str, bucket: str, records: list[SampleRecord]) -> int:
    """Put every record in load order; returns how many were written."""
    nc = await connect(nats_url, "sample-loader")
    try:
        kv = await nc.jetstream().key_value(bucket)
        for record in records:
            await kv.put(record.key, encode(record))
    finally:
        await nc.drain()
    return len(records)


def load_samples(nats_url: str, bucket: str = "v1-objects") -> int:
    """Blocking form of ``put_records`` over the whole sample set."""
    return asyncio.run(put_records(nats_url, bucket, load_records()))


def main() -> int:
    nats_url = os.environ.get("NATS_URL", "nats://localhost:4222")
    bucket = os.environ.get("V1_OBJECTS_BUCKET", "v1-objects")
    count = load_samples(nats_url, bucket)
    print(json.dumps({"event": "samples_loaded", "count": count, "bucket": bucket}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
