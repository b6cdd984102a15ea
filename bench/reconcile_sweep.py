"""Reconcile sweep cost: one sweep over 100,000 keys against a naive per-key read.

``python -m bench.reconcile_sweep`` (``make bench-reconcile``) starts its own
nats-server and valkey, writes N keys into ``v1-objects`` (projects and
committees), a settled sync state of the bucket's epoch for each into
``v1-sync-state`` and its forward mapping into ``v1-mappings`` (the steady
state: nothing behind), then measures in the same run:

(a) the reconciler's sweep, as the bridge runs it (``Reconciler.sweep()``:
    the epochs of ``v1-objects`` and ``v1-mappings``, headers-only
    last-per-subject listing of ``v1-objects``, a listing of the states with
    values, the comparison, the queue-depth check and the summary write),
    best of three; the first sweep of a reconciler with no summary before it
    also lists the forward mappings (headers only: are they all there?), and
    is printed on its own;
(b) the naive baseline: ``kv.get`` of the key in both buckets, one key after
    the other, over a sample of keys, extrapolated to N.

It prints both, their ratio, the sweep's keys per second and the
process's peak RSS. Only NATS and one Redis LLEN are touched: never V2.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import tempfile
import time
from pathlib import Path

from nats.aio.client import Client

from bridge.messages import TaskMessageEncoder, producer_app
from bridge.metrics import BridgeMetrics
from bridge.publisher import BrokerPublisher, broker_client, database_of
from bridge.reconciler import Reconciler, ReconcileTuning
from sandbox.servers import NatsServer, ValkeyServer
from sync_core.broker import broker_transport_options
from sync_core.epochs import bucket_epoch
from sync_core.keys import forward_mapping_key, parse_key
from sync_core.nats_client import connect, ensure_buckets
from sync_core.sync_state import DEFAULT_STATE_BUCKET, SyncState

KEYS = 100_000
SAMPLE = 2_000
PUT_WINDOW = 1_000
# The first sweep of a reconciler without a summary before it also checks the mappings.
SWEEPS = 4
OBJECTS = "v1-objects"
MAPPINGS = "v1-mappings"
RECORD = b'{"sfid":"a0x","name":"Project","slug":"project","status":"Active"}' * 4


def key_of(n: int) -> str:
    """Two of three keys are projects, one a committee (the real mix, roughly)."""
    if n % 3 == 2:
        return f"platform-collaboration__c.{n:08x}-0000-4000-8000-000000000000"
    return f"salesforce-project__c.a09{n:015d}"


async def fill(nc: Client, keys: int) -> float:
    """Write every key and its settled state; seconds taken."""
    js = nc.jetstream()
    await ensure_buckets(js, OBJECTS, MAPPINGS)
    objects = await js.key_value(OBJECTS)
    states = await js.key_value(DEFAULT_STATE_BUCKET)
    mappings = await js.key_value(MAPPINGS)
    epoch = await bucket_epoch(js, OBJECTS)
    started = time.perf_counter()
    now = time.time()
    for start in range(0, keys, PUT_WINDOW):
        names = [key_of(n) for n in range(start, min(keys, start + PUT_WINDOW))]
        revisions = await asyncio.gather(*(objects.put(name, RECORD) for name in names))
        await asyncio.gather(
            *(
                states.put(
                    name,
                    SyncState(
                        name, rev, "created", now, "uid-" + name[-8:], epoch=epoch
                    ).to_bytes(),
                )
                for name, rev in zip(names, revisions, strict=True)
            ),
            *(mappings.put(forward_mapping(name), b"uid-" + name[-8:].encode()) for name in names),
        )
    return time.perf_counter() - started


def forward_mapping(key: str) -> str:
    """The key's forward mapping in ``v1-mappings``."""
    object_type, record_id = parse_key(key)
    assert object_type is not None
    return forward_mapping_key(object_type, record_id)


async def naive(nc: Client, keys: int, sample: int) -> float:
    """Seconds for ``kv.get`` of ``sample`` keys in both buckets, extrapolated to ``keys``."""
    js = nc.jetstream()
    objects = await js.key_value(OBJECTS)
    states = await js.key_value(DEFAULT_STATE_BUCKET)
    chosen = random.Random(7).sample(range(keys), min(sample, keys))
    started = time.perf_counter()
    for n in chosen:
        await objects.get(key_of(n))
        await states.get(key_of(n))
    return (time.perf_counter() - started) * keys / len(chosen)


async def sweeps(nc: Client, valkey: ValkeyServer) -> list[tuple[float, int, int]]:
    """(seconds, keys, behind) of each of ``SWEEPS`` sweeps."""
    client = broker_client(valkey.url, broker_transport_options())
    publisher = BrokerPublisher(client)
    app = producer_app(valkey.url, "celery", broker_transport_options())
    encoder = TaskMessageEncoder(app, "celery", database_of(client))
    reconciler = Reconciler(
        nc,
        objects_bucket=OBJECTS,
        mappings_bucket=MAPPINGS,
        state_bucket=DEFAULT_STATE_BUCKET,
        consumer="bench-no-consumer",
        encoder=encoder,
        publisher=publisher,
        metrics=BridgeMetrics(),
        tuning=ReconcileTuning(),
    )
    results = []
    try:
        for _ in range(SWEEPS):
            started = time.perf_counter()
            summary = await reconciler.sweep()
            results.append((time.perf_counter() - started, summary.keys, summary.behind))
    finally:
        publisher.close()
        app.close()
    return results


async def run(keys: int, sample: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with NatsServer(base / "nats") as nats_server, ValkeyServer(base / "valkey") as valkey:
            nc = await connect(nats_server.url, "bench-reconcile")
            try:
                filled = await fill(nc, keys)
                print(f"wrote {keys:,} keys and their states in {filled:.1f}s")
                baseline = await naive(nc, keys, sample)
                results = await sweeps(nc, valkey)
            finally:
                await nc.close()
    first = results[0][0]
    results = results[1:]
    best = min(seconds for seconds, _, _ in results)
    _, seen, behind = results[-1]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"sweeps: {', '.join(f'{s:.2f}s' for s, _, _ in results)} (keys {seen:,}, behind {behind})"
    )
    print(f"sweep over {keys:,} keys: {best:.2f}s ({keys / best:,.0f} keys/s)")
    print(f"first sweep (also lists the forward mappings): {first:.2f}s")
    print(f"naive kv.get per key (both buckets, {sample:,} sampled): {baseline:.1f}s extrapolated")
    print(f"sweep / naive: {baseline / best:.1f}x faster; peak RSS {rss_mb:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=KEYS)
    parser.add_argument("--sample", type=int, default=SAMPLE)
    args = parser.parse_args()
    asyncio.run(run(args.keys, args.sample))


if __name__ == "__main__":
    main()
