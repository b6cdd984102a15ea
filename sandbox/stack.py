"""The local stack of ``v1-sync-helper dev``: servers, sandbox and pipeline processes.

Everything lives under ``.run/`` in the working directory: the development
keys (made on the first run, reused after), the servers' data and every
process's log. NATS and valkey data are wiped at each start because the
sandbox keeps its V2 objects in memory: stale mappings would point at UIDs
the new sandbox never heard of.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.servers import NatsServer, ValkeyServer, free_port
from sync_core.nats_client import connect, ensure_buckets

log = logging.getLogger(__name__)

RUN_DIR = Path(".run")
HEIMDALL_KEY_ID = "dev-heimdall-1"
AUTH0_CLIENT_ID = "dev-v1-sync-helper"
AUTH0_TENANT = "sandbox"
FLOWER_USER = "admin"
CHILD_STOP_TIMEOUT = 25.0
# A process that died is started again, at most this often per window; past
# that it is a crash loop, which the stack reports instead of hiding.
MAX_RESTARTS_PER_WINDOW = 5
RESTART_WINDOW_SECONDS = 60.0

# Short retries so that records with a missing parent reach the dead letters
# in seconds, not the production budget of about half an hour.
# Children whose parent never comes wait 15 s (not 24 h) before the reconciler,
# sweeping every 2 s, re-drives them into the dead letters. Not less: a committee
# put before any project waits for its project while the sample load is worked
# through, which takes well over 5 s on a busy 2-core machine (at 5 s such
# committees, and then their members, were dead-lettered now and then).
DEV_RETRY_ENV = {
    "SYNC_RETRY_MAX": "4",
    "SYNC_RETRY_BACKOFF_BASE": "0.5",
    "SYNC_RETRY_BACKOFF_MAX": "2",
    "SYNC_PARENT_WAIT": "15",
    "RECONCILE_INTERVAL": "2",
    "RECONCILE_GRACE": "3",
}

# The V2 -> V1 direction is on in the local stack (issue 24: off by default in the
# chart, on in `make run`): the bridge creates the stream of the V2 indexer's
# committee events and its durable consumer, the sandbox publishes those events
# after each committee and member write, and the workers write them to the V1
# API fake. `SYNC_V2_TO_V1=false make run` turns it off.
DEV_V2_TO_V1_ENV = {"SYNC_V2_TO_V1": "true"}

PREFERRED_PORTS = {
    "nats": 4222,
    "valkey": 6379,
    "sandbox": 8090,
    "bridge": 8080,
    "worker_metrics": 9100,
    "flower": 5555,
}


def port_or_free(preferred: int) -> int:
    """``preferred`` when nothing listens there, else any free loopback port."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _write_private_key(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The development key at ``path``, generated on the first run (mode 0600)."""
    if not path.exists():
        _write_private_key(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def load_or_create_password(path: Path) -> str:
    """A random Flower password kept under ``.run/`` so it stays the same across runs."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(12))
    return path.read_text().strip()


@dataclass
class ChildProcess:
    """One pipeline process (bridge, worker, Flower) with its log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL the process and its children, as a crash would (chaos tests)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(CHILD_STOP_TIMEOUT)
        self._close_log()

    def restart(self) -> None:
        """Start the process again after it exited (its log file is appended to)."""
        self._close_log()
        self.start()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the graceful-stop deadline."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(CHILD_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._close_log()


class Supervisor:
    """Restarts pipeline processes that died, and says so in one line each.

    At most ``max_restarts`` restarts of one process within ``window`` seconds:
    the next death is a crash loop, reported and left dead so it is visible.
    """

    def __init__(
        self,
        children: list[ChildProcess],
        say: Callable[[str], None],
        max_restarts: int = MAX_RESTARTS_PER_WINDOW,
        window: float = RESTART_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = children
        self.say = say
        self.max_restarts = max_restarts
        self.window = window
        self.clock = clock
        self.restarts: dict[str, list[float]] = {child.name: [] for child in children}

    def check(self) -> ChildProcess | None:
        """Restart every child that exited; the first one in a crash loop, if any."""
        now = self.clock()
        for child in self.children:
            code = child.exit_code
            if code is None:
                continue
            recent = [t for t in self.restarts[child.name] if now - t < self.window]
            self.restarts[child.name] = recent
            if len(recent) >= self.max_restarts:
                self.say(
                    f"{child.name} exited with code {code} again after {len(recent)} restarts "
                    f"in {self.window:g}s: a crash loop, not restarting it; see {child.log_path}"
                )
                return child
            child.restart()
            recent.append(now)
            self.say(
                f"{child.name} exited with code {code}; restarted "
                f"({len(recent)}/{self.max_restarts} in {self.window:g}s); see {child.log_path}"
            )
        return None


def pipeline_command(*args: str) -> list[str]:
    """``v1-sync-helper ARGS`` run with this very Python."""
    return [sys.executable, "-m", "v1_sync_helper", *args]


def pipeline_processes(
    env: dict[str, str], log_dir: Path, flower_auth: bool = True
) -> list[ChildProcess]:
    """The bridge, one worker and Flower, each logging to ``log_dir``."""
    flower_args = ["flower"] if flower_auth else ["flower", "--no-auth"]
    return [
        ChildProcess("bridge", pipeline_command("bridge"), env, log_dir / "bridge.log"),
        ChildProcess("worker", pipeline_command("worker"), env, log_dir / "worker.log"),
        ChildProcess("flower", pipeline_command(*flower_args), env, log_dir / "flower.log"),
    ]


async def _create_buckets(nats_url: str, objects: str, mappings: str) -> None:
    nc = await connect(nats_url, "dev-setup")
    try:
        await ensure_buckets(nc.jetstream(), objects, mappings)
    finally:
        await nc.close()


def create_buckets(
    nats_url: str, objects: str = "v1-objects", mappings: str = "v1-mappings"
) -> None:
    """Make the two buckets on the embedded server."""
    asyncio.run(_create_buckets(nats_url, objects, mappings))


@dataclass
class EmbeddedServers:
    """nats-server and valkey under ``run_dir``, on their usual ports when free."""

    run_dir: Path
    nats: NatsServer | None = None
    valkey: ValkeyServer | None = None

    def start(self) -> None:
        for name in ("nats", "valkey"):
            shutil.rmtree(self.run_dir / name, ignore_errors=True)
        self.nats = NatsServer(self.run_dir / "nats", port_or_free(PREFERRED_PORTS["nats"]))
        self.valkey = ValkeyServer(self.run_dir / "valkey", port_or_free(PREFERRED_PORTS["valkey"]))
        self.nats.start()
        self.valkey.start()

    def stop(self) -> None:
        for server in (self.valkey, self.nats):
            if server is not None:
                server.stop()


def write_stack_file(run_dir: Path, urls: dict[str, str]) -> None:
    """Record where the running stack listens, for ``dev put``."""
    (run_dir / "stack.json").write_text(json.dumps(urls, indent=2))


def read_stack_file(run_dir: Path) -> dict[str, str]:
    """Where the running stack listens; raises FileNotFoundError when none runs."""
    return dict(json.loads((run_dir / "stack.json").read_text()))


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
