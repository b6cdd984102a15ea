"""The V2 -> V1 switch's cost to the forward path, and the reverse worker's throughput.

``python -m bench.v2_to_v1 [--count N] [--runs R]`` (``make bench-v2-to-v1``)
starts nats-server, valkey and the lean fake (``bench.fake_v2``: V2 projects
and committees, the V1 committee API, the indexer's committee events) once,
then alternates ``R`` runs of each mode on the same servers, ``off`` first:

- ``off``: ``SYNC_V2_TO_V1=false`` for ``v1-sync-helper bridge`` and
  ``worker``; the fake publishes no indexer events;
- ``on``: ``SYNC_V2_TO_V1=true``; after each committee write the fake
  publishes ``lfx.committee.{created,updated}`` (the request's principal: the
  V1 user's, so the echo guard decides by the fingerprint, not the principal).

Each run starts its own bridge and worker (defaults: threads x32), creates
``--parents`` projects and ``WARMUP`` committees (warm-up), then times N
committee creates (from the first KV put to the N-th ``created``) and N
updates (to the N-th ``updated``: GET + PUT with If-Match). After each phase
an ``on`` run waits for the phase's echoes to settle (a create's echo waits
``CREATE_SETTLE_SECONDS`` first) and counts them, the other V2 -> V1
outcomes, and the V1 calls the fake received (must be 0).

An ``on`` run then measures the reverse worker alone:

- echoes: the fake publishes the last event of the run's N committees again
  (higher stream sequences, same data); timed to the N-th ``skipped:echo``
  (the echoes the bridge settles without a task, ``bridge.v2_echoes``, read
  from its metrics, count with the workers' runs);
- V1 writes (``--no-v1-writes`` skips it): a person edits each of them in V2;
  timed to the N-th ``updated``, one V1 PATCH each.

Printed: per run the rates and worker CPU (``/proc/<pid>/stat``) per object,
and (on) the rates with the echoes: N over the phase plus the time its
echoes took to end (a burst's echoes queue behind its forward tasks, so the
phase alone barely pays for them; this is the rate under sustained load);
then the medians of each mode and on/off, echoes per second one worker
handles and the worker's (and bridge's) CPU per echo. Exits 1 when the
forward rates drop by more than ``MAX_DROP`` or an echo caused a V1 call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats.js import JetStreamContext

from bench.e2e import (
    MAPPINGS,
    OBJECTS,
    PHASE_TIMEOUT,
    POLL_SECONDS,
    USERS,
    WARMUP,
    Bench,
    new_sfids,
    outcome_counts,
    project_record,
)
from sandbox.servers import free_port
from sandbox.v2_to_v1_summary import bridge_v2_echoes_skipped
from sync_core.keys import COMMITTEE_KEYS, PROJECT_KEYS
from sync_core.nats_client import connect, ensure_buckets
from tasks.run.reverse_writes import CREATE_SETTLE_SECONDS

DEFAULT_COUNT = 300
DEFAULT_RUNS = 3
DEFAULT_PARENTS = 20
DEFAULT_ECHO_ROUNDS = 3
# The target: the forward rates with the switch on >= 85% of off.
MAX_DROP = 0.15
ECHO = "skipped:echo"
# Terminal outcomes of the V2 -> V1 runs that are not forward outcomes here.
REVERSE_ENDINGS = (ECHO, "superseded", "unchanged")
# How long the echoes of a phase may take to settle after it.
SETTLE_TIMEOUT = CREATE_SETTLE_SECONDS + 120.0
MODES = ("off", "on")
UNPROFILED = ("the parents", "warm-up")


@dataclass
class Measured:
    """One timed stretch: objects, seconds, CPU ms per object of each process."""

    objects: int
    seconds: float
    cpu_ms: dict[str, float]

    @property
    def rate(self) -> float:
        return self.objects / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Settled:
    """A phase's echoes: the reverse outcomes and V1 calls from its start to their end."""

    events: int
    outcomes: dict[str, int]
    v1_calls: int
    seconds: float
    cpu_ms: dict[str, float]  # per echo


@dataclass
class Run:
    """One run of one mode."""

    mode: str
    creates: Measured | None = None
    updates: Measured | None = None
    settled: list[Settled] = field(default_factory=list)
    echo_rounds: list[Measured] = field(default_factory=list)
    echo_v1_calls: int = 0
    v1_writes: Measured | None = None
    v1_write_calls: int = 0

    def with_echoes(self, phase: Measured | None, index: int) -> float:
        """Forward writes per second until their echoes had ended too (``off``: the rate).

        A burst's echoes queue behind its forward tasks and mostly run after the
        phase: this is the rate a worker keeps up under sustained load.
        """
        if phase is None:
            return 0.0
        extra = self.settled[index].seconds if index < len(self.settled) else 0.0
        return phase.objects / (phase.seconds + extra)


def committee_record(sfid: str, project_sfid: str, description: str, user: str) -> bytes:
    """A V1 committee as Meltano writes it (its name is unique in its project)."""
    return json.dumps(
        {
            "sfid": sfid,
            "mailing_list__c": f"Bench committee {sfid}",
            "project_name__c": project_sfid,
            "description__c": description,
            "public_enabled": True,
            "sso_group_enabled": True,
            "lastmodifiedbyid": user,
        }
    ).encode()


def committee_sfids(count: int) -> list[str]:
    return ["a0B" + sfid[3:] for sfid in new_sfids(count)]


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


class SwitchBench(Bench):
    """``bench.e2e``'s servers and fake, with a bridge and worker per run."""

    bridge_metrics_url: str | None = None

    def pipeline_env(self, mode: str) -> dict[str, str]:
        env = self.worker_env()
        env.update(
            COMMITTEE_SERVICE_URL=self.fake_url,
            SYNC_V2_TO_V1="true" if mode == "on" else "false",
            WORKER_METRICS_PORT=str(free_port()),
            PORT=str(free_port()),
        )
        self.bridge_metrics_url = f"http://127.0.0.1:{env['PORT']}/metrics"
        return env

    def outcomes(self) -> dict[str, int]:
        """The runs' outcome counts, the echoes the bridge settled without a task included
        in ``skipped:echo`` (``bridge.v2_echoes``)."""
        counts = outcome_counts(self.redis)
        if self.bridge_metrics_url is not None:
            bridge = bridge_v2_echoes_skipped(self.bridge_metrics_url) or 0
            counts[ECHO] = counts.get(ECHO, 0) + bridge
        return counts

    def start_run(self, mode: str, index: int) -> None:
        self.http.post(
            f"{self.fake_url}/_bench/events", json={"publish": mode == "on"}, timeout=10
        ).raise_for_status()
        env = self.pipeline_env(mode)
        cli = [sys.executable, "-m", "v1_sync_helper"]
        self.processes.start("bridge", [*cli, "bridge"], env)
        self.processes.start("worker", [*cli, "worker", *self.args.worker_args], env)
        self.run_name = f"{mode}-{index}"

    def stop_run(self) -> None:
        """Stop this run's bridge and worker (their logs stay as ``{name}-{mode}-{n}.log``)."""
        for name in ("bridge", "worker"):
            process = self.processes.children.pop(name)
            process.terminate()
            process.wait(60)
            log = self.workdir / f"{name}.log"
            if log.exists():
                log.rename(self.workdir / f"{name}-{self.run_name}.log")

    def cpu(self) -> dict[str, float]:
        return {
            name: value
            for name, value in self.process_cpu().items()
            if name in ("worker", "bridge", "fake-v2", "nats-server")
        }

    def wait_until(self, what: str, done: Callable[[dict[str, int]], bool]) -> None:
        """Poll ``done`` (with the outcome counts) until true; fail on a dead letter."""
        deadline = time.monotonic() + PHASE_TIMEOUT
        first = self.outcomes().get("dead_lettered", 0)
        while True:
            now = self.outcomes()
            if done(now):
                return
            if now.get("dead_lettered", 0) > first:
                raise RuntimeError(f"dead letters during {what}: see {self.workdir}")
            self.processes.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: {now}")
            time.sleep(POLL_SECONDS)

    async def timed(
        self, what: str, outcome: str, count: int, start: Callable[[], Awaitable[None]]
    ) -> tuple[Measured, dict[str, int]]:
        """Run ``start()`` and wait for ``count`` more ``outcome``; timed from the start."""
        profiler = None
        if what not in UNPROFILED:
            profiler = self.start_profiler(f"{self.run_name}-{what.replace(' ', '-')}")
        before = self.outcomes()
        cpu_before = self.cpu()
        started = time.monotonic()
        await start()
        await asyncio.to_thread(
            self.wait_until,
            what,
            lambda now: now.get(outcome, 0) - before.get(outcome, 0) >= count,
        )
        seconds = time.monotonic() - started
        cpu_after = self.cpu()
        self.stop_profiler(profiler)
        cpu = {k: (cpu_after[k] - cpu_before.get(k, 0.0)) * 1000 / count for k in cpu_after}
        return Measured(count, seconds, cpu), before

    async def settle(self, before: dict[str, int], events_before: int) -> Settled:
        """Wait until every event published since ``events_before`` ended its V2 -> V1 run."""
        started = time.monotonic()
        cpu_before = self.cpu()
        events = int(self.fake_stats()["events"]) - events_before

        def ended(now: dict[str, int]) -> bool:
            return sum(now.get(k, 0) - before.get(k, 0) for k in REVERSE_ENDINGS) >= events

        await asyncio.to_thread(self.wait_until, "the echoes", ended)
        cpu_after = self.cpu()
        stats = self.fake_stats()
        outcomes = delta(self.outcomes(), before)
        return Settled(
            events=events,
            outcomes={k: v for k, v in outcomes.items() if k in REVERSE_ENDINGS},
            v1_calls=sum(stats["v1_calls"].values()),
            seconds=time.monotonic() - started,
            cpu_ms={
                k: (cpu_after[k] - cpu_before.get(k, 0.0)) * 1000 / max(events, 1)
                for k in cpu_after
            },
        )

    async def run_mode(self, js: JetStreamContext, mode: str, index: int) -> Run:
        """One run (see the module docstring)."""
        count = self.args.count
        run = Run(mode)
        self.start_run(mode, index)
        try:
            parents = new_sfids(self.args.parents)
            projects = {
                f"{PROJECT_KEYS.prefix}.{sfid}": project_record(sfid, "Parent.", USERS[0])
                for sfid in parents
            }

            async def put_projects() -> None:
                await self.put_all(js, OBJECTS, projects)

            await self.timed("the parents", "created", len(projects), put_projects)

            def committees(sfids: list[str], text: str) -> dict[str, bytes]:
                return {
                    f"{COMMITTEE_KEYS.prefix}.{sfid}": committee_record(
                        sfid, parents[i % len(parents)], f"{text} {i}.", USERS[i % len(USERS)]
                    )
                    for i, sfid in enumerate(sfids)
                }

            warm = committee_sfids(WARMUP)
            await self.phase(js, run, "warm-up", "created", committees(warm, "Warm-up"))
            sfids = committee_sfids(count)
            run.creates = await self.phase(
                js, run, "creates", "created", committees(sfids, "A committee")
            )
            run.updates = await self.phase(
                js, run, "updates", "updated", committees(sfids, "Updated")
            )
            if mode == "on":
                await self.reverse_alone(run, count)
        finally:
            self.stop_run()
        return run

    async def phase(
        self, js: JetStreamContext, run: Run, name: str, outcome: str, values: dict[str, bytes]
    ) -> Measured:
        """Put ``values``, wait for as many ``outcome``; then (on) let the echoes settle."""
        self.reset_fake()
        events_before = int(self.fake_stats()["events"])

        async def put() -> None:
            await self.put_all(js, OBJECTS, values)

        measured, before = await self.timed(name, outcome, len(values), put)
        if run.mode == "on":
            settled = await self.settle(before, events_before)
            if name != "warm-up":
                run.settled.append(settled)
        return measured

    async def reverse_alone(self, run: Run, count: int) -> None:
        """The worker with only V2 -> V1 work: echoes, then (optionally) V1 writes."""
        self.reset_fake()

        async def republish(edit: bool) -> None:
            reply = self.http.post(
                f"{self.fake_url}/_bench/republish",
                json={"count": count, "edit": edit},
                timeout=30,
            )
            reply.raise_for_status()

        for _ in range(self.args.echo_rounds):
            echoes, _ = await self.timed("echoes", ECHO, count, lambda: republish(False))
            run.echo_rounds.append(echoes)
        run.echo_v1_calls = sum(self.fake_stats()["v1_calls"].values())
        if self.args.v1_writes:
            self.reset_fake()
            run.v1_writes, _ = await self.timed(
                "V1 writes", "updated", count, lambda: republish(True)
            )
            run.v1_write_calls = sum(self.fake_stats()["v1_calls"].values())


def print_run(run: Run, index: int) -> None:
    assert run.creates is not None
    assert run.updates is not None
    line = (
        f"{run.mode:>3} #{index}: creates {run.creates.rate:6.1f}/s "
        f"(worker {run.creates.cpu_ms['worker']:5.2f} ms each), "
        f"updates {run.updates.rate:6.1f}/s (worker {run.updates.cpu_ms['worker']:5.2f} ms each)"
    )
    print(line, flush=True)
    if run.settled:
        print(
            f"        with their echoes: creates {run.with_echoes(run.creates, 0):6.1f}/s, "
            f"updates {run.with_echoes(run.updates, 1):6.1f}/s"
        )
    for phase, settled in zip(("creates", "updates"), run.settled, strict=False):
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(settled.outcomes.items()))
        print(
            f"        {phase}' echoes: {settled.events} events -> {outcomes}; "
            f"V1 calls {settled.v1_calls}; settled {settled.seconds:.1f} s after the phase, "
            f"worker {settled.cpu_ms['worker']:.2f} ms per event meanwhile"
        )
    for echoes in run.echo_rounds:
        print(
            f"        echoes alone: {echoes.rate:6.1f}/s, worker "
            f"{echoes.cpu_ms['worker']:.2f} ms, bridge {echoes.cpu_ms['bridge']:.2f} ms,"
            f" nats-server {echoes.cpu_ms['nats-server']:.2f} ms per echo"
        )
    if run.echo_rounds:
        print(f"        V1 calls during the echoes alone: {run.echo_v1_calls}")
    if run.v1_writes is not None:
        print(
            f"        V1 writes alone: {run.v1_writes.rate:6.1f}/s, worker "
            f"{run.v1_writes.cpu_ms['worker']:.2f} ms per write; V1 calls {run.v1_write_calls}"
        )


def expected(forward_ms: float, echo_ms: float) -> float:
    return forward_ms / (forward_ms + echo_ms) if forward_ms + echo_ms > 0 else float("nan")


def summarize(runs: list[Run]) -> int:
    """The medians per mode, on/off, the reverse figures; 1 when a target is missed."""

    def median(mode: str, pick: Callable[[Run], float]) -> float:
        return statistics.median(pick(r) for r in runs if r.mode == mode)

    def creates(r: Run) -> float:
        return r.creates.rate if r.creates else 0.0

    def updates(r: Run) -> float:
        return r.updates.rate if r.updates else 0.0

    def creates_cpu(r: Run) -> float:
        return r.creates.cpu_ms["worker"] if r.creates else 0.0

    def updates_cpu(r: Run) -> float:
        return r.updates.cpu_ms["worker"] if r.updates else 0.0

    def creates_sustained(r: Run) -> float:
        return r.with_echoes(r.creates, 0)

    def updates_sustained(r: Run) -> float:
        return r.with_echoes(r.updates, 1)

    ratios: list[float] = []
    both = {r.mode for r in runs} >= set(MODES)
    if both:
        print("\nmedians                     off      on   on/off")
        for label, pick in (
            ("creates/s", creates),
            ("updates/s", updates),
            ("ms/create", creates_cpu),
            ("ms/update", updates_cpu),
            ("creates/s with echoes", creates_sustained),
            ("updates/s with echoes", updates_sustained),
        ):
            off, on = median("off", pick), median("on", pick)
            ratio = on / off if off else float("nan")
            if label.endswith("/s"):
                ratios.append(ratio)
            print(f"{label:<22} {off:8.2f} {on:8.2f} {ratio:7.2f}")
    on_runs = [r for r in runs if r.mode == "on"]
    echo_calls = sum(s.v1_calls for r in on_runs for s in r.settled)
    echo_calls += sum(r.echo_v1_calls for r in on_runs)
    skipped = sum(s.outcomes.get(ECHO, 0) for r in on_runs for s in r.settled)
    echoes = [e for r in on_runs for e in r.echo_rounds]
    skipped += sum(e.objects for e in echoes)
    if echoes:
        echo_ms = statistics.median(e.cpu_ms["worker"] for e in echoes)
        print(
            f"echoes one worker handles: {statistics.median(e.rate for e in echoes):.0f}/s; "
            f"worker CPU per echo {echo_ms:.2f} ms"
            f" (bridge {statistics.median(e.cpu_ms['bridge'] for e in echoes):.2f} ms)"
        )
        if both:
            # A worker that is CPU-bound does F + E ms per forward write with the switch on.
            print(
                "on/off of a CPU-bound worker, F / (F + E) (F: worker ms per forward write "
                f"with the switch off, E: per echo): creates "
                f"{expected(median('off', creates_cpu), echo_ms):.2f}, updates "
                f"{expected(median('off', updates_cpu), echo_ms):.2f}"
            )
    writes = [r.v1_writes for r in on_runs if r.v1_writes]
    if writes:
        print(
            f"V1 writes one worker handles: {statistics.median(w.rate for w in writes):.0f}/s; "
            f"worker CPU per write {statistics.median(w.cpu_ms['worker'] for w in writes):.2f} ms"
        )
    print(f"echoes skipped {skipped}, V1 calls caused by echoes {echo_calls}")
    ok = all(ratio >= 1 - MAX_DROP for ratio in ratios) and echo_calls == 0
    measured = f"creates {ratios[0]:.2f}, updates {ratios[1]:.2f}" if ratios else "not run"
    print(
        f"targets: forward on/off >= {1 - MAX_DROP:.2f} ({measured}); "
        f"no V1 call by an echo ({echo_calls})"
    )
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


async def run_all(bench: SwitchBench) -> int:
    nc = await connect(bench.nats_server.url, "bench-v2-to-v1")
    js = nc.jetstream()
    await ensure_buckets(js, OBJECTS, MAPPINGS)
    runs: list[Run] = []
    try:
        for index in range(1, bench.args.runs + 1):
            for mode in bench.args.modes.split(","):
                run = await bench.run_mode(js, mode, index)
                print_run(run, index)
                runs.append(run)
    finally:
        await nc.close()
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return summarize(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="creates, then updates")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs of each mode")
    parser.add_argument("--parents", type=int, default=DEFAULT_PARENTS, help="projects")
    parser.add_argument(
        "--echo-rounds", type=int, default=DEFAULT_ECHO_ROUNDS, help="of the echoes alone"
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="the modes of a run, in order ('on': the reverse figures alone)",
    )
    parser.add_argument("--v2-latency", type=float, default=0.02, help="seconds")
    parser.add_argument(
        "--no-v1-writes", dest="v1_writes", action="store_false", help="skip the V1-writes phase"
    )
    parser.add_argument(
        "--worker-arg",
        dest="worker_args",
        action="append",
        default=[],
        help="extra argument of v1-sync-helper worker (repeat), e.g. --worker-arg=-c16",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--profile-dir", help="py-spy profiles of the worker per phase (needs py-spy)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-v2-to-v1-"))
    bench = SwitchBench(args, workdir)
    code = 1
    try:
        bench.start()
        code = asyncio.run(run_all(bench))
    finally:
        bench.stop()
        if args.keep:
            print(f"logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
