"""Importing a kind, the mapping, a store, a client or the run: no settings read, nothing patched.

Every module of those rooms is imported, one by one, in a fresh interpreter whose
environment holds no setting of the service. After each import the probe
checks that no ``pydantic_settings.BaseSettings`` was built (settings read),
that no module of ``tasks.worker`` (the Celery app, which reads settings and
applies the kombu patches at import) was loaded, and that the kombu symbols
the worker's patches replace are still kombu's own. The first module that
breaks a rule is named. The Celery app, imported last, must be caught: the
probe itself can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLEAN_ROOMS = ("mapping", "stores", "clients", "kinds", "run")
PROBE_TIMEOUT_SECONDS = 60
# Reads settings and applies the kombu patches at import: what every other module must not do.
CANARY = "tasks.worker.app"
# The symbols tasks.worker.patches replace (kombu_redis_fix, broker_transport).
PATCHED_SYMBOLS = (
    ("Channel", "_connparams"),
    ("Channel", "conn_or_acquire"),
    ("QoS", "append"),
    ("QoS", "ack"),
    ("QoS", "reject"),
)

PROBE = """
import importlib, json, sys
import kombu.transport.redis as kombu_redis
import pydantic_settings

symbols = {SYMBOLS!r}
before = {{f"{{c}}.{{n}}": getattr(getattr(kombu_redis, c), n) for c, n in symbols}}
built = []
original_init = pydantic_settings.BaseSettings.__init__

def counting_init(self, *args, **kwargs):
    built.append(type(self).__name__)
    original_init(self, *args, **kwargs)

pydantic_settings.BaseSettings.__init__ = counting_init
problems = []
for module in sys.argv[1:]:
    importlib.import_module(module)
    worker = sorted(m for m in sys.modules if m == "tasks.worker" or m.startswith("tasks.worker."))
    patched = sorted(
        name for name, value in before.items()
        if getattr(getattr(kombu_redis, name.split(".")[0]), name.split(".")[1]) is not value
    )
    if built or worker or patched:
        problems.append(
            {{"module": module, "settings": built, "worker": worker, "patched": patched}}
        )
        break
print(json.dumps(problems))
"""


def room_modules(room: str) -> list[str]:
    """Every module of ``tasks/{room}/`` (or ``tasks/{room}.py``), dotted."""
    package = ROOT / "tasks" / room
    if not package.is_dir():
        return [f"tasks.{room}"]
    modules = []
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules.append(".".join(parts))
    return modules


def clean_env() -> dict[str, str]:
    """The environment of the probe: a path and a home, none of the service's settings."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
    }


def probe(modules: list[str]) -> list[dict[str, object]]:
    """What importing ``modules`` in order did wrong, in a fresh interpreter (empty: nothing)."""
    script = PROBE.format(SYMBOLS=PATCHED_SYMBOLS)
    done = subprocess.run(
        [sys.executable, "-c", script, *modules],
        env=clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_importing_kinds_mapping_stores_clients_and_run_reads_no_settings_nor_patches() -> None:
    modules = ["tasks.errors"]
    for room in CLEAN_ROOMS:
        found = room_modules(room)
        assert found, f"tasks/{room} has no modules"
        modules.extend(found)
    # One interpreter for all (each import is checked on its own, the first to
    # break a rule is the one named), and the Celery app last: the canary that
    # shows the probe catches what it looks for.
    (problem,) = probe([*modules, CANARY])
    assert problem["module"] == CANARY, problem
    assert problem["settings"]
    assert CANARY in problem["worker"]  # type: ignore[operator]
    assert problem["patched"]
