"""``python -m sandbox``: run the fake external services as a process.

Prints one JSON line on stdout when ready::

    {"event": "sandbox_ready", "url": "http://127.0.0.1:PORT", "root_uid": ..., "env": {...}}

and stops cleanly on SIGTERM or SIGINT (exit 0). Logs go to stderr as JSON.
Every option has an environment variable; a bad key file exits 2 with one
line that never quotes the key.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import TypeAdapter, ValidationError

from sandbox.keys import public_key_from_file
from sandbox.samples import crowdfunding_slugs, load_organizations, load_users
from sandbox.service import DEFAULT_TOKEN_LIFETIME, Sandbox
from sync_core.logs import configure_logging
from sync_core.settings import NatsSettings, load_settings

USAGE_EXIT_CODE = 2
START_FAILURE_EXIT_CODE = 1
DEFAULT_KEY_ID = "sandbox-heimdall"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def _flag(option: str, value: bool | str) -> bool:
    """An option given as a flag, or from its variable as the settings read a boolean.

    Compose passes ``SYNC_V2_TO_V1`` through as ``SANDBOX_INDEXER_EVENTS``, so the
    sandbox accepts every spelling the pipeline accepts for the switch (``true``,
    ``1``, ``on``…); anything else is a ``ValueError`` naming the option.
    """
    try:
        return TypeAdapter(bool).validate_python(value)
    except ValidationError:
        raise ValueError(f"{option}: {value!r} is not a boolean") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults come from the environment."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Fake V2 project/committee services, Heimdall JWKS, Auth0, V1 users.",
    )
    parser.add_argument("--host", default=_env("SANDBOX_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=int(_env("SANDBOX_PORT", "0") or 0), help="0: a free port"
    )
    parser.add_argument(
        "--nats-url",
        default=_env("NATS_URL"),
        help="answer lfx.projects-api.slug_to_uid on this NATS server",
    )
    parser.add_argument(
        "--heimdall-key",
        type=Path,
        default=_env("SANDBOX_HEIMDALL_KEY_FILE"),
        help="PEM file: the Heimdall public key, or the private key to derive it from",
    )
    parser.add_argument(
        "--heimdall-key-id", default=_env("HEIMDALL_KEY_ID", DEFAULT_KEY_ID), help="its kid"
    )
    parser.add_argument("--auth0-client-id", default=_env("AUTH0_CLIENT_ID"))
    parser.add_argument(
        "--auth0-key",
        type=Path,
        default=_env("SANDBOX_AUTH0_KEY_FILE"),
        help="PEM file: the Auth0 client's public key, or its private key",
    )
    parser.add_argument(
        "--users",
        type=Path,
        default=_env("SANDBOX_USERS_FILE"),
        help="JSON file: V1 platform id -> {ID, Username, Email, FirstName, LastName}",
    )
    parser.add_argument(
        "--sample-users",
        action="store_true",
        help="know the users and organizations of the sample data set (sandbox/sample_data/)",
    )
    parser.add_argument(
        "--crowdfunding-slugs",
        default=_env("SANDBOX_CROWDFUNDING_SLUGS", ""),
        help="comma-separated slugs: projects created with them are crowdfunded (deletable)",
    )
    parser.add_argument(
        "--sample-crowdfunding",
        action="store_true",
        default=_env("SANDBOX_SAMPLE_CROWDFUNDING") == "true",
        help="make the sample data set's crowdfunded projects crowdfunded (its deletes need it)",
    )
    parser.add_argument(
        "--stale-revision-status",
        type=int,
        choices=(400, 409, 412),
        default=int(_env("SANDBOX_STALE_REVISION_STATUS", "409") or 409),
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=int(_env("SANDBOX_TOKEN_LIFETIME", str(DEFAULT_TOKEN_LIFETIME)) or 0),
    )
    parser.add_argument(
        "--indexer-events",
        action="store_true",
        default=_env("SANDBOX_INDEXER_EVENTS", "false"),
        help="publish the V2 indexer's committee events after each write (needs --nats-url)",
    )
    parser.add_argument(
        "--v1-objects-bucket",
        default=_env("SANDBOX_V1_OBJECTS_BUCKET"),
        help="serve the V1 committee API, writing its changes into this KV bucket "
        "(needs --nats-url)",
    )
    parser.add_argument("--debug", action="store_true", default=_env("DEBUG") == "true")
    return parser


def build_sandbox(args: argparse.Namespace) -> Sandbox:
    """A ``Sandbox`` from parsed options; ``ValueError`` names what is wrong."""
    if args.heimdall_key is None:
        raise ValueError("--heimdall-key (SANDBOX_HEIMDALL_KEY_FILE) is required")
    try:
        heimdall = public_key_from_file(args.heimdall_key)
    except (OSError, ValueError):
        raise ValueError(f"--heimdall-key {args.heimdall_key}: not a readable RSA PEM") from None
    clients = {}
    if args.auth0_client_id or args.auth0_key:
        if not (args.auth0_client_id and args.auth0_key):
            raise ValueError("--auth0-client-id and --auth0-key go together")
        try:
            clients[args.auth0_client_id] = public_key_from_file(args.auth0_key)
        except (OSError, ValueError):
            raise ValueError(f"--auth0-key {args.auth0_key}: not a readable RSA PEM") from None
    users: dict[str, dict[str, Any]] = load_users() if args.sample_users else {}
    if args.users is not None:
        try:
            extra = json.loads(Path(args.users).read_text())
        except (OSError, ValueError):
            raise ValueError(f"--users {args.users}: not a readable JSON file") from None
        if not isinstance(extra, dict):
            raise ValueError(f"--users {args.users}: must hold a JSON object")
        users.update(extra)
    slugs = {slug.strip() for slug in args.crowdfunding_slugs.split(",") if slug.strip()}
    if args.sample_crowdfunding:
        slugs |= crowdfunding_slugs()
    return Sandbox(
        heimdall_keys={args.heimdall_key_id: heimdall},
        auth0_clients=clients,
        users=users,
        organizations=load_organizations() if args.sample_users else {},
        # With a NATS URL, the credentials and TLS settings of the environment apply too.
        nats_url=load_settings(NatsSettings, nats_url=args.nats_url).nats_target
        if args.nats_url
        else None,
        host=args.host,
        port=args.port,
        stale_revision_status=args.stale_revision_status,
        token_lifetime=args.token_lifetime,
        crowdfunding_slugs=frozenset(slugs),
        v1_objects_bucket=args.v1_objects_bucket,
        publish_indexer_events=_flag(
            "--indexer-events (SANDBOX_INDEXER_EVENTS)", args.indexer_events
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 2 on bad options."""
    args = build_parser().parse_args(argv)
    configure_logging(debug=args.debug)
    try:
        sandbox = build_sandbox(args)
    except ValueError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return USAGE_EXIT_CODE
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sandbox.start()
    except Exception as error:  # a port in use, NATS unreachable: one line, not a traceback
        print(f"sandbox did not start: {type(error).__name__}: {error}", file=sys.stderr)
        return START_FAILURE_EXIT_CODE
    try:
        ready = {
            "event": "sandbox_ready",
            "url": sandbox.url,
            "root_uid": sandbox.root_uid,
            "env": sandbox.env(),
            "pid": os.getpid(),
        }
        print(json.dumps(ready), flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        sandbox.stop()
    print(json.dumps({"event": "sandbox_stopped"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
