"""Bridge throughput: the bridge against a naive loop and against raw fetch+ack.

``python -m bench.bridge_throughput`` (``make bench``) starts its own
nats-server and valkey, puts 20,000 KV updates once, and then drains the same
20,000 stream messages three times, each through a consumer of its own:

(a) the bridge, as a subprocess (``v1-sync-helper bridge``), so its peak RSS
    can be read; its rate is measured from the first delivery to the moment
    the consumer's ack floor reaches the last message (polled);
(b) a naive loop shaped like the documented Go design: fetch one message,
    publish it with plain ``apply_async`` (``send_task``), ack;
(c) raw fetch+ack in batches with no publish: the NATS limit of this machine.

It prints the three rates, the bridge's ratios to (b) and (c), and its peak
RSS, checks them against the targets and exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bridge.consumer import ConsumerSpec, ensure_consumer
from bridge.messages import producer_app
from sandbox.servers import NatsServer, ValkeyServer, child_env, free_port
from sync_core.broker import SYNC_TASK_NAME, task_id_for
from sync_core.nats_client import connect, ensure_buckets

UPDATES = 20_000
BUCKET = "v1-objects"
MAPPINGS = "v1-mappings"
QUEUE = "celery"
PUT_WINDOW = 500
BATCH_SIZE = 500
TARGET_VS_NAIVE = 5.0
TARGET_VS_RAW = 0.45
TARGET_RSS_MB = 150.0
POLL_INTERVAL = 0.01
BRIDGE_TIMEOUT = 120.0
RECORD = b'{"sfid":"a0x","name":"Project","slug":"project","status":"Active"}'


@dataclass
class Result:
    """One measured run."""

    name: str
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


async def put_updates(js: JetStreamContext, count: int) -> None:
    """Write ``count`` KV updates (distinct keys) with a window of in-flight publishes."""
    pending: list[Awaitable[object]] = []
    for i in range(count):
        pending.append(js.publish(f"$KV.{BUCKET}.salesforce-project__c.a0x{i:07d}", RECORD))
        if len(pending) >= PUT_WINDOW:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


async def consumer_progress(js: JetStreamContext, name: str) -> tuple[int, int]:
    """(last delivered stream sequence, ack floor stream sequence) of a consumer."""
    try:
        info = await js.consumer_info(f"KV_{BUCKET}", name)
    except NotFoundError:
        return 0, 0
    delivered = info.delivered.stream_seq if info.delivered else 0
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    return delivered, floor


async def run_bridge(
    js: JetStreamContext, nats_url: str, redis_url: str, last_seq: int
) -> tuple[Result, float]:
    """(a): the bridge as a subprocess; returns its result and peak RSS in MB."""
    name = "bench-bridge"
    env = child_env(
        NATS_URL=nats_url,
        REDIS_URL=redis_url,
        KV_CONSUMER_NAME=name,
        BRIDGE_BATCH_SIZE=str(BATCH_SIZE),
        # The benchmark measures throughput: no worker drains the queue here.
        BRIDGE_MAX_QUEUE_DEPTH=str(UPDATES * 10),
        PORT=str(free_port()),
        BIND="127.0.0.1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "v1_sync_helper", "bridge"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + BRIDGE_TIMEOUT
        started = None
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bridge exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            delivered, floor = await consumer_progress(js, name)
            now = time.perf_counter()
            if started is None and delivered > 0:
                started = now
            if floor >= last_seq:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge did not finish: ack floor {floor} of {last_seq}")
            await asyncio.sleep(POLL_INTERVAL)
        assert started is not None
        rss = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return Result("bridge", last_seq, now - started), rss


def peak_rss_mb(pid: int) -> float:
    """The peak resident set size of a process (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


async def drain_with(
    js: JetStreamContext,
    name: str,
    batch: int,
    count: int,
    handle: Callable[[list[object]], Awaitable[None]],
) -> float:
    """Fetch ``count`` messages through a fresh consumer, handing each batch to ``handle``."""
    spec = ConsumerSpec(name, BUCKET)
    await ensure_consumer(js, spec)
    sub = await js.pull_subscribe_bind(name, stream=spec.stream)
    done = 0
    started = time.perf_counter()
    while done < count:
        msgs = await sub.fetch(batch, timeout=5)
        await handle(msgs)  # type: ignore[arg-type]
        done += len(msgs)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    return elapsed


async def run_naive(js: JetStreamContext, nc: Client, redis_url: str, count: int) -> Result:
    """(b): fetch 1, ``send_task`` (plain apply_async), ack: the Go design in Python."""
    app = producer_app(redis_url, QUEUE)
    prefix = f"$KV.{BUCKET}."

    async def handle(msgs: list[object]) -> None:
        for msg in msgs:
            key = msg.subject[len(prefix) :]  # type: ignore[attr-defined]
            revision = msg.metadata.sequence.stream  # type: ignore[attr-defined]
            app.send_task(
                SYNC_TASK_NAME,
                args=(key, revision, "PUT"),
                task_id=task_id_for(key, revision),
                queue=QUEUE,
            )
            await msg.ack()  # type: ignore[attr-defined]

    seconds = await drain_with(js, "bench-naive", 1, count, handle)
    await nc.flush()
    return Result("naive", count, seconds)


async def run_raw(js: JetStreamContext, nc: Client, count: int) -> Result:
    """(c): fetch in batches and ack, nothing else."""

    async def handle(msgs: list[object]) -> None:
        for msg in msgs:
            _ = msg.metadata.sequence.stream  # type: ignore[attr-defined]
            await msg.ack()  # type: ignore[attr-defined]

    seconds = await drain_with(js, "bench-raw", BATCH_SIZE, count, handle)
    await nc.flush()
    return Result("raw fetch+ack", count, seconds)


async def benchmark(workdir: Path, updates: int, naive_updates: int) -> int:
    nats_server = NatsServer(workdir / "nats")
    valkey = ValkeyServer(workdir / "valkey")
    nats_server.start()
    valkey.start()
    flusher = redis.Redis.from_url(valkey.url)
    try:
        nc = await connect(nats_server.url, "bench")
        js = nc.jetstream()
        await ensure_buckets(js, BUCKET, MAPPINGS)
        started = time.perf_counter()
        await put_updates(js, updates)
        put_seconds = time.perf_counter() - started
        print(f"put {updates} KV updates in {put_seconds:.2f}s ({updates / put_seconds:,.0f}/s)")

        raw = await run_raw(js, nc, updates)
        bridge, rss = await run_bridge(js, nats_server.url, valkey.url, updates)
        tasks = flusher.llen(QUEUE)
        flusher.flushall()
        naive = await run_naive(js, nc, valkey.url, naive_updates)
        flusher.flushall()
        await nc.close()
    finally:
        flusher.close()
        valkey.stop()
        nats_server.stop()

    for result in (bridge, naive, raw):
        print(
            f"{result.name:>14}: {result.messages:>6} msgs in {result.seconds:6.2f}s "
            f"= {result.rate:>9,.0f} msg/s"
        )
    vs_naive = bridge.rate / naive.rate
    vs_raw = bridge.rate / raw.rate
    print(f"bridge tasks in Redis: {tasks} (expected {updates})")
    print(f"bridge / naive: {vs_naive:5.1f}x   (target >= {TARGET_VS_NAIVE}x)")
    print(f"bridge / raw:   {vs_raw:5.0%}    (target >= {TARGET_VS_RAW:.0%})")
    print(f"bridge peak RSS: {rss:.0f} MB (target < {TARGET_RSS_MB:.0f} MB)")
    ok = (
        tasks == updates
        and vs_naive >= TARGET_VS_NAIVE
        and vs_raw >= TARGET_VS_RAW
        and rss < TARGET_RSS_MB
    )
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=UPDATES)
    parser.add_argument(
        "--naive-updates",
        type=int,
        default=None,
        help="messages for the naive loop (default: all of them)",
    )
    args = parser.parse_args()
    naive_updates = args.naive_updates or args.updates
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as workdir:
        code = asyncio.run(benchmark(Path(workdir), args.updates, naive_updates))
    sys.exit(code)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
