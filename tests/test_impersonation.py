"""End to end: the JWT the fake V2 receives carries exactly the claims of the
principal table (issue 5) for every kind of ``lastmodifiedbyid``.

One stack for the module: nats-server, valkey, the sandbox (V2 services that
verify the PS256 JWT against their JWKS, Auth0, the V1 user service, the
``slug_to_uid`` responder) and a real Celery worker running ``sync_kv_entry``.
Each case writes its own project (and uses its own platform id, so the user
cache of one case cannot answer another) and reads the verified claims and the
``X-On-Behalf-Of`` header of the POST the sandbox recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import SecretStr

from sandbox.servers import NatsServer, ValkeyServer
from sandbox.service import Sandbox
from sandbox.traffic import RecordedRequest
from sync_core.broker import SYNC_TASK_NAME, task_id_for
from sync_core.nats_client import SyncNats, connect, ensure_buckets
from sync_core.settings import WorkerSettings
from tasks.run.runtime import Runtime
from tasks.worker.app import app
from tasks.worker.process import set_runtime
from tests.v1_examples import COMMITTEE_JSON, PROJECT_JSON, record

KID = "impersonation-kid"
AUTH0_CLIENT_ID = "impersonation-test-client"
HEIMDALL_CLIENT_ID = "v1_sync_helper"
OBJECTS = "v1-objects"
MAPPINGS = "v1-mappings"
PROJECT_AUDIENCE = "lfx-v2-project-service"
COMMITTEE_AUDIENCE = "lfx-v2-committee-service"
# Short enough that the timeout case is quick, long enough for a busy machine.
HTTP_TIMEOUT = 1.0
WAIT_SECONDS = 20.0
FINAL_OUTCOMES = frozenset({"created", "updated", "unchanged", "superseded", "skipped"})
BASE_CLAIMS = frozenset({"iss", "aud", "sub", "principal", "iat", "nbf", "exp", "jti"})

FALLBACK = {"principal": f"{HEIMDALL_CLIENT_ID}@clients", "sub": HEIMDALL_CLIENT_ID}


class OutcomeLog(logging.Handler):
    """Collects the one outcome line every run of ``tasks.run.sync`` ends with."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "outcome"):
            with self._lock:
                self._records.append(record)

    def final(self, key: str, revision: int) -> list[str]:
        with self._lock:
            return [
                str(r.__dict__["outcome"])
                for r in self._records
                if r.__dict__.get("key") == key
                and r.__dict__.get("revision") == revision
                and r.__dict__["outcome"] in FINAL_OUTCOMES
            ]

    def all(self, key: str) -> list[str]:
        with self._lock:
            return [
                str(r.__dict__["outcome"]) for r in self._records if r.__dict__.get("key") == key
            ]


@dataclass
class Stack:
    nats: SyncNats
    sandbox: Sandbox
    outcomes: OutcomeLog

    def sync(self, key: str, value: dict[str, Any]) -> str:
        """Write ``value`` to ``v1-objects``, enqueue its task as the bridge does,
        and wait for the run's final outcome."""
        revision = self.nats.kv_put(OBJECTS, key, json.dumps(value).encode())
        app.send_task(
            SYNC_TASK_NAME, args=[key, revision, "PUT"], task_id=task_id_for(key, revision)
        )
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.outcomes.final(key, revision):
            assert time.monotonic() < deadline, f"{key}: no final outcome: {self.outcomes.all(key)}"
            time.sleep(0.01)
        return self.outcomes.final(key, revision)[-1]

    def write(
        self, method: str, path: str, match: Callable[[RecordedRequest], bool]
    ) -> RecordedRequest:
        """The one successful V2 write of ``method`` on ``path`` that ``match`` picks."""
        found = [
            r
            for r in self.sandbox.requests
            if r.method == method and r.path == path and r.status < 300 and match(r)
        ]
        assert len(found) == 1, f"expected one {method} {path}, got {len(found)}"
        return found[0]


async def _create_buckets(url: str) -> None:
    nc = await connect(url, "impersonation-setup")
    try:
        await ensure_buckets(nc.jetstream(), OBJECTS, MAPPINGS)
    finally:
        await nc.close()


def _use_broker(url: str) -> None:
    """Point the app's producer at ``url`` (another module may have used another)."""
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None


def _private(pem: str) -> RSAPrivateKey:
    key = load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, rsa_pems: dict[str, str]) -> Iterator[Stack]:
    base: Path = tmp_path_factory.mktemp("impersonation")
    with NatsServer(base / "nats") as nats_server, ValkeyServer(base / "valkey") as valkey:
        asyncio.run(_create_buckets(nats_server.url))
        with Sandbox(
            heimdall_keys={KID: _private(rsa_pems["heimdall"]).public_key()},
            auth0_clients={AUTH0_CLIENT_ID: _private(rsa_pems["auth0"]).public_key()},
            nats_url=nats_server.url,
        ) as sandbox:
            env = sandbox.env()
            settings = WorkerSettings(
                nats_url=nats_server.url,
                redis_url=valkey.url,
                project_service_url=env["PROJECT_SERVICE_URL"],
                committee_service_url=env["COMMITTEE_SERVICE_URL"],
                heimdall_client_id=HEIMDALL_CLIENT_ID,
                heimdall_private_key=SecretStr(rsa_pems["heimdall"]),
                heimdall_key_id=KID,
                heimdall_jwks_url=env["HEIMDALL_JWKS_URL"],
                auth0_tenant="impersonation",
                auth0_client_id=AUTH0_CLIENT_ID,
                auth0_private_key=SecretStr(rsa_pems["auth0"]),
                auth0_base_url=env["AUTH0_BASE_URL"],
                lfx_api_gw=env["LFX_API_GW"],
                http_timeout=HTTP_TIMEOUT,
                sync_retry_max=2,
                sync_retry_backoff_base=0.05,
                sync_retry_backoff_max=0.2,
            )
            runtime = Runtime.from_settings(settings)
            previous = set_runtime(runtime)
            _use_broker(valkey.url)
            outcomes = OutcomeLog()
            sync_log = logging.getLogger("tasks.run.sync")
            sync_log.addHandler(outcomes)
            test_nats = SyncNats(nats_server.url, "impersonation-tests")
            try:
                with start_worker(
                    app,
                    pool="threads",
                    concurrency=2,
                    perform_ping_check=False,
                    loglevel="INFO",
                    shutdown_timeout=30,
                ):
                    yield Stack(test_nats, sandbox, outcomes)
            finally:
                sync_log.removeHandler(outcomes)
                test_nats.close()
                set_runtime(previous)
                runtime.close()


def _new_platform_id() -> str:
    return "003" + uuid.uuid4().hex[:15].upper()


def _user(platform_id: str, username: str, email: str) -> dict[str, str]:
    return {
        "ID": platform_id,
        "Username": username,
        "Email": email,
        "FirstName": "Jane",
        "LastName": "Doe",
    }


def _new_project(last_modified_by: str | None) -> tuple[str, dict[str, Any]]:
    """A realistic project under ROOT with a fresh sfid and slug."""
    sfid = "a09" + uuid.uuid4().hex[:15]
    project = record(
        PROJECT_JSON, sfid=sfid, slug__c="IMP" + sfid[3:].upper(), parent_project__c=None
    )
    if last_modified_by is None:
        del project["lastmodifiedbyid"]
    else:
        project["lastmodifiedbyid"] = last_modified_by
    return f"salesforce-project__c.{sfid}", project


def _expected(
    principal: str, sub: str, email: str | None = None, on_behalf_of: str | None = None
) -> dict[str, Any]:
    return {"principal": principal, "sub": sub, "email": email, "on_behalf_of": on_behalf_of}


def _assert_claims(request: RecordedRequest, audience: str, expected: dict[str, Any]) -> None:
    claims = request.claims
    assert claims is not None
    wanted_keys = BASE_CLAIMS | ({"email"} if expected["email"] else set())
    assert set(claims) == wanted_keys
    assert claims["iss"] == "heimdall"
    assert claims["aud"] == audience
    assert claims["principal"] == expected["principal"]
    assert claims["sub"] == expected["sub"]
    assert claims.get("email") == expected["email"]
    assert request.headers.get("X-On-Behalf-Of") == expected["on_behalf_of"]


# Each case: (set the sandbox up and return lastmodifiedbyid, the expected claims).
Case = Callable[[Sandbox], tuple[str | None, dict[str, Any]]]


def _machine(sb: Sandbox) -> tuple[str | None, dict[str, Any]]:
    return "meltano-loader@clients", _expected(
        "meltano-loader@clients", "meltano-loader", None, "meltano-loader"
    )


def _user_with_email(sb: Sandbox) -> tuple[str | None, dict[str, Any]]:
    platform_id = _new_platform_id()
    sb.add_user(platform_id, _user(platform_id, "jdoe", "jane@example.com"))
    return platform_id, _expected("jdoe", "jdoe", "jane@example.com", "jdoe")


def _user_without_email(sb: Sandbox) -> tuple[str | None, dict[str, Any]]:
    platform_id = _new_platform_id()
    sb.add_user(platform_id, _user(platform_id, "nomail", ""))
    return platform_id, _expected("nomail", "nomail", None, "nomail")


def _fallback_for(setup: Callable[[Sandbox, str], None]) -> Case:
    def case(sb: Sandbox) -> tuple[str | None, dict[str, Any]]:
        platform_id = _new_platform_id()
        setup(sb, platform_id)
        return platform_id, _expected(FALLBACK["principal"], FALLBACK["sub"])

    return case


def _known_user_then(**fault: Any) -> Callable[[Sandbox, str], None]:
    """A known user whose lookup meets ``fault`` (an injected status or delay)."""

    def setup(sb: Sandbox, platform_id: str) -> None:
        sb.add_user(platform_id, _user(platform_id, "jdoe", "jane@example.com"))
        sb.inject_fault("GET", f"/v1/users/{platform_id}", **fault)

    return setup


CASES: dict[str, Case] = {
    "machine user": _machine,
    "user with email": _user_with_email,
    "user without email": _user_without_email,
    "empty": lambda sb: ("", _expected(FALLBACK["principal"], FALLBACK["sub"])),
    "missing": lambda sb: (None, _expected(FALLBACK["principal"], FALLBACK["sub"])),
    "unknown user (404)": _fallback_for(lambda sb, pid: None),
    "user service 500": _fallback_for(_known_user_then(status=500)),
    "user service timeout": _fallback_for(_known_user_then(status=None, delay=HTTP_TIMEOUT * 2)),
    "empty username": _fallback_for(lambda sb, pid: sb.add_user(pid, _user(pid, "", "x@y.org"))),
    "username with a space": _fallback_for(
        lambda sb, pid: sb.add_user(pid, _user(pid, "jane doe", "jane@example.com"))
    ),
    "username with @": _fallback_for(
        lambda sb, pid: sb.add_user(pid, _user(pid, "jane@example.com", "jane@example.com"))
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_v2_jwt_carries_the_claims_of_the_principal_table(case: str, stack: Stack) -> None:
    last_modified_by, expected = CASES[case](stack.sandbox)
    key, project = _new_project(last_modified_by)
    assert stack.sync(key, project) == "created"
    slug = project["slug__c"].lower()
    post = stack.write("POST", "/projects", lambda r: r.json_body.get("slug") == slug)
    _assert_claims(post, PROJECT_AUDIENCE, expected)
    # Platform ids were asked for once (a timed-out request is recorded when the
    # sandbox finally answers it); nothing else reaches the user service.
    if not last_modified_by:
        return
    lookups = 0 if "@" in last_modified_by else 1
    path = f"/v1/users/{last_modified_by}"
    deadline = time.monotonic() + WAIT_SECONDS
    while stack.sandbox.count("GET", path) < lookups:
        assert time.monotonic() < deadline, f"no lookup of {last_modified_by}"
        time.sleep(0.01)
    assert stack.sandbox.count("GET", path) == lookups


def test_updates_and_committees_are_made_as_the_user_of_each_change(stack: Stack) -> None:
    first, second = _new_platform_id(), _new_platform_id()
    stack.sandbox.add_user(first, _user(first, "alice", "alice@example.org"))
    stack.sandbox.add_user(second, _user(second, "bob", ""))
    key, project = _new_project(first)
    assert stack.sync(key, project) == "created"

    project.update(description__c="Changed by Bob.", lastmodifiedbyid=second)
    assert stack.sync(key, project) == "updated"
    uid = stack.nats.kv_get(MAPPINGS, f"project.sfid.{project['sfid']}")
    assert uid is not None
    put = stack.write("PUT", f"/projects/{bytes(uid.value).decode()}", lambda r: True)
    _assert_claims(put, PROJECT_AUDIENCE, _expected("bob", "bob", None, "bob"))

    sfid = str(uuid.uuid4())
    committee = record(
        COMMITTEE_JSON, sfid=sfid, project_name__c=project["sfid"], lastmodifiedbyid=first
    )
    assert stack.sync(f"platform-collaboration__c.{sfid}", committee) == "created"
    post = stack.write(
        "POST", "/committees", lambda r: r.json_body.get("project_uid") == bytes(uid.value).decode()
    )
    _assert_claims(
        post, COMMITTEE_AUDIENCE, _expected("alice", "alice", "alice@example.org", "alice")
    )
