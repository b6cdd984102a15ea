"""The chaos proof: the real pipeline under fire, and the figures of what survived.

Runs the real processes (2 bridges and 2 workers as ``python -m v1_sync_helper
bridge|worker``, nats-server, valkey with AOF ``everysec``) against the
sandbox's V2 fakes answering 10% 503, 5% 429 and dropping 1% of connections
(half of them after doing the work). While ``keys`` keys are each written
``writes`` times, it SIGKILLs (and restarts) a worker every few seconds, one
bridge once, restarts valkey once gracefully and once with SIGKILL, and
nats-server once. Then it waits for the pipeline to settle and measures:

- converged: keys whose V2 object shows their last revision;
- lost: the others;
- duplicates: V2 objects beyond one per key;
- stray dead letters: every dead letter (no record here is malformed);
- crashes: pipeline processes that exited without being killed;
- healed after an empty broker: with the workers stopped, ``empty_broker_keys``
  changes are enqueued and acked by the bridges, valkey restarts with no data,
  and the count of them that reach V2 with no operator action.

With ``SYNC_V2_TO_V1`` on (the default; ``--no-reverse`` leaves it off), a
person edits committees from V1 and their members in V2 meanwhile, the V1
committee API answering 503, 429 and dropping answers: ``tests.chaos_reverse``
(what is checked, and how V1 writes are counted) prints a second figure line.

``python -m tests.chaos_harness --seed 7 --keys 300 --duration 60`` (``make
chaos``) prints the figure lines; ``tests/test_chaos.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.servers import NatsServer, ValkeyServer, free_port
from sandbox.service import Sandbox
from sandbox.stack import ChildProcess, create_buckets, pipeline_command
from sandbox.traffic import RandomFaults
from sync_core.nats_client import SyncNats
from tests.chaos_reverse import (
    NATS_SETTLE_SECONDS,
    V2_EVENTS_STREAM,
    PersonEdits,
    ReverseConfig,
    ReverseFigures,
)
from tests.chaos_reverse import settle as settle_reverse
from tests.v1_examples import COMMITTEE_JSON, PROJECT_JSON, record
from tests.worker_process import AUTH0_CLIENT, KID, base_env

log = logging.getLogger(__name__)

OBJECTS = "v1-objects"
MAPPINGS = "v1-mappings"
QUEUE = "celery"
CONSUMER = "v1-sync-helper-kv-consumer"
MACHINE_USER = "v1_sync_helper@clients"
POLL_SECONDS = 0.5
WORKER_CONCURRENCY = "8"

# The fault mix of issue 12.
FAULTS = {"unavailable": 0.10, "rate_limited": 0.05, "dropped": 0.01}
# The V1 committee API's (V2 -> V1): more lost answers, the path that must not duplicate.
V1_FAULTS = {"unavailable": 0.10, "rate_limited": 0.05, "dropped": 0.05}
V2_EVENTS_CONSUMER = "v1-sync-helper-v2-events-consumer"
PRELUDE_TIMEOUT = 60.0
DEFAULT_REVERSE = ReverseConfig()

# Quicker retries than production so a run settles in minutes. The reconciler
# keeps its production timing unless the config shortens it (the suite does).
CHAOS_ENV = {
    "SYNC_RETRY_MAX": "10",
    "SYNC_RETRY_BACKOFF_BASE": "0.5",
    "SYNC_RETRY_BACKOFF_MAX": "4",
    "HTTP_TIMEOUT": "5",
    # The V1 fake's loader writes a row back before V1 answers (no lag): a create
    # whose worker died before the POST is sent again 5 s later, not after an hour.
    "SYNC_V1_CREATE_CONFIRM_WAIT": "5",
}
DEFAULT_RECONCILE_INTERVAL = 60.0
DEFAULT_RECONCILE_GRACE = 30.0


@dataclass(frozen=True)
class ChaosConfig:
    """One chaos run: what is written, for how long, and how long it may settle."""

    seed: int = 1
    keys: int = 180
    writes: int = 3
    duration: float = 60.0
    settle_timeout: float = 180.0
    empty_broker_keys: int = 20
    heal_timeout: float = 120.0
    worker_kill_every: float = 6.0
    child_fraction: float = 0.2
    committee_fraction: float = 0.35
    reconcile_interval: float = DEFAULT_RECONCILE_INTERVAL
    reconcile_grace: float = DEFAULT_RECONCILE_GRACE
    # Worker kills happen in the first fraction of the window; bridge kills at these fractions.
    worker_kills_until: float = 1.0
    bridge_kills: tuple[float, ...] = (0.25,)
    # The V2 -> V1 half (``tests.chaos_reverse``); None: SYNC_V2_TO_V1 stays off.
    reverse: ReverseConfig | None = DEFAULT_REVERSE


@dataclass
class Figures:
    """What a run measured; ``line()`` is the one line ``make chaos`` prints."""

    config: ChaosConfig
    converged: int = 0
    lost: int = 0
    duplicates: int = 0
    stray_dead_letters: int = 0
    crashes: int = 0
    pending: int = 0
    stranded: int = 0
    healed: int = 0
    heal_seconds: float = 0.0
    settle_seconds: float = 0.0
    lost_keys: list[str] = field(default_factory=list)
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)
    reverse: ReverseFigures | None = None

    def line(self) -> str:
        c = self.config
        kinds = ",".join(f"{k}:{v}" for k, v in sorted(self.dead_letter_kinds.items())) or "-"
        return (
            f"chaos seed={c.seed} keys={c.keys}x{c.writes} duration={c.duration:g}s: "
            f"converged {self.converged}/{c.keys}, lost {self.lost}, "
            f"duplicates {self.duplicates}, stray dead letters {self.stray_dead_letters} "
            f"({kinds}), crashes {self.crashes}, pending {self.pending} "
            f"(stranded unacked {self.stranded}), "
            f"settled in {self.settle_seconds:.0f}s, reconcile every "
            f"{c.reconcile_interval:g}s (grace {c.reconcile_grace:g}s), "
            "healed after an empty broker "
            f"{self.healed}/{c.empty_broker_keys} in {self.heal_seconds:.0f}s"
        )

    @property
    def clean(self) -> bool:
        """Every key converged, no duplicate, no stray dead letter, nothing pending, all healed."""
        return (
            self.lost == 0
            and self.duplicates == 0
            and self.stray_dead_letters == 0
            and self.pending == 0
            and self.healed == self.config.empty_broker_keys
            and (self.reverse is None or self.reverse.clean)
        )


@dataclass
class KeyPlan:
    """One V1 key of the run: its record and the values of its writes, in order."""

    key: str
    kind: str  # "project" or "committee"
    sfid: str
    base: dict[str, Any]
    descriptions: list[str] = field(default_factory=list)

    @property
    def last(self) -> str:
        return self.descriptions[-1]

    def value(self, index: int) -> bytes:
        return json.dumps({**self.base, "description__c": self.descriptions[index]}).encode()


SFID_CHARS = 18


def plan_keys(rng: random.Random, config: ChaosConfig, prefix: str) -> list[KeyPlan]:
    """Projects (some children of earlier ones) and committees of those projects."""
    projects = max(1, round(config.keys * (1 - config.committee_fraction)))
    plans: list[KeyPlan] = []
    for index in range(projects):
        # An 18-character Salesforce id, as the task requires (alphanumeric).
        sfid = f"a09{prefix}{index:0{SFID_CHARS - 3 - len(prefix)}d}"
        assert len(sfid) == SFID_CHARS, sfid
        assert sfid.isalnum(), sfid
        parent = None
        if index and rng.random() < config.child_fraction:
            parent = plans[rng.randrange(index)].sfid
        base = record(
            PROJECT_JSON,
            sfid=sfid,
            name=f"Chaos {prefix} {index}",
            slug__c=f"chaos-{prefix}-{index}".lower(),
            parent_project__c=parent,
            lastmodifiedbyid=MACHINE_USER,
        )
        plans.append(KeyPlan(f"salesforce-project__c.{sfid}", "project", sfid, base))
    for index in range(config.keys - projects):
        sfid = str(uuid.UUID(int=rng.getrandbits(128)))
        owner = plans[rng.randrange(projects)].sfid
        base = record(
            COMMITTEE_JSON,
            sfid=sfid,
            mailing_list__c=f"Chaos committee {prefix} {index}",
            public_name=f"Chaos committee {prefix} {index}",
            project_name__c=owner,
            lastmodifiedbyid=MACHINE_USER,
        )
        plans.append(KeyPlan(f"platform-collaboration__c.{sfid}", "committee", sfid, base))
    for plan in plans:
        plan.descriptions = [f"{plan.sfid} revision {n}" for n in range(config.writes)]
    return plans


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class ChaosStack:
    """The servers, the sandbox and the pipeline processes of one run, under ``root``."""

    def __init__(self, root: Path, config: ChaosConfig, say: Callable[[str], None]) -> None:
        self.root = root
        self.config = config
        self.say = say
        self.nats = NatsServer(root / "nats")
        self.valkey = ValkeyServer(
            root / "valkey", appendonly=True, extra_args=("--appendfsync", "everysec")
        )
        heimdall = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        auth0 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._keys = (heimdall, auth0)
        self.sandbox: Sandbox | None = None
        self.bridges: list[ChildProcess] = []
        self.workers: list[ChildProcess] = []
        self.crashes = 0
        self.env: dict[str, str] = {}
        self.sync_nats: SyncNats | None = None
        self.redis: redis.Redis | None = None

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        heimdall, auth0 = self._keys
        self.nats.start()
        self.valkey.start()
        create_buckets(self.nats.url, OBJECTS, MAPPINGS)
        reverse = self.config.reverse is not None
        self.sandbox = Sandbox(
            heimdall_keys={KID: heimdall.public_key()},
            auth0_clients={AUTH0_CLIENT: auth0.public_key()},
            nats_url=self.nats.url,
            v1_objects_bucket=OBJECTS if reverse else None,
            publish_indexer_events=reverse,
        )
        self.sandbox.start()
        self.env = {
            **base_env(),
            **self.sandbox.env(),
            **CHAOS_ENV,
            "RECONCILE_INTERVAL": f"{self.config.reconcile_interval:g}",
            "RECONCILE_GRACE": f"{self.config.reconcile_grace:g}",
            "NATS_URL": self.nats.url,
            "REDIS_URL": self.valkey.url,
            "HEIMDALL_PRIVATE_KEY": _pem(heimdall),
            "HEIMDALL_KEY_ID": KID,
            "AUTH0_TENANT": "chaos",
            "AUTH0_CLIENT_ID": AUTH0_CLIENT,
            "AUTH0_PRIVATE_KEY": _pem(auth0),
            "BIND": "127.0.0.1",
            "SYNC_V2_TO_V1": "true" if reverse else "false",
        }
        logs = self.root / "logs"
        for index in range(2):
            env = {**self.env, "PORT": str(free_port())}
            self.bridges.append(
                ChildProcess(
                    f"bridge-{index}", pipeline_command("bridge"), env, logs / f"bridge-{index}.log"
                )
            )
        for index in range(2):
            env = {**self.env, "WORKER_METRICS_PORT": str(free_port())}
            argv = pipeline_command("worker", "--concurrency", WORKER_CONCURRENCY)
            self.workers.append(
                ChildProcess(f"worker-{index}", argv, env, logs / f"worker-{index}.log")
            )
        for child in self.bridges + self.workers:
            child.start()
        self.sync_nats = SyncNats(self.nats.url, "chaos-harness")
        self.redis = redis.Redis.from_url(self.valkey.url, socket_timeout=5)

    def stop(self) -> None:
        for child in self.bridges + self.workers:
            child.stop()
        if self.sync_nats is not None:
            self.sync_nats.close()
        if self.redis is not None:
            self.redis.close()
        if self.sandbox is not None:
            self.sandbox.stop()
        self.valkey.stop()
        self.nats.stop()

    # -- watching ---------------------------------------------------------------

    def reap(self) -> None:
        """Restart a pipeline process that died on its own (a crash), counting it."""
        for child in self.bridges + self.workers:
            if child.process is not None and child.exit_code is not None:
                self.crashes += 1
                self.say(f"{child.name} crashed (exit code {child.exit_code}); restarting it")
                child.restart()

    def put(self, plan: KeyPlan, index: int) -> None:
        assert self.sync_nats is not None
        try:
            self.sync_nats.kv_put(OBJECTS, plan.key, plan.value(index))
        except Exception:  # nats-server restarting: Meltano would retry too
            time.sleep(0.5)
            self.sync_nats.kv_put(OBJECTS, plan.key, plan.value(index))

    def mapping(self, key: str) -> str | None:
        assert self.sync_nats is not None
        try:
            entry = self.sync_nats.kv_get(MAPPINGS, key)
        except Exception:
            return None
        return None if entry is None else bytes(entry.value).decode()

    def converged(self, plan: KeyPlan) -> bool:
        """Whether V2 shows ``plan``'s last revision."""
        assert self.sandbox is not None
        prefix = "project" if plan.kind == "project" else "committee"
        uid = self.mapping(f"{prefix}.sfid.{plan.sfid}")
        if uid is None:
            return False
        table = self.sandbox.projects if plan.kind == "project" else self.sandbox.committees
        stored = table.get(uid)
        return stored is not None and stored.get("description") == plan.last

    def duplicates(self, plans: list[KeyPlan]) -> int:
        assert self.sandbox is not None
        names: dict[str, int] = {}
        for table in (self.sandbox.projects, self.sandbox.committees):
            for item in table.values():
                names[str(item.get("name"))] = names.get(str(item.get("name")), 0) + 1
        wanted = {str(p.base.get("name") or p.base.get("mailing_list__c")) for p in plans}
        return sum(count - 1 for name, count in names.items() if name in wanted and count > 1)

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, through the operator command (wherever they are stored)."""
        result = subprocess.run(
            pipeline_command("dlq", "list", "--json"),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0 or not result.stdout.strip():
            return []
        data = json.loads(result.stdout)
        return list(data if isinstance(data, list) else data.get("dead_letters", []))

    def events_pending(self) -> int:
        """V2 events the bridges have not enqueued and acked yet (-1: NATS unreachable)."""
        assert self.sync_nats is not None
        try:
            info = self.sync_nats.run(
                self.sync_nats.js.consumer_info(V2_EVENTS_STREAM, V2_EVENTS_CONSUMER)
            )
        except Exception:
            return -1
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    @property
    def heimdall_key(self) -> rsa.RSAPrivateKey:
        return self._keys[0]

    def stranded(self) -> int:
        """Deliveries in kombu's unacked set (a dead worker's, until the visibility timeout)."""
        assert self.redis is not None
        try:
            return int(self.redis.hlen("unacked"))
        except redis.RedisError:
            return -1

    def pending(self) -> int:
        """Tasks queued in Redis plus changes the JetStream consumer has not delivered or acked."""
        assert self.redis is not None
        assert self.sync_nats is not None
        try:
            queued = int(self.redis.llen(QUEUE))
        except redis.RedisError:
            return -1
        try:
            info = self.sync_nats.run(self.sync_nats.js.consumer_info(f"KV_{OBJECTS}", CONSUMER))
        except Exception:
            return -1
        return queued + int(info.num_pending or 0) + int(info.num_ack_pending or 0)


def run_chaos(config: ChaosConfig, root: Path, say: Callable[[str], None] = print) -> Figures:
    """Run one chaos scenario under ``root``; the figures (see the module docstring)."""
    rng = random.Random(config.seed)
    stack = ChaosStack(root, config, say)
    figures = Figures(config)
    plans = plan_keys(rng, config, f"s{config.seed}")
    writes = [(plan, n) for plan in plans for n in range(config.writes)]
    rng.shuffle(writes)
    # Each key's writes in order (a later revision never before an earlier one).
    seen: dict[str, int] = {}
    ordered = []
    for plan, _ in writes:
        ordered.append((plan, seen.get(plan.key, 0)))
        seen[plan.key] = seen.get(plan.key, 0) + 1
    person: PersonEdits | None = None
    try:
        stack.start()
        assert stack.sandbox is not None
        if config.reverse is not None:
            person = _person_prelude(stack, config, config.reverse, say)
            stack.sandbox.set_v1_random_faults(RandomFaults(seed=config.seed, **V1_FAULTS))
        stack.sandbox.set_random_faults(RandomFaults(seed=config.seed, **FAULTS))
        _chaos_phase(stack, config, rng, ordered, say, person)
        started = time.monotonic()
        deadline = started + config.settle_timeout
        while time.monotonic() < deadline:
            stack.reap()
            if all(stack.converged(p) for p in plans) and stack.pending() == 0:
                break
            time.sleep(POLL_SECONDS)
        figures.settle_seconds = time.monotonic() - started
        if person is not None and config.reverse is not None:
            seconds = settle_reverse(
                person, config.reverse.settle_timeout, stack.events_pending, stack.reap
            )
            stack.sandbox.set_v1_random_faults(None)
            figures.reverse = person.figures(seconds, max(0, stack.events_pending()))
        stack.sandbox.set_random_faults(None)
        lost = [p.key for p in plans if not stack.converged(p)]
        figures.lost_keys = lost
        figures.lost = len(lost)
        figures.converged = len(plans) - len(lost)
        figures.duplicates = stack.duplicates(plans)
        letters = stack.dead_letters()
        figures.stray_dead_letters = len(letters)
        for letter in letters:
            kind = str(letter.get("error_kind", "?"))
            figures.dead_letter_kinds[kind] = figures.dead_letter_kinds.get(kind, 0) + 1
        figures.pending = max(0, stack.pending())
        figures.stranded = max(0, stack.stranded())
        figures.healed, figures.heal_seconds = _empty_broker_phase(stack, config, rng, say)
        figures.crashes = stack.crashes
    finally:
        if person is not None:
            person.close()
        stack.stop()
    return figures


def _person_prelude(
    stack: ChaosStack, config: ChaosConfig, reverse: ReverseConfig, say: Callable[[str], None]
) -> PersonEdits:
    """Committees from V1 in V2 before the window, for the person to edit during it."""
    # A generator of its own: the forward plan and kills stay those of the seed.
    rng = random.Random(f"reverse-{config.seed}")
    projects = max(1, reverse.committees // 3)
    total = projects + reverse.committees
    plans = plan_keys(
        rng,
        ChaosConfig(
            keys=total,
            writes=1,
            committee_fraction=reverse.committees / total,
            child_fraction=0.0,
        ),
        f"r{config.seed}",
    )
    person = PersonEdits(stack, reverse, rng, stack.heimdall_key, KID)
    person.prelude(plans, PRELUDE_TIMEOUT)
    say(f"  {reverse.committees} committees from V1 are in V2; the person edits them")
    return person


def _chaos_phase(
    stack: ChaosStack,
    config: ChaosConfig,
    rng: random.Random,
    writes: list[tuple[KeyPlan, int]],
    say: Callable[[str], None],
    person: PersonEdits | None = None,
) -> None:
    """Write everything over ``duration`` while killing and restarting processes.

    With ``person``, the person's V2 edits are made alongside (``tests.chaos_reverse``).
    """
    start = time.monotonic()
    duration = config.duration
    events: list[tuple[float, str]] = [
        (0.40 * duration, "valkey-graceful"),
        (0.60 * duration, "valkey-sigkill"),
        (0.75 * duration, "nats-restart"),
    ]
    events += [(at * duration, "kill-bridge") for at in config.bridge_kills]
    t = config.worker_kill_every
    while t < duration * config.worker_kills_until:
        events.append((t, "kill-worker"))
        t += config.worker_kill_every
    events.sort()
    if person is not None and config.reverse is not None:
        first, last = config.reverse.window
        person.schedule(start + first * duration, start + last * duration)
    revived: list[tuple[float, ChildProcess]] = []
    bridge_kills = 0
    done = 0
    while done < len(writes) or events or revived:
        now = time.monotonic() - start
        if person is not None:
            person.step()
        due = min(len(writes), int(len(writes) * min(1.0, now / duration)) + 1)
        while done < due:
            plan, index = writes[done]
            stack.put(plan, index)
            done += 1
        while events and events[0][0] <= now:
            _, action = events.pop(0)
            say(f"  t={now:5.1f}s {action}")
            if action == "kill-worker":
                worker = rng.choice(stack.workers)
                worker.kill()
                revived.append((now + 1.0, worker))
            elif action == "kill-bridge":
                bridge = stack.bridges[bridge_kills % len(stack.bridges)]
                bridge_kills += 1
                bridge.kill()
                revived.append((now + 3.0, bridge))
            elif action == "valkey-graceful":
                stack.valkey.restart()
            elif action == "valkey-sigkill":
                stack.valkey.restart(hard=True)
            elif action == "nats-restart":
                stack.nats.restart()
                if person is not None:
                    person.pause(NATS_SETTLE_SECONDS)
        for item in [r for r in revived if r[0] <= now]:
            revived.remove(item)
            item[1].restart()
        # Processes we killed wait for their restart; any other death is a crash.
        waiting = {id(child) for _, child in revived}
        for child in stack.bridges + stack.workers:
            if (
                id(child) not in waiting
                and child.process is not None
                and child.exit_code is not None
            ):
                stack.crashes += 1
                say(f"  {child.name} crashed (exit code {child.exit_code}); restarting it")
                child.restart()
        time.sleep(0.05)


def _empty_broker_phase(
    stack: ChaosStack, config: ChaosConfig, rng: random.Random, say: Callable[[str], None]
) -> tuple[int, float]:
    """Acked changes lost with Redis: how many reach V2 with no operator action, and when."""
    if config.empty_broker_keys <= 0:
        return 0, 0.0
    for worker in stack.workers:
        worker.stop()
    plans = plan_keys(
        rng,
        ChaosConfig(
            keys=config.empty_broker_keys, writes=1, committee_fraction=0.0, child_fraction=0.0
        ),
        f"e{config.seed}",
    )
    for plan in plans:
        stack.put(plan, 0)
    # Wait until the bridges have enqueued and acked them all.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert stack.redis is not None
        try:
            if stack.pending() >= 0 and int(stack.redis.llen(QUEUE)) >= len(plans):
                info = stack.sync_nats.run(  # type: ignore[union-attr]
                    stack.sync_nats.js.consumer_info(f"KV_{OBJECTS}", CONSUMER)  # type: ignore[union-attr]
                )
                if not info.num_pending and not info.num_ack_pending:
                    break
        except Exception:
            pass
        time.sleep(POLL_SECONDS)
    say(f"  {len(plans)} changes acked and queued; valkey restarts empty")
    stack.valkey.kill()
    shutil.rmtree(stack.valkey.data_dir, ignore_errors=True)
    stack.valkey.data_dir.mkdir(parents=True)
    stack.valkey.start()
    started = time.monotonic()
    for worker in stack.workers:
        worker.restart()
    deadline = started + config.heal_timeout
    healed = 0
    while time.monotonic() < deadline:
        stack.reap()
        healed = sum(1 for p in plans if stack.converged(p))
        if healed == len(plans):
            break
        time.sleep(POLL_SECONDS)
    return healed, time.monotonic() - started


@contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="v1sync-chaos-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``make chaos``: one seeded run, one figure line; exit 1 unless it came out clean."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keys", type=int, default=180)
    parser.add_argument("--writes", type=int, default=3)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=180.0)
    parser.add_argument("--empty-broker-keys", type=int, default=20)
    parser.add_argument("--heal-timeout", type=float, default=150.0)
    parser.add_argument("--reconcile-interval", type=float, default=DEFAULT_RECONCILE_INTERVAL)
    parser.add_argument("--reconcile-grace", type=float, default=DEFAULT_RECONCILE_GRACE)
    parser.add_argument(
        "--no-reverse", action="store_true", help="leave SYNC_V2_TO_V1 off (forward only)"
    )
    parser.add_argument("--reverse-committees", type=int, default=DEFAULT_REVERSE.committees)
    parser.add_argument("--reverse-settle", type=float, default=DEFAULT_REVERSE.settle_timeout)
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    args = parser.parse_args(argv)
    config = ChaosConfig(
        seed=args.seed,
        keys=args.keys,
        writes=args.writes,
        duration=args.duration,
        settle_timeout=args.settle,
        empty_broker_keys=args.empty_broker_keys,
        heal_timeout=args.heal_timeout,
        reconcile_interval=args.reconcile_interval,
        reconcile_grace=args.reconcile_grace,
        reverse=None
        if args.no_reverse
        else ReverseConfig(committees=args.reverse_committees, settle_timeout=args.reverse_settle),
    )
    # The harness's own NATS client complains through every nats-server restart.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("sync_core.nats_client").setLevel(logging.CRITICAL)
    with _workdir(args.keep) as root:
        figures = run_chaos(config, root, say=lambda text: print(text, file=sys.stderr))
        if args.keep:
            print(f"logs in {root / 'logs'}", file=sys.stderr)
    if figures.lost_keys:
        print(f"lost: {', '.join(figures.lost_keys[:10])}", file=sys.stderr)
    print(figures.line())
    if figures.reverse is not None:
        if figures.reverse.unconverged:
            print(f"not in V1: {', '.join(figures.reverse.unconverged[:10])}", file=sys.stderr)
        print(figures.reverse.line())
    return 0 if figures.clean else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
