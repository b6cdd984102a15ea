"""``v1-sync-helper worker`` as a process: config check, prefork children, JSON logs,
metrics summed over the pool's processes, and the probe's ``inspect ping``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from sandbox.servers import NatsServer, ValkeyServer, free_port
from sandbox.service import Sandbox
from sync_core.broker import SYNC_TASK_NAME, task_id_for
from sync_core.nats_client import SyncNats
from tests.worker_process import base_env

KID = "command-kid"
AUTH0_CLIENT = "command-client"
REPO = Path(__file__).resolve().parent.parent
DEADLINE = 45.0


def test_bad_configuration_exits_2_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "v1_sync_helper", "worker"],
        env={**base_env(), "REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "PROJECT_SERVICE_URL" in result.stderr
    assert "HEIMDALL_PRIVATE_KEY" in result.stderr


@pytest.fixture
def worker_env(
    buckets: NatsServer, redis_server: ValkeyServer, rsa_pems: dict[str, str]
) -> Iterator[tuple[dict[str, str], Sandbox]]:
    heimdall = load_pem_private_key(rsa_pems["heimdall"].encode(), None)
    auth0 = load_pem_private_key(rsa_pems["auth0"].encode(), None)
    assert isinstance(heimdall, RSAPrivateKey)
    assert isinstance(auth0, RSAPrivateKey)
    with Sandbox(
        heimdall_keys={KID: heimdall.public_key()},
        auth0_clients={AUTH0_CLIENT: auth0.public_key()},
        nats_url=buckets.url,
    ) as sandbox:
        env = {
            **base_env(),
            **sandbox.env(),
            "NATS_URL": buckets.url,
            "REDIS_URL": redis_server.url,
            "HEIMDALL_PRIVATE_KEY": rsa_pems["heimdall"],
            "HEIMDALL_KEY_ID": KID,
            "AUTH0_TENANT": "test",
            "AUTH0_CLIENT_ID": AUTH0_CLIENT,
            "AUTH0_PRIVATE_KEY": rsa_pems["auth0"],
            "WORKER_METRICS_PORT": str(free_port()),
            "BIND": "127.0.0.1",
        }
        yield env, sandbox


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_prefork_worker_syncs_logs_json_and_serves_summed_metrics(
    worker_env: tuple[dict[str, str], Sandbox], sync_nats: SyncNats, tmp_path: Path
) -> None:
    env, sandbox = worker_env
    log_path = tmp_path / "worker.log"
    # Publish before the worker starts: the app reads REDIS_URL at import, so use a child.
    keys = []
    for index in range(4):
        sfid = f"a09CMD{index:012d}"
        key = f"salesforce-project__c.{sfid}"
        record = {
            "sfid": sfid,
            "name": f"Command {index}",
            "slug__c": f"cmd{index}",
            "project_status__c": "Active",
            "lastmodifiedbyid": "v1_sync_helper@clients",
        }
        keys.append((key, sync_nats.kv_put("v1-objects", key, json.dumps(record).encode())))
    publish = (
        "import json, sys\n"
        "from tasks.worker.app import app\n"
        "for key, revision in json.loads(sys.argv[1]):\n"
        f"    app.send_task({SYNC_TASK_NAME!r}, args=[key, revision, 'PUT'],"
        " task_id=f'{key}@{revision}')\n"
    )
    subprocess.run(
        [sys.executable, "-c", publish, json.dumps(keys)], env=env, check=True, timeout=60, cwd=REPO
    )
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "v1_sync_helper",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            cwd=REPO,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            while sandbox.count("POST", "/projects") < len(keys):
                assert worker.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.05)
            port = int(env["WORKER_METRICS_PORT"])
            line = 'v1sync_task_outcomes_total{object_type="project",outcome="created"} 4.0'
            while line not in (text := scrape(port)):
                assert time.monotonic() < deadline, text[-3000:]
                time.sleep(0.05)
            ping = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tasks.worker.app:app",
                    "inspect",
                    "ping",
                    "--destination",
                    f"v1-sync-helper@{socket.gethostname()}",
                    "--timeout",
                    "10",
                ],
                env={**base_env(), "REDIS_URL": env["REDIS_URL"]},
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
            )
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert "pong" in ping.stdout
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
    for key, revision in keys:
        assert sync_nats.kv_get("v1-mappings", f"project.sfid.{key.split('.', 1)[1]}") is not None
        assert task_id_for(key, revision)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every stderr line is JSON
    created = [e for e in entries if e.get("outcome") == "created"]
    assert len(created) == len(keys)
    assert {e["logger"] for e in entries} >= {"tasks.run.sync"}
