"""The V2 client against the sandbox's fake V2 services (real HTTP, real JWT checks).

The sandbox verifies every bearer token against its JWKS and enforces the
contract (required fields, ETag/If-Match, 409 on a duplicate slug); faults are
injected there to provoke 5xx, 429, 401 and slow answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from prometheus_client import REGISTRY

from sandbox.servers import free_port
from sandbox.service import Sandbox
from sync_core.settings import WorkerSettings
from tasks.clients.identity import Identity, fallback_identity, machine_identity
from tasks.clients.tokens import TokenMinter
from tasks.clients.v2 import V2Service, Versioned, parse_retry_after
from tasks.errors import PermanentError, SlugConflict, StaleRevision, TransientError
from tasks.kinds.committees import COMMITTEE_AUDIENCE, COMMITTEE_SERVICE
from tasks.kinds.projects import PROJECT_AUDIENCE, PROJECT_SERVICE

KID = "sandbox-kid"
JWKS_PATH = "/.well-known/jwks"
TIMEOUT = 2.0
USER = Identity(principal="jdoe", sub="jdoe", email="jdoe@example.org", on_behalf_of="jdoe")
MACHINE = fallback_identity("v1_sync_helper")


@pytest.fixture
def sandbox(heimdall_key: RSAPrivateKey) -> Iterator[Sandbox]:
    with Sandbox(heimdall_keys={KID: heimdall_key.public_key()}, auth0_clients={}) as sb:
        yield sb


@pytest.fixture
def minter(heimdall_key: RSAPrivateKey, sandbox: Sandbox) -> TokenMinter:
    """A minter that takes its kid from the sandbox's JWKS, as in production."""
    return TokenMinter(heimdall_key, key_id=None, jwks_url=sandbox.env()["HEIMDALL_JWKS_URL"])


@pytest.fixture
def projects(sandbox: Sandbox, minter: TokenMinter) -> Iterator[V2Service]:
    service = V2Service(
        sandbox.env()["PROJECT_SERVICE_URL"], "projects", PROJECT_AUDIENCE, minter, timeout=TIMEOUT
    )
    yield service
    service.close()


@pytest.fixture
def committees(sandbox: Sandbox, minter: TokenMinter) -> Iterator[V2Service]:
    service = V2Service(
        sandbox.env()["COMMITTEE_SERVICE_URL"],
        "committees",
        COMMITTEE_AUDIENCE,
        minter,
        timeout=TIMEOUT,
        service="committee",
    )
    yield service
    service.close()


def project_body(sandbox: Sandbox, slug: str = "alpha", **fields: Any) -> dict[str, Any]:
    return {
        "name": slug.title(),
        "slug": slug,
        "description": "",
        "parent_uid": sandbox.root_uid,
        **fields,
    }


def editable(record: dict[str, Any]) -> dict[str, Any]:
    """A V2 record without its read-only fields: a PUT body."""
    read_only = {"uid", "created_at", "updated_at", "sso_group_name", "project_name"}
    return {k: v for k, v in record.items() if k not in read_only and k != "total_members"}


def latency_count(service: str, method: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "v1sync_v2_request_seconds_count",
        {"service": service, "method": method, "status": status},
    )
    return value or 0.0


# -- the happy path -----------------------------------------------------------


def test_project_create_get_update_delete_round_trip(sandbox: Sandbox, projects: V2Service) -> None:
    sandbox.add_crowdfunding_slug("alpha")  # the project service deletes only those
    created = projects.create(project_body(sandbox, "alpha", description="first"), USER)
    uid = created["uid"]
    assert created["slug"] == "alpha"

    fetched = projects.get(uid, USER)
    assert isinstance(fetched, Versioned)
    assert fetched.record["description"] == "first"
    assert fetched.etag.strip('"') == str(sandbox.revision("project", uid))

    updated = projects.update(
        uid, {**editable(fetched.record), "description": "second"}, fetched.etag, USER
    )
    assert updated["description"] == "second"
    assert sandbox.projects[uid]["description"] == "second"
    refetched = projects.get(uid, USER)
    assert refetched.etag != fetched.etag

    projects.delete(uid, refetched.etag, USER)
    assert uid not in sandbox.projects
    with pytest.raises(PermanentError) as caught:
        projects.get(uid, USER)
    assert (caught.value.kind, caught.value.status) == ("v2_not_found", 404)

    methods = [(r.method, r.status) for r in sandbox.requests if r.path.startswith("/projects")]
    assert methods == [
        ("POST", 201),
        ("GET", 200),
        ("PUT", 200),
        ("GET", 200),
        ("DELETE", 204),
        ("GET", 404),
    ]
    for request in sandbox.requests:
        if request.path.startswith("/projects"):
            assert request.query == {"v": "1"}


def test_committee_round_trip(sandbox: Sandbox, projects: V2Service, committees: V2Service) -> None:
    project_uid = projects.create(project_body(sandbox, "beta"), MACHINE)["uid"]
    created = committees.create(
        {"name": "TSC", "category": "Technical Steering Committee", "project_uid": project_uid},
        MACHINE,
    )
    fetched = committees.get(created["uid"], MACHINE)
    assert fetched.record["name"] == "TSC"

    body = {**editable(fetched.record), "description": "steers"}
    committees.update(created["uid"], body, fetched.etag, MACHINE)
    assert sandbox.committees[created["uid"]]["description"] == "steers"

    current = committees.get(created["uid"], MACHINE)
    committees.delete(created["uid"], current.etag, MACHINE)
    assert created["uid"] not in sandbox.committees
    claims = [r.claims for r in sandbox.requests if r.path.startswith("/committees")]
    assert len(claims) == 5
    assert all(c is not None and c["aud"] == COMMITTEE_AUDIENCE for c in claims)


def test_every_call_carries_a_verified_bearer_jwt(
    sandbox: Sandbox, projects: V2Service, heimdall_key: RSAPrivateKey
) -> None:
    uid = projects.create(project_body(sandbox, "gamma"), USER)["uid"]
    projects.get(uid, USER)

    calls = [r for r in sandbox.requests if r.path.startswith("/projects")]
    assert len(calls) == 2
    for call in calls:
        scheme, _, token = call.headers["Authorization"].partition(" ")
        assert scheme == "Bearer"
        assert jwt.get_unverified_header(token)["kid"] == KID
        claims = jwt.decode(
            token,
            heimdall_key.public_key(),
            algorithms=["PS256"],
            audience=PROJECT_AUDIENCE,
            issuer="heimdall",
        )
        assert call.claims == claims
        assert (claims["principal"], claims["sub"], claims["email"]) == (
            "jdoe",
            "jdoe",
            "jdoe@example.org",
        )
    assert sandbox.count("GET", JWKS_PATH) == 1, "the kid is fetched once, then reused"


def test_on_behalf_of_sent_only_when_identity_has_it(sandbox: Sandbox, projects: V2Service) -> None:
    uid = projects.create(project_body(sandbox, "delta"), USER)["uid"]
    projects.get(uid, machine_identity("meltano@clients"))
    projects.get(uid, MACHINE)

    post, machine_get, fallback_get = [
        r for r in sandbox.requests if r.path.startswith("/projects")
    ]
    assert post.headers.get("X-On-Behalf-Of") == "jdoe"
    assert sandbox.projects[uid]["_last_write"]["on_behalf_of"] == "jdoe"
    assert machine_get.headers.get("X-On-Behalf-Of") == "meltano"
    assert machine_get.claims is not None
    assert machine_get.claims["principal"] == "meltano@clients"
    assert "X-On-Behalf-Of" not in fallback_get.headers
    assert fallback_get.claims is not None
    assert fallback_get.claims["principal"] == "v1_sync_helper@clients"
    assert "email" not in fallback_get.claims


# -- transient errors ---------------------------------------------------------


def test_503_with_retry_after_is_transient(sandbox: Sandbox, projects: V2Service) -> None:
    sandbox.inject_fault("POST", "/projects", status=503, headers={"Retry-After": "7"})
    with pytest.raises(TransientError) as caught:
        projects.create(project_body(sandbox, "eps"), MACHINE)
    error = caught.value
    assert (error.kind, error.status, error.retry_after) == ("v2_5xx", 503, 7.0)
    assert "injected fault" in (error.body_excerpt or "")
    assert sandbox.count("POST", "/projects") == 1, "the client itself never retries a 503"


def test_500_without_retry_after_is_transient(sandbox: Sandbox, projects: V2Service) -> None:
    sandbox.inject_fault("GET", "/projects/", status=500, body="boom")
    with pytest.raises(TransientError) as caught:
        projects.get(sandbox.root_uid, MACHINE)
    assert (caught.value.kind, caught.value.status, caught.value.retry_after) == (
        "v2_5xx",
        500,
        None,
    )
    assert caught.value.body_excerpt == "boom"


def test_429_retry_after_seconds(sandbox: Sandbox, projects: V2Service) -> None:
    sandbox.inject_fault("GET", "/projects/", status=429, headers={"Retry-After": "3"})
    with pytest.raises(TransientError) as caught:
        projects.get(sandbox.root_uid, MACHINE)
    assert (caught.value.kind, caught.value.status, caught.value.retry_after) == (
        "v2_rate_limited",
        429,
        3.0,
    )
    assert not isinstance(caught.value, StaleRevision)


def test_429_retry_after_http_date(sandbox: Sandbox, projects: V2Service) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    sandbox.inject_fault(
        "GET", "/projects/", status=429, headers={"Retry-After": format_datetime(when, usegmt=True)}
    )
    with pytest.raises(TransientError) as caught:
        projects.get(sandbox.root_uid, MACHINE)
    assert caught.value.retry_after is not None
    assert 100 <= caught.value.retry_after <= 121


def test_slow_answer_is_a_timeout(sandbox: Sandbox, minter: TokenMinter) -> None:
    service = V2Service(sandbox.url, "projects", PROJECT_AUDIENCE, minter, timeout=0.3)
    before = latency_count("project", "GET", "error")
    sandbox.inject_fault("GET", "/projects/", status=None, delay=1.5)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError) as caught:
            service.get(sandbox.root_uid, MACHINE)
    finally:
        service.close()
    assert time.monotonic() - started < 1.4, "the client gave up at its timeout"
    assert (caught.value.kind, caught.value.status) == ("v2_timeout", None)
    assert latency_count("project", "GET", "error") == before + 1


def test_refused_connection_is_unavailable(minter: TokenMinter) -> None:
    service = V2Service(f"http://127.0.0.1:{free_port()}", "projects", PROJECT_AUDIENCE, minter)
    try:
        with pytest.raises(TransientError) as caught:
            service.get("00000000-0000-4000-8000-000000000000", MACHINE)
    finally:
        service.close()
    assert caught.value.kind == "v2_unavailable"


# -- stale revisions and conflicts ----------------------------------------------


def test_stale_etag_on_put_is_stale_revision(sandbox: Sandbox, projects: V2Service) -> None:
    uid = projects.create(project_body(sandbox, "zeta"), MACHINE)["uid"]
    old = projects.get(uid, MACHINE)
    projects.update(uid, {**editable(old.record), "description": "newer"}, old.etag, MACHINE)

    with pytest.raises(StaleRevision) as caught:
        projects.update(uid, {**editable(old.record), "description": "older"}, old.etag, MACHINE)
    assert caught.value.status == 409
    assert caught.value.kind == "stale_revision"
    assert sandbox.projects[uid]["description"] == "newer"

    with pytest.raises(StaleRevision):
        projects.delete(uid, old.etag, MACHINE)
    assert uid in sandbox.projects


@pytest.mark.parametrize("stale_status", [400, 412])
def test_stale_revision_in_older_and_newer_releases(
    heimdall_key: RSAPrivateKey, stale_status: int
) -> None:
    with Sandbox(
        heimdall_keys={KID: heimdall_key.public_key()},
        auth0_clients={},
        stale_revision_status=stale_status,
    ) as sb:
        minter = TokenMinter(heimdall_key, key_id=KID, jwks_url=sb.env()["HEIMDALL_JWKS_URL"])
        service = V2Service(sb.url, "projects", PROJECT_AUDIENCE, minter)
        try:
            uid = service.create(project_body(sb, "eta"), MACHINE)["uid"]
            old = service.get(uid, MACHINE)
            service.update(uid, editable(old.record), old.etag, MACHINE)
            with pytest.raises(StaleRevision) as caught:
                service.update(uid, editable(old.record), old.etag, MACHINE)
        finally:
            service.close()
    assert caught.value.status == stale_status
    assert "revision mismatch" in (caught.value.body_excerpt or "")


def test_committee_stale_etag_is_stale_revision(sandbox: Sandbox, committees: V2Service) -> None:
    project_uid = sandbox.add_project("Theta", "theta")
    uid = sandbox.add_committee(project_uid, "Board", "Board")
    old = committees.get(uid, MACHINE)
    committees.update(uid, editable(old.record), old.etag, MACHINE)
    with pytest.raises(StaleRevision) as caught:
        committees.update(uid, editable(old.record), old.etag, MACHINE)
    assert "revision mismatch" in (caught.value.body_excerpt or "")


def test_duplicate_slug_post_is_slug_conflict(sandbox: Sandbox, projects: V2Service) -> None:
    projects.create(project_body(sandbox, "iota"), MACHINE)
    with pytest.raises(SlugConflict) as caught:
        projects.create(project_body(sandbox, "iota"), MACHINE)
    assert (caught.value.kind, caught.value.status) == ("conflict", 409)
    assert "iota" in (caught.value.body_excerpt or "")


def test_409_on_put_is_stale_not_conflict(sandbox: Sandbox, projects: V2Service) -> None:
    current = projects.get(sandbox.root_uid, MACHINE)
    sandbox.inject_fault("PUT", "/projects/", status=409)
    with pytest.raises(StaleRevision):
        projects.update(sandbox.root_uid, editable(current.record), current.etag, MACHINE)


# -- permanent errors ---------------------------------------------------------


def test_validation_400_is_permanent_with_body_excerpt(
    sandbox: Sandbox, projects: V2Service
) -> None:
    with pytest.raises(PermanentError) as caught:
        projects.create(project_body(sandbox, "Not A Slug"), MACHINE)
    error = caught.value
    assert not isinstance(error, TransientError)
    assert (error.kind, error.status) == ("v2_validation", 400)
    assert "slug" in (error.body_excerpt or "")
    assert sandbox.count("POST", "/projects") == 1


def test_400_revision_mismatch_on_post_is_still_validation(
    sandbox: Sandbox, projects: V2Service
) -> None:
    sandbox.inject_fault("POST", "/projects", status=400, body="revision mismatch")
    with pytest.raises(PermanentError) as caught:
        projects.create(project_body(sandbox, "kappa"), MACHINE)
    assert caught.value.kind == "v2_validation"


def test_committee_of_unknown_project_is_not_found(sandbox: Sandbox, committees: V2Service) -> None:
    body = {
        "name": "TSC",
        "category": "Other",
        "project_uid": "00000000-0000-4000-8000-000000000000",
    }
    with pytest.raises(PermanentError) as caught:
        committees.create(body, MACHINE)
    assert (caught.value.kind, caught.value.status) == ("v2_not_found", 404)


def test_403_is_forbidden(sandbox: Sandbox, projects: V2Service) -> None:
    sandbox.inject_fault("GET", "/projects/", status=403)
    with pytest.raises(PermanentError) as caught:
        projects.get(sandbox.root_uid, MACHINE)
    assert (caught.value.kind, caught.value.status) == ("v2_forbidden", 403)
    assert sandbox.count("GET", "/projects/") == 1


# -- 401: refresh the token once ----------------------------------------------


def test_401_once_refreshes_token_and_succeeds(sandbox: Sandbox, projects: V2Service) -> None:
    projects.get(sandbox.root_uid, MACHINE)  # warm: token cached, JWKS fetched once
    sandbox.reset_requests()
    sandbox.inject_fault("GET", "/projects/", status=401)

    fetched = projects.get(sandbox.root_uid, MACHINE)

    assert fetched.record["slug"] == "ROOT"
    first, second = [r for r in sandbox.requests if r.path.startswith("/projects/")]
    assert (first.status, second.status) == (401, 200)
    assert first.headers["Authorization"] != second.headers["Authorization"]
    assert sandbox.count("GET", JWKS_PATH) == 1, "the kid was refetched after the 401"


def test_401_twice_is_unauthorized(sandbox: Sandbox, projects: V2Service) -> None:
    sandbox.inject_fault("PUT", "/projects/", status=401, times=2)
    current = projects.get(sandbox.root_uid, MACHINE)
    with pytest.raises(PermanentError) as caught:
        projects.update(sandbox.root_uid, editable(current.record), current.etag, MACHINE)
    assert (caught.value.kind, caught.value.status) == ("v2_unauthorized", 401)
    assert sandbox.count("PUT", "/projects/") == 2


def test_token_with_unknown_kid_recovers_after_refetch(
    sandbox: Sandbox, heimdall_key: RSAPrivateKey
) -> None:
    """A real 401 (the sandbox refuses the kid) is recovered when the JWKS kid is refetched."""
    minter = TokenMinter(heimdall_key, key_id=None, jwks_url=sandbox.env()["HEIMDALL_JWKS_URL"])
    service = V2Service(sandbox.url, "projects", PROJECT_AUDIENCE, minter)
    try:
        # The first JWKS answer names a key the service does not accept (a rotation).
        sandbox.inject_fault(
            "GET", JWKS_PATH, status=200, body={"keys": [{"kid": "retired", "kty": "RSA"}]}
        )
        assert service.get(sandbox.root_uid, MACHINE).record["slug"] == "ROOT"
    finally:
        service.close()
    statuses = [r.status for r in sandbox.requests if r.path.startswith("/projects/")]
    assert statuses == [401, 200]
    assert sandbox.count("GET", JWKS_PATH) == 2


def test_errors_never_carry_the_token(sandbox: Sandbox, projects: V2Service) -> None:
    token = projects.minter.token(PROJECT_AUDIENCE, MACHINE)
    sandbox.inject_fault("POST", "/projects", status=400, body=f"bad token {token} echoed")
    with pytest.raises(PermanentError) as caught:
        projects.create(project_body(sandbox, "lambda"), MACHINE)
    error = caught.value
    for text in (str(error), repr(error), error.body_excerpt or "", error.message):
        assert token not in text
    assert "<redacted>" in (error.body_excerpt or "")


# -- metrics, logs, sessions --------------------------------------------------


def test_latency_histogram_observed_by_service_method_status(
    sandbox: Sandbox, projects: V2Service, committees: V2Service
) -> None:
    before = {
        key: latency_count(*key)
        for key in [
            ("project", "POST", "201"),
            ("project", "GET", "200"),
            ("project", "GET", "503"),
            ("committee", "POST", "201"),
        ]
    }
    uid = projects.create(project_body(sandbox, "mu"), MACHINE)["uid"]
    projects.get(uid, MACHINE)
    sandbox.inject_fault("GET", "/projects/", status=503)
    with pytest.raises(TransientError):
        projects.get(uid, MACHINE)
    committees.create({"name": "Board", "category": "Board", "project_uid": uid}, MACHINE)

    for key, count in before.items():
        assert latency_count(*key) == count + 1, key


def test_non_success_logged_at_warning(
    sandbox: Sandbox, projects: V2Service, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.inject_fault("GET", "/projects/", status=503)
    with caplog.at_level(logging.WARNING, logger="tasks.clients.v2"), pytest.raises(TransientError):
        projects.get(sandbox.root_uid, USER)
    records = [r for r in caplog.records if r.name == "tasks.clients.v2"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.WARNING
    assert record.__dict__["service"] == "project"
    assert record.__dict__["method"] == "GET"
    assert record.__dict__["path"] == f"/projects/{sandbox.root_uid}"
    assert record.__dict__["status"] == 503
    assert record.__dict__["username"] == "jdoe"
    assert "Bearer" not in record.getMessage()


def test_one_session_per_thread_reused_across_calls(sandbox: Sandbox, projects: V2Service) -> None:
    sessions: dict[int, set[int]] = {}
    lock = threading.Lock()

    def work() -> None:
        for _ in range(3):
            projects.get(sandbox.root_uid, MACHINE)
            with lock:
                sessions.setdefault(threading.get_ident(), set()).add(id(projects._session()))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(sessions) == 4
    assert all(len(ids) == 1 for ids in sessions.values())
    assert len({next(iter(ids)) for ids in sessions.values()}) == 4
    assert sandbox.count("GET", "/projects/") == 12


# -- factories -----------------------------------------------------------------


def worker_settings(rsa_pems: dict[str, str], **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "project_service_url": "http://127.0.0.1:1/",
        "heimdall_private_key": rsa_pems["heimdall"],
        "heimdall_key_id": KID,
        "auth0_tenant": "t",
        "auth0_client_id": "c",
        "auth0_private_key": rsa_pems["auth0"],
        "http_timeout": 4.5,
        **overrides,
    }
    return WorkerSettings(**values)


def test_service_factories_follow_settings(
    rsa_pems: dict[str, str], minter: TokenMinter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMMITTEE_SERVICE_URL", raising=False)
    settings = worker_settings(rsa_pems, committee_service_url="http://127.0.0.1:2")
    project = PROJECT_SERVICE.open(settings, minter)
    committee = COMMITTEE_SERVICE.open(settings, minter)
    assert project is not None
    assert (project.base_url, project.collection, project.audience, project.timeout) == (
        "http://127.0.0.1:1",
        "projects",
        PROJECT_AUDIENCE,
        4.5,
    )
    assert project.service == "project"
    assert committee is not None
    assert (committee.collection, committee.audience, committee.service) == (
        "committees",
        COMMITTEE_AUDIENCE,
        "committee",
    )
    assert COMMITTEE_SERVICE.open(worker_settings(rsa_pems), minter) is None


# -- Retry-After parsing ---------------------------------------------------------


def response_with_retry_after(value: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 429
    response.headers["Retry-After"] = value
    return response


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("12", 12.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("soon", None),
        ("inf", None),
        ("", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC).timestamp()
    assert parse_retry_after(response_with_retry_after(value), now=now) == expected


def test_the_environment_proxy_is_read_once_per_thread_and_no_proxy_respected(
    monkeypatch: pytest.MonkeyPatch, minter: TokenMinter
) -> None:
    import urllib3

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    proxied = V2Service("https://api.example", "projects", PROJECT_AUDIENCE, minter)
    direct = V2Service("https://svc.internal.example", "projects", PROJECT_AUDIENCE, minter)
    manager = proxied._session()
    assert isinstance(manager, urllib3.ProxyManager)
    assert manager.proxy is not None
    assert manager.proxy.host == "proxy.invalid"
    assert not isinstance(direct._session(), urllib3.ProxyManager)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/custom-ca.pem")
    assert proxied._session() is manager  # settled once per thread
    fresh = V2Service("https://svc.internal.example", "projects", PROJECT_AUDIENCE, minter)
    assert fresh._session().connection_pool_kw["ca_certs"] == "/etc/custom-ca.pem"
