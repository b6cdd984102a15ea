"""What ``v1-sync-helper dev`` does: run the pipeline on the local stack and watch it sync.

Embedded mode (the default): start nats-server and valkey under ``.run/``, the
sandbox in this process, then the bridge, a worker and Flower as child
processes; load the sample data; print progress and a summary. External mode
(``NATS_URL``, ``REDIS_URL`` and ``PROJECT_SERVICE_URL`` all set): start only
the bridge, a worker and Flower against those services.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from nats.js.errors import NotFoundError
from pydantic import TypeAdapter, ValidationError

from sandbox.edit_check import EditCheck, StackView, check_edits, v1_write_counts
from sandbox.sample_check import differences, expected_mappings
from sandbox.sample_loader import load_samples
from sandbox.samples import (
    crowdfunding_slugs,
    dead_letter_reasons,
    load_expected,
    load_organizations,
    load_users,
)
from sandbox.service import Sandbox
from sandbox.stack import (
    AUTH0_CLIENT_ID,
    AUTH0_TENANT,
    DEV_RETRY_ENV,
    DEV_V2_TO_V1_ENV,
    FLOWER_USER,
    HEIMDALL_KEY_ID,
    PREFERRED_PORTS,
    ChildProcess,
    EmbeddedServers,
    Supervisor,
    create_buckets,
    load_or_create_key,
    load_or_create_password,
    pipeline_processes,
    port_or_free,
    write_stack_file,
)
from sandbox.v2_edits import (
    EDITS,
    PERSON,
    AppliedEdit,
    PersonClient,
    apply_edits,
    expected_after_edits,
)
from sandbox.v2_to_v1_summary import (
    V2ToV1Counts,
    bridge_v2_echoes_skipped,
    v2_events_skipped_as_echo,
    worker_v2_to_v1_outcomes,
)
from sync_core.nats_client import SyncNats
from sync_core.nats_connection import redact_url
from sync_core.settings import DEFAULT_V2_EVENTS_STREAM
from sync_core.sync_state import DEFAULT_STATE_BUCKET
from tasks.errors import DELETE_REFUSED_KIND
from tasks.run.outcomes import recent_outcomes
from tasks.stores.dead_letters import DeadLetterStore
from tasks.stores.id_mappings import MappingStore

EXTERNAL_MARKERS = ("NATS_URL", "REDIS_URL", "PROJECT_SERVICE_URL")
HEIMDALL_CLIENT_ID = "v1_sync_helper"
POLL_INTERVAL = 0.5
DEAD_LETTERED = "dead_lettered"
SUMMARY_OUTCOMES = (
    "created",
    "updated",
    "unchanged",
    "superseded",
    "skipped",
    "retrying",
    "dead_lettered",
    "deleted",
    "delete_refused",
    "skipped:tombstoned",
    "skipped:not_in_v2",
    "skipped:deletes_disabled",
    "skipped:echo",
)
# The delete outcomes the sample set makes: the summary must count exactly its numbers.
CHECKED_DELETE_OUTCOMES = ("deleted", "delete_refused", "skipped:tombstoned", "skipped:not_in_v2")
MAPPINGS_BUCKET = "v1-mappings"
OBJECTS_BUCKET = "v1-objects"
V2_EVENT_KEY_PREFIX = "v2."
# The Celery queue the pipeline's tasks wait in (CELERY_QUEUE's default).
CELERY_QUEUE = "celery"


def external_mode(environ: dict[str, str] | None = None) -> bool:
    """True when the environment names real services to run against."""
    env = os.environ if environ is None else environ
    return all(env.get(name) for name in EXTERNAL_MARKERS)


def _pem_text(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Let SIGTERM end the session the way Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say(text: str) -> None:
    click.echo(text, err=False)


@dataclass
class Progress:
    """What the sandbox and the dead letters hold right now."""

    projects: int
    committees: int
    members: int
    dead_letters: dict[str, str]
    queue_depth: int
    deleted: int = 0
    phase: int = 0

    def line(self, expected: dict[str, int]) -> str:
        """One progress line against what V2 must hold at the end."""
        return (
            f"  phase {self.phase}/{expected['phases']}  "
            f"projects {self.projects}/{expected['projects_in_v2']}  "
            f"committees {self.committees}/{expected['committees_in_v2']}  "
            f"members {self.members}/{expected['members_in_v2']}  "
            f"deleted {self.deleted}/{expected['deleted']}  "
            f"dead letters {len(self.dead_letters)}/{expected['dead_letters']}  "
            f"queue {self.queue_depth}"
        )


@dataclass
class SampleLoad:
    """The phased sample load (``sandbox.sample_loader``), beside the progress display."""

    nats_url: str
    # The V2 edit phase (SYNC_V2_TO_V1 on): run once the sample phases settled.
    edit: Callable[[], list[AppliedEdit]] | None = None
    phase: int = 0
    count: int = 0
    applied: list[AppliedEdit] | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        """Write the phases in a thread: each waits for the one before to settle."""
        self.thread = threading.Thread(target=self._run, name="sample-load", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self.count = load_samples(
                self.nats_url, say=self._phase_written, settle_last=self.edit is not None
            )
            if self.edit is not None:
                self.applied = self.edit()
                self._phase_written(
                    f"Phase {self.phase + 1} (V2 edits): {PERSON.principal} made "
                    f"{len(self.applied)} edits in V2 at {time.monotonic() - started:.1f} s"
                )
        except BaseException as error:  # reported by the session, never lost in the thread
            self.error = error

    def _phase_written(self, text: str) -> None:
        self.phase += 1
        _say(text)

    @property
    def done(self) -> bool:
        """Whether every phase is written (or the load failed)."""
        return self.thread is not None and not self.thread.is_alive()


@dataclass
class DevSession:
    """One run of the embedded local stack."""

    run_dir: Path
    timeout: float
    servers: EmbeddedServers = field(init=False)
    sandbox: Sandbox | None = None
    children: list[ChildProcess] = field(default_factory=list)
    supervisor: Supervisor | None = None
    redis_client: redis.Redis | None = None
    nats_client: SyncNats | None = None
    load: SampleLoad | None = None
    # The V2 events' stream when SYNC_V2_TO_V1 is on for the pipeline, else None.
    v2_events_stream: str | None = None
    heimdall_key: RSAPrivateKey | None = None
    worker_metrics_url: str | None = None
    bridge_metrics_url: str | None = None
    # How many requests the sandbox had answered when the V2 edits began.
    edits_began: int | None = None

    def __post_init__(self) -> None:
        self.servers = EmbeddedServers(self.run_dir)

    # -- start and stop --------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Start every piece; returns the environment the pipeline processes got."""
        heimdall = load_or_create_key(self.run_dir / "keys" / "heimdall.pem")
        self.heimdall_key = heimdall
        auth0 = load_or_create_key(self.run_dir / "keys" / "auth0.pem")
        password = load_or_create_password(self.run_dir / "flower-password")
        self.servers.start()
        assert self.servers.nats is not None
        assert self.servers.valkey is not None
        create_buckets(self.servers.nats.url)
        self.sandbox = Sandbox(
            heimdall_keys={HEIMDALL_KEY_ID: heimdall.public_key()},
            auth0_clients={AUTH0_CLIENT_ID: auth0.public_key()},
            users=load_users(),
            organizations=load_organizations(),
            nats_url=self.servers.nats.url,
            port=port_or_free(PREFERRED_PORTS["sandbox"]),
            # V1 sends no funding model: the sample's crowdfunded projects are named.
            crowdfunding_slugs=crowdfunding_slugs(),
            # V2 -> V1 (DEV_V2_TO_V1_ENV): the committee fakes publish the indexer's
            # events, and the V1 committee API fake writes its changes into v1-objects.
            v1_objects_bucket=OBJECTS_BUCKET,
            publish_indexer_events=True,
        )
        self.sandbox.start()
        env = dict(os.environ)
        env.update(self.sandbox.env())
        env.update(DEV_RETRY_ENV)
        # DEV_V2_TO_V1_ENV unless the caller's environment says otherwise.
        for name, value in DEV_V2_TO_V1_ENV.items():
            env.setdefault(name, value)
        env.update(
            {
                "NATS_URL": self.servers.nats.url,
                "REDIS_URL": self.servers.valkey.url,
                "HEIMDALL_CLIENT_ID": HEIMDALL_CLIENT_ID,
                "HEIMDALL_KEY_ID": HEIMDALL_KEY_ID,
                "HEIMDALL_PRIVATE_KEY": _pem_text(heimdall),
                "AUTH0_TENANT": AUTH0_TENANT,
                "AUTH0_CLIENT_ID": AUTH0_CLIENT_ID,
                "AUTH0_PRIVATE_KEY": _pem_text(auth0),
                "PORT": str(port_or_free(PREFERRED_PORTS["bridge"])),
                "BIND": "127.0.0.1",
                "WORKER_METRICS_PORT": str(port_or_free(PREFERRED_PORTS["worker_metrics"])),
                "FLOWER_PORT": str(port_or_free(PREFERRED_PORTS["flower"])),
                "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{password}",
            }
        )
        try:
            v2_to_v1 = TypeAdapter(bool).validate_python(env["SYNC_V2_TO_V1"])
        except ValidationError:
            # Said before any pipeline process starts (they would each exit 2 on it).
            raise RuntimeError(f"SYNC_V2_TO_V1={env['SYNC_V2_TO_V1']!r} is not a boolean") from None
        if v2_to_v1:
            self.v2_events_stream = env.get("V2_EVENTS_STREAM") or DEFAULT_V2_EVENTS_STREAM
        self.worker_metrics_url = f"http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics"
        self.bridge_metrics_url = f"http://127.0.0.1:{env['PORT']}/metrics"
        self.redis_client = redis.Redis.from_url(self.servers.valkey.url, socket_timeout=5)
        self.children = pipeline_processes(env, self.run_dir / "logs")
        for child in self.children:
            child.start()
        self.supervisor = Supervisor(self.children, _say)
        write_stack_file(
            self.run_dir,
            {
                "nats_url": self.servers.nats.url,
                "redis_url": self.servers.valkey.url,
                "sandbox_url": self.sandbox.url,
            },
        )
        return env

    def stop(self) -> None:
        """Stop the pipeline processes, the sandbox and the servers, in that order."""
        for child in self.children:
            child.stop()
        if self.sandbox is not None:
            self.sandbox.stop()
        if self.redis_client is not None:
            self.redis_client.close()
        if self.nats_client is not None:
            self.nats_client.close()
        self.servers.stop()

    # -- watching ----------------------------------------------------------------

    def crashed_child(self) -> ChildProcess | None:
        """A pipeline process in a crash loop; the others that died are restarted."""
        if self.supervisor is None:
            return next((c for c in self.children if c.exit_code is not None), None)
        return self.supervisor.check()

    def dead_letters(self) -> DeadLetterStore:
        """The dead letters of the local stack (in JetStream)."""
        if self.nats_client is None:
            assert self.servers.nats is not None
            self.nats_client = SyncNats(self.servers.nats.url, "dev-session")
        return DeadLetterStore(self.nats_client, DEFAULT_STATE_BUCKET)

    def mappings(self) -> MappingStore:
        """The ``v1-mappings`` of the local stack (read as they are, tombstones included)."""
        self.dead_letters()  # opens the NATS client
        assert self.nats_client is not None
        return MappingStore(self.nats_client, MAPPINGS_BUCKET)

    def captured_v2_events(self) -> int | None:
        """Events in the V2 events' stream; None when off or before the bridge made it."""
        if self.v2_events_stream is None:
            return None
        self.dead_letters()  # opens the NATS client
        assert self.nats_client is not None
        client = self.nats_client
        try:
            info = client.run(client.js.stream_info(self.v2_events_stream))
        except NotFoundError:
            return None
        return int(info.state.messages)

    def v2_to_v1_counts(self) -> V2ToV1Counts | None:
        """What the V2 -> V1 direction did in this run (None when it is off).

        The V1 rows skipped as echoes are those the V1 API wrote back for the
        edits (read afresh: the last poll may have stopped before checking them).
        """
        if self.v2_events_stream is None:
            return None
        assert self.sandbox is not None
        check = self.check_edits()
        results = check.results if check is not None else []
        letters = [d.key for d in self.dead_letters().list()]
        outcomes = (
            worker_v2_to_v1_outcomes(self.worker_metrics_url) if self.worker_metrics_url else {}
        )
        bridge_echoes = (
            bridge_v2_echoes_skipped(self.bridge_metrics_url) if self.bridge_metrics_url else None
        )
        return V2ToV1Counts(
            stream=self.v2_events_stream,
            captured=self.captured_v2_events(),
            v1_writes=v1_write_counts(self.sandbox.requests),
            v2_events_skipped_as_echo=v2_events_skipped_as_echo(outcomes, bridge_echoes),
            v1_rows_skipped_as_echo=sum(result.echo_skipped for result in results),
            v1_rows_written_back=sum(result.v1_key is not None for result in results),
            dead_letters=sum(key.startswith(V2_EVENT_KEY_PREFIX) for key in letters),
        )

    def v2_to_v1_lines(self) -> list[str]:
        """What the V2 -> V1 direction did in this run (the summary's lines)."""
        counts = self.v2_to_v1_counts()
        return ["off (SYNC_V2_TO_V1=false)"] if counts is None else counts.lines()

    def expected(self) -> dict[str, Any]:
        """What the run must end with: the sample's expectations, after the V2 edits if on."""
        expected = load_expected()
        return expected if self.v2_events_stream is None else expected_after_edits(expected)

    def make_edits(self) -> list[AppliedEdit]:
        """The V2 edit phase: ``PERSON`` edits through the sandbox's V2 API (``v2_edits``)."""
        assert self.sandbox is not None
        assert self.heimdall_key is not None
        assert self.servers.nats is not None
        self.edits_began = len(self.sandbox.requests)
        client = PersonClient(self.sandbox.url, self.heimdall_key, HEIMDALL_KEY_ID)
        nats = SyncNats(self.servers.nats.url, "dev-edits")
        try:
            return apply_edits(client, MappingStore(nats, MAPPINGS_BUCKET), EDITS)
        finally:
            client.close()
            nats.close()

    def check_edits(self) -> EditCheck | None:
        """Where the V2 edits are in V1 (None before they are made)."""
        applied = self.load.applied if self.load is not None else None
        if applied is None or self.edits_began is None:
            return None
        assert self.sandbox is not None
        self.dead_letters()  # opens the NATS client
        assert self.nats_client is not None
        view = StackView(
            nats=self.nats_client,
            objects_bucket=OBJECTS_BUCKET,
            state_bucket=DEFAULT_STATE_BUCKET,
            mappings=self.mappings(),
            requests=self.sandbox.requests,
            edits_began=self.edits_began,
            auth0_client_id=AUTH0_CLIENT_ID,
        )
        return check_edits(applied, view)

    def start_loading(self, nats_url: str) -> None:
        """Write the sample set, phase by phase, then (when on) the V2 edits."""
        edit = self.make_edits if self.v2_events_stream is not None else None
        self.load = SampleLoad(nats_url, edit)
        self.load.start()

    def progress(self) -> Progress:
        assert self.sandbox is not None
        assert self.redis_client is not None
        letters = {d.key: d.error_kind for d in self.dead_letters().list()}
        return Progress(
            projects=len(self.sandbox.projects) - 1,  # ROOT is seeded, not synced
            committees=len(self.sandbox.committees),
            members=len(self.sandbox.members),
            dead_letters=letters,
            queue_depth=int(self.redis_client.llen(CELERY_QUEUE)),
            deleted=len(self.sandbox.deleted),
            phase=self.load.phase if self.load is not None else 0,
        )

    def state(self) -> dict[str, Any]:
        """What the sandbox holds, in the shape ``sample_check.differences`` reads."""
        assert self.sandbox is not None
        return {
            "root_uid": self.sandbox.root_uid,
            "projects": self.sandbox.projects,
            "committees": self.sandbox.committees,
            "members": self.sandbox.members,
            "deleted": self.sandbox.deleted,
            **self.sandbox.settings_tables,
        }

    def problems(self) -> list[str]:
        """Everything that still differs from the expected end state.

        Object by object first; once the sandbox matches, the mappings the
        deletes touched (tombstones, kept mappings of refused deletes) and the
        delete outcome counts of the summary.
        """
        assert self.redis_client is not None
        if self.load is not None and self.load.error is not None:
            return [f"the sample load failed: {self.load.error}"]
        if self.load is not None and not self.load.done:
            return ["the sample load is still writing its phases"]
        state = self.state()
        expected = self.expected()
        found = differences(state, expected, heimdall_client_id=HEIMDALL_CLIENT_ID)
        letters = self.progress().dead_letters
        wanted = dead_letter_reasons(expected)
        for key in sorted(set(wanted) - set(letters)):
            found.append(f"{key}: expected in the dead letters ({wanted[key]})")
        for key in sorted(set(letters) - set(wanted)):
            found.append(f"{key}: dead-lettered unexpectedly ({letters[key]})")
        if found:
            return found
        store = self.mappings()
        values = {key: store.read(key) for key in expected_mappings(state, expected)}
        found = differences(state, expected, heimdall_client_id=HEIMDALL_CLIENT_ID, mappings=values)
        counts = recent_outcomes(self.redis_client)
        wanted_counts = expected["counts"]
        for name in CHECKED_DELETE_OUTCOMES:
            if counts.get(name, 0) != wanted_counts[name]:
                found.append(
                    f"summary: {name} is {counts.get(name, 0)}, expected {wanted_counts[name]}"
                )
        if found:
            return found
        edits = self.check_edits()
        if edits is None:
            return []
        queued = int(self.redis_client.llen(CELERY_QUEUE))
        if queued and not edits.problems:
            # The V2 -> V1 runs of earlier events may be among them: not done yet.
            return [f"the queue still holds {queued} tasks"]
        return edits.problems

    def wait_until_synced(self, expected_counts: dict[str, int]) -> list[str]:
        """Print progress until the expected end state or the timeout; returns what differs."""
        deadline = time.monotonic() + self.timeout
        last_line = ""
        problems: list[str] = ["not checked yet"]
        while time.monotonic() < deadline:
            crashed = self.crashed_child()
            if crashed is not None:
                return [
                    f"{crashed.name} exited with code {crashed.exit_code}; see {crashed.log_path}"
                ]
            line = self.progress().line(expected_counts)
            if line != last_line:
                _say(line)
                last_line = line
            problems = self.problems()
            if not problems:
                return []
            time.sleep(POLL_INTERVAL)
        return problems

    def dump_state(self, path: Path) -> None:
        """Write what the sandbox and the dead letters hold, as JSON (for tests and CI)."""
        state = self.state()
        store = self.mappings()
        edits = self.check_edits()
        counts = self.v2_to_v1_counts()
        document = {
            **state,
            "dead_letters": self.progress().dead_letters,
            "mappings": {key: store.read(key) for key in expected_mappings(state, self.expected())},
            "outcomes": recent_outcomes(self.redis_client) if self.redis_client else {},
            "v2_events": {
                "stream": self.v2_events_stream,
                "captured": self.captured_v2_events(),
            },
            "v2_to_v1": {
                **(counts.as_dict() if counts is not None else {}),
                **(edits.as_dict() if edits is not None else {}),
            },
        }
        path.write_text(json.dumps(document, indent=1, sort_keys=True, default=str))

    def summary(self, started: float) -> str:
        """Outcome counts, dead letters with reasons, and the time taken.

        ``dead_lettered`` counts the keys in the dead letters (delete refusals
        apart); the other lines count the runs of the last hour.
        """
        assert self.redis_client is not None
        outcomes = recent_outcomes(self.redis_client)
        lines = ["", "Summary", f"  time taken     {time.monotonic() - started:.1f} s"]
        progress = self.progress()
        lines.append(
            f"  in V2          {progress.projects} projects, {progress.committees} committees, "
            f"{progress.members} committee members"
        )
        letters = self.dead_letters().list()
        # Keys dead-lettered now, not dead-letter events: on a busy machine a child
        # that waited out SYNC_PARENT_WAIT is dead-lettered, released by its parent
        # and may end in a dead letter again (two events, one key).
        outcomes = outcomes | {
            DEAD_LETTERED: sum(letter.error_kind != DELETE_REFUSED_KIND for letter in letters)
        }
        for name in SUMMARY_OUTCOMES:
            lines.append(f"  {name:<14} {outcomes.get(name, 0)}")
        first, *more = self.v2_to_v1_lines()
        lines.append(f"  V2 -> V1       {first}")
        lines.extend(f"                 {line}" for line in more)
        if letters:
            lines.append("  dead letters:")
            for letter in sorted(letters, key=lambda d: d.key):
                lines.append(
                    f"    {letter.key}  [{letter.error_kind}] {letter.error_message[:100]}"
                )
        return "\n".join(lines)


def _banner(session: DevSession, env: dict[str, str]) -> str:
    assert session.sandbox is not None
    user, password = env["FLOWER_BASIC_AUTH"].split(":", 1)
    return "\n".join(
        [
            "Local stack is up:",
            f"  sandbox view   {session.sandbox.url}/",
            f"  sandbox JSON   {session.sandbox.url}/_sandbox/state",
            f"  Flower         http://127.0.0.1:{env['FLOWER_PORT']}/",
            f"                 user {user}  password {password}",
            f"  bridge health  http://127.0.0.1:{env['PORT']}/readyz   metrics /metrics",
            f"  worker metrics http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics",
            f"  NATS {env['NATS_URL']}   Redis {env['REDIS_URL']}",
            f"  logs           {session.run_dir / 'logs'}/",
        ]
    )


def run_embedded(
    run_dir: Path, timeout: float, exit_when_synced: bool, dump_state: Path | None = None
) -> int:
    """The default ``make run``: returns the exit code."""
    session = DevSession(run_dir=run_dir, timeout=timeout)
    started = time.monotonic()
    with _stop_on_sigterm():
        try:
            env = session.start()
            _say(_banner(session, env))
            expected = session.expected()["counts"]
            sample_phases = load_expected()["counts"]["phases"]
            edits = (
                f", then {PERSON.principal} makes {len(EDITS)} edits in V2 (phase "
                f"{sample_phases + 1}) that must reach V1"
                if session.v2_events_stream is not None
                else ""
            )
            _say(
                f"Loading {expected['puts']} sample records into v1-objects in "
                f"{sample_phases} phases (deletes once their records synced){edits}; syncing:"
            )
            session.start_loading(env["NATS_URL"])
            problems = session.wait_until_synced(expected)
            _say(session.summary(started))
            if dump_state is not None:
                session.dump_state(dump_state)
            if problems:
                _say(f"\nNot synced as expected ({len(problems)} differences):")
                for problem in problems[:30]:
                    _say(f"  - {problem}")
                if exit_when_synced:
                    return 1
            else:
                _say(
                    "\nEvery sample object reached the sandbox, every accepted delete removed "
                    "its object and left tombstones; exactly the malformed records and the "
                    "refused deletes are in the dead letters."
                )
                if session.v2_events_stream is not None:
                    _say(
                        "Every V2 edit reached V1 exactly once, and each echo was skipped: "
                        "the V2 events of the forward path's writes, and the V1 rows the "
                        "V1 API wrote back."
                    )
            if exit_when_synced:
                return 0
            _say(
                "\nStill running. Change a record with `v1-sync-helper dev put KEY FILE` "
                "and watch the sandbox view; Ctrl-C stops everything."
            )
            watch_forever(session)
        except KeyboardInterrupt:
            _say("\nStopping…")
        except (RuntimeError, OSError) as error:
            # A server that would not start, a port taken, a missing binary.
            click.echo(f"Error: the local stack could not start: {error}", err=True)
            return 1
        finally:
            session.stop()
    return 0


def watch_forever(session: DevSession) -> None:
    """After the summary: report each new outcome count until interrupted."""
    assert session.redis_client is not None
    seen = recent_outcomes(session.redis_client)
    while True:
        if session.crashed_child() is not None:
            return  # the supervisor said which process is in a crash loop
        now = recent_outcomes(session.redis_client)
        changes = {k: v - seen.get(k, 0) for k, v in now.items() if v != seen.get(k, 0)}
        if changes:
            _say("  " + "  ".join(f"{k} +{v}" for k, v in sorted(changes.items())))
            seen = now
        time.sleep(POLL_INTERVAL)


def run_external(run_dir: Path) -> int:
    """Only the pipeline, against the services the environment names."""
    children = pipeline_processes(
        dict(os.environ), run_dir / "logs", flower_auth=bool(os.environ.get("FLOWER_BASIC_AUTH"))
    )
    _say(
        "Running the bridge, a worker and Flower against "
        f"NATS {redact_url(os.environ['NATS_URL'])} and the configured services; "
        f"logs in {run_dir / 'logs'}/"
    )
    with _stop_on_sigterm():
        try:
            for child in children:
                child.start()
            supervisor = Supervisor(children, _say)
            while True:
                # A process that died is restarted; one in a crash loop ends the run.
                if supervisor.check() is not None:
                    return 1
                time.sleep(POLL_INTERVAL)
        except KeyboardInterrupt:
            _say("\nStopping…")
        finally:
            for child in children:
                child.stop()
    return 0


def run(
    run_dir: Path, timeout: float, exit_when_synced: bool, dump_state: Path | None = None
) -> int:
    """Pick the mode from the environment and run it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if external_mode():
        return run_external(run_dir)
    return run_embedded(run_dir, timeout, exit_when_synced, dump_state)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(Path(".run"), 300, False))
