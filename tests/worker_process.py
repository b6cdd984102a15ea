"""A real ``v1-sync-helper worker`` subprocess for tests, with its environment and log.

Used by the worker command tests, the broker-restart tests and the chaos
harness: one place that knows which variables a worker needs against a
``Sandbox`` and how to publish a task from outside the test process (the app
reads ``REDIS_URL`` at import, so publishing goes through a child Python).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from sandbox.servers import free_port
from sandbox.service import Sandbox
from sync_core.broker import SYNC_TASK_NAME
from sync_core.settings import WorkerSettings

REPO = Path(__file__).resolve().parent.parent
KID = "command-kid"
AUTH0_CLIENT = "command-client"
STOP_TIMEOUT = 30.0


def base_env() -> dict[str, str]:
    """The environment without any of our settings (a developer's may set some)."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH")
    return {name: os.environ[name] for name in keep if name in os.environ}


def worker_environment(
    sandbox: Sandbox, nats_url: str, redis_url: str, rsa_pems: dict[str, str]
) -> dict[str, str]:
    """Everything a worker needs to sync against ``sandbox`` (keys: the ``rsa_pems`` fixture)."""
    return {
        **base_env(),
        **sandbox.env(),
        "NATS_URL": nats_url,
        "REDIS_URL": redis_url,
        "HEIMDALL_PRIVATE_KEY": rsa_pems["heimdall"],
        "HEIMDALL_KEY_ID": KID,
        "AUTH0_TENANT": "test",
        "AUTH0_CLIENT_ID": AUTH0_CLIENT,
        "AUTH0_PRIVATE_KEY": rsa_pems["auth0"],
        "WORKER_METRICS_PORT": str(free_port()),
        "BIND": "127.0.0.1",
    }


def sandbox_worker_settings(
    sandbox: Sandbox,
    nats_url: str,
    redis_url: str,
    rsa_pems: dict[str, str],
    *,
    kid: str = KID,
    auth0_client: str = AUTH0_CLIENT,
    **overrides: Any,
) -> WorkerSettings:
    """The settings of an in-process worker against ``sandbox`` (``overrides`` on top)."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "redis_url": redis_url,
        "project_service_url": sandbox.url,
        "heimdall_private_key": rsa_pems["heimdall"],
        "heimdall_key_id": kid,
        "heimdall_jwks_url": sandbox.env()["HEIMDALL_JWKS_URL"],
        "auth0_tenant": "test",
        "auth0_client_id": auth0_client,
        "auth0_private_key": rsa_pems["auth0"],
        "auth0_base_url": sandbox.url,
        "lfx_api_gw": sandbox.env()["LFX_API_GW"],
        "http_timeout": 5.0,
    }
    return WorkerSettings(**(values | overrides))


def publish_tasks(
    env: dict[str, str], tasks: Sequence[tuple[str, int]], countdown: float | None = None
) -> None:
    """Send one ``sync_kv_entry`` per ``(key, revision)`` through the app, from a child."""
    script = (
        "import json, sys\n"
        "from tasks.worker.app import app\n"
        "countdown = json.loads(sys.argv[2])\n"
        "for key, revision in json.loads(sys.argv[1]):\n"
        f"    app.send_task({SYNC_TASK_NAME!r}, args=[key, revision, 'PUT'],"
        " task_id=f'{key}@{revision}', countdown=countdown)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, json.dumps(list(tasks)), json.dumps(countdown)],
        env=env,
        check=True,
        timeout=60,
        cwd=REPO,
    )


class WorkerProcess:
    """``python -m v1_sync_helper worker ARGS`` with its output in ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "v1_sync_helper", "worker", *self.args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_count(self, needle: str) -> int:
        """How many log lines contain ``needle``."""
        return sum(needle in line for line in self.log_text().splitlines())

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` while the worker lives; fail with the log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.exit_code is None, (
                f"worker exited {self.exit_code} waiting for {what}:\n{self.log_text()[-4000:]}"
            )
            assert time.monotonic() < deadline, (
                f"no {what} in {timeout}s:\n{self.log_text()[-4000:]}"
            )
            time.sleep(0.1)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (prefork children included)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)
        self._close_log()

    def stop(self) -> None:
        """SIGTERM (warm shutdown), SIGKILL after the deadline."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
