"""Running Flower for the sync app with basic auth on by default.

Flower reads ``FLOWER_BASIC_AUTH`` from the environment itself; we hand the
credentials over that way, never on the command line, so they stay out of
``ps`` output and logs. Everything else (port, address, persistence) goes
through Flower's own options.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

CELERY_APP = "tasks.worker.app:app"
BASIC_AUTH_ENV = "FLOWER_BASIC_AUTH"

# How often (ms) persistent state is written, so a killed pod loses at most this much.
STATE_SAVE_INTERVAL_MS = 60_000
DEFAULT_DB_PATH = "flower-state.db"


class CredentialsError(ValueError):
    """``FLOWER_BASIC_AUTH`` is missing or malformed (the message never quotes it)."""


def check_basic_auth(secret: SecretStr | None) -> str:
    """Return the validated ``user:password[,user:password…]`` value, or raise.

    The error message names the variable and what is wrong, never the value.
    """
    value = secret.get_secret_value().strip() if secret is not None else ""
    if not value:
        raise CredentialsError(
            f"{BASIC_AUTH_ENV} is not set: set it to user:password "
            "(or pass --no-auth to run Flower without authentication)"
        )
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise CredentialsError(
                f"{BASIC_AUTH_ENV} must be user:password (several separated by commas), "
                "with a non-empty user and password"
            )
    return value


@dataclass(frozen=True)
class FlowerOptions:
    """What the operator chose on the command line, resolved against the settings."""

    port: int
    address: str
    persistent: bool
    db_path: Path | None


def flower_argv(options: FlowerOptions) -> list[str]:
    """The ``celery … flower …`` arguments; credentials are not among them."""
    argv = ["-A", CELERY_APP, "flower", f"--port={options.port}", f"--address={options.address}"]
    if options.persistent:
        db = options.db_path or Path(DEFAULT_DB_PATH)
        argv += [
            "--persistent=True",
            f"--db={db}",
            f"--state_save_interval={STATE_SAVE_INTERVAL_MS}",
        ]
    return argv


def check_app_importable() -> None:
    """Import the Celery app up front so a broken install fails with one clear line."""
    module, _, _attr = CELERY_APP.partition(":")
    importlib.import_module(module)


def run_flower(options: FlowerOptions, basic_auth: str | None) -> None:
    """Run Flower in this process until it is stopped (SIGTERM or Ctrl-C).

    ``basic_auth`` None means no authentication (the operator passed
    ``--no-auth``); Flower then also refuses its HTTP API unless
    ``FLOWER_UNAUTHENTICATED_API`` is set.
    """
    from celery.bin.celery import celery as celery_main

    if basic_auth is None:
        os.environ.pop(BASIC_AUTH_ENV, None)
    else:
        os.environ[BASIC_AUTH_ENV] = basic_auth
    celery_main.main(args=flower_argv(options), prog_name="celery", standalone_mode=True)
