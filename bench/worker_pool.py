"""Worker pool and concurrency: sync tasks per second for each choice.

``python -m bench.worker_pool [--tasks N] [--configs threads:8,prefork:4,...]``
starts its own nats-server, valkey and sandbox (the fake V2 services, in this
process), then for each configuration:

1. writes N new V1 project records into ``v1-objects`` and enqueues their N
   ``sync_kv_entry`` tasks (before the worker starts, so only consumption is timed);
2. starts ``v1-sync-helper worker --pool P --concurrency C`` as a subprocess;
3. polls the per-minute outcome counters in Redis and measures from the first
   finished task to the last: every task is a real project create (KV reads,
   per-key lock, ROOT lookup, a signed JWT, ``POST /projects``, three mapping
   writes, the outcome counters);
4. stops the worker (warm shutdown) and records its peak RSS.

The fake V2 waits ``--v2-latency`` seconds (default 50 ms) before answering
each POST, as the real services do, so the pool's concurrency matters.

Everything shares this machine's cores, the sandbox included, so the numbers
compare the choices with each other; they are not the V2 services' limits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.servers import NatsServer, ValkeyServer, child_env, free_port
from sandbox.service import Sandbox
from sync_core.broker import SYNC_TASK_NAME, task_id_for
from sync_core.nats_client import SyncNats, connect, ensure_buckets
from tasks.run.outcomes import OUTCOME_KEY_PREFIX, recent_outcomes

DEFAULT_CONFIGS = (
    "solo:1,threads:4,threads:8,threads:16,threads:32,threads:64,prefork:2,prefork:4,prefork:8"
)
DEFAULT_TASKS = 1500
# The real services answer a create in tens of milliseconds (database write,
# index update); the sandbox answers at once unless told to wait.
DEFAULT_V2_LATENCY = 0.05
A_LOT = 10**9
KID = "bench-kid"
AUTH0_CLIENT = "bench-client"
OBJECTS, MAPPINGS = "v1-objects", "v1-mappings"
FINISH_TIMEOUT = 300.0
POLL_SECONDS = 0.02
FINAL_OUTCOMES = ("created", "updated", "unchanged", "superseded", "skipped", "dead_lettered")


@dataclass
class Result:
    pool: str
    concurrency: int
    tasks: int
    seconds: float
    rss_mb: float
    failed: int
    cpu_ms_per_task: float

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def create_buckets(url: str) -> None:
    nc = await connect(url, "bench-setup")
    try:
        await ensure_buckets(nc.jetstream(), OBJECTS, MAPPINGS)
    finally:
        await nc.close()


def project_record(sfid: str) -> bytes:
    return json.dumps(
        {
            "sfid": sfid,
            "name": f"Bench {sfid}",
            "slug__c": f"b{sfid.lower()}",
            "description__c": "A benchmark project.",
            "project_status__c": "Active",
            "category__c": "Incorporated Entity",
            "parent_project__c": None,
            "website__c": "www.example.org",
            "lastmodifiedbyid": "v1_sync_helper@clients",
        }
    ).encode()


def enqueue(nats: SyncNats, app: object, tasks: int) -> None:
    """Write ``tasks`` new projects and enqueue one task for each."""
    send = app.send_task  # type: ignore[attr-defined]
    for _ in range(tasks):
        sfid = "a09" + uuid.uuid4().hex[:15]
        key = f"salesforce-project__c.{sfid}"
        revision = nats.kv_put(OBJECTS, key, project_record(sfid))
        send(SYNC_TASK_NAME, args=[key, revision, "PUT"], task_id=task_id_for(key, revision))


def finished_count(client: redis.Redis) -> tuple[int, int]:
    """(finished runs, dead letters) according to the per-minute counters."""
    counts = recent_outcomes(client, 10)
    return sum(counts.get(name, 0) for name in FINAL_OUTCOMES), counts.get("dead_lettered", 0)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its direct children (the pool processes), Linux only."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(child) for child in children)]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of ``pid`` and its live children so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for each in process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def rss_mb(pid: int) -> float:
    """The resident memory of ``pid`` and its children now, in MiB."""
    total = 0
    for each in process_tree(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def run_config(
    pool: str,
    concurrency: int,
    tasks: int,
    env: dict[str, str],
    client: redis.Redis,
    nats: SyncNats,
) -> Result:
    from tasks.worker.app import app

    for key in client.scan_iter(f"{OUTCOME_KEY_PREFIX}*"):
        client.delete(key)
    enqueue(nats, app, tasks)
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept for the error message
        prefix=f"bench-worker-{pool}-{concurrency}-", suffix=".log", delete=False
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "v1_sync_helper",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "WARNING",
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    rss = 0.0
    try:
        deadline = time.monotonic() + FINISH_TIMEOUT
        first_at: float | None = None
        done_at_first = 0
        cpu_at_first = 0.0
        while True:
            done, failed = finished_count(client)
            now = time.monotonic()
            if first_at is None and done > 0:
                first_at, done_at_first = now, done
                cpu_at_first = cpu_seconds(worker.pid)
            cpu = cpu_seconds(worker.pid)
            rss = max(rss, rss_mb(worker.pid))
            if done >= tasks:
                break
            if worker.poll() is not None or now > deadline:
                raise RuntimeError(f"worker stopped or timed out; see {log_file.name}")
            time.sleep(POLL_SECONDS)
        assert first_at is not None
        seconds = now - first_at
        counted = tasks - done_at_first
        cpu_ms = (cpu - cpu_at_first) * 1000 / counted if counted else 0.0
        return Result(pool, concurrency, counted, seconds, rss, failed, cpu_ms)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        log_file.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="pool:concurrency,...")
    parser.add_argument(
        "--v2-latency",
        type=float,
        default=DEFAULT_V2_LATENCY,
        help="seconds the fake V2 waits before answering each POST",
    )
    args = parser.parse_args()
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs.split(",")]

    heimdall = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth0 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with tempfile.TemporaryDirectory(prefix="bench-worker-pool-") as tmp:
        base = Path(tmp)
        with NatsServer(base / "nats") as nats_server, ValkeyServer(base / "valkey") as valkey:
            asyncio.run(create_buckets(nats_server.url))
            # The app is configured from the environment at import.
            os.environ["REDIS_URL"] = valkey.url
            sandbox = Sandbox(
                heimdall_keys={KID: heimdall.public_key()},
                auth0_clients={AUTH0_CLIENT: auth0.public_key()},
                nats_url=nats_server.url,
            )
            with sandbox:
                if args.v2_latency > 0:
                    sandbox.inject_fault(
                        "POST", "/projects", status=None, times=A_LOT, delay=args.v2_latency
                    )
                env = child_env(
                    NATS_URL=nats_server.url,
                    REDIS_URL=valkey.url,
                    HEIMDALL_PRIVATE_KEY=pem(heimdall),
                    HEIMDALL_KEY_ID=KID,
                    AUTH0_TENANT="bench",
                    AUTH0_CLIENT_ID=AUTH0_CLIENT,
                    AUTH0_PRIVATE_KEY=pem(auth0),
                    WORKER_METRICS_PORT=str(free_port()),
                    **sandbox.env(),
                )
                client = redis.Redis.from_url(valkey.url)
                nats = SyncNats(nats_server.url, "bench")
                results = []
                try:
                    for pool, concurrency in configs:
                        result = run_config(pool, concurrency, args.tasks, env, client, nats)
                        results.append(result)
                        print(
                            f"{pool:8} c={concurrency:<3} {result.rate:7.0f} tasks/s  "
                            f"({result.tasks} tasks in {result.seconds:5.2f} s, "
                            f"worker CPU {result.cpu_ms_per_task:4.1f} ms/task, "
                            f"RSS {result.rss_mb:5.0f} MiB, dead letters {result.failed})",
                            flush=True,
                        )
                finally:
                    nats.close()
                    client.close()
    best = max(results, key=lambda r: r.rate)
    print(f"V2 latency {args.v2_latency * 1000:.0f} ms per POST")
    print(f"fastest: {best.pool} c={best.concurrency} at {best.rate:.0f} tasks/s")
    print(f"bench process CPU: {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.1f} s user")
    return 0


if __name__ == "__main__":
    sys.exit(main())
