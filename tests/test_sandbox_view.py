"""The sandbox's view, its life cycle, and ``python -m sandbox`` as a process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from sandbox.samples import load_users
from sandbox.servers import NatsServer
from sandbox.service import Sandbox

KID = "heimdall-test"
PROCESS_TIMEOUT = 20.0


def _private(pem: str) -> RSAPrivateKey:
    key = load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, RSAPrivateKey)
    return key


@pytest.fixture
def sandbox(heimdall_key: RSAPrivateKey) -> Iterator[Sandbox]:
    with Sandbox(heimdall_keys={KID: heimdall_key.public_key()}, auth0_clients={}) as sb:
        yield sb


def _bearer(key: RSAPrivateKey, audience: str, principal: str = "jdoe") -> dict[str, str]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "heimdall",
        "aud": audience,
        "sub": principal,
        "principal": principal,
        "iat": now,
        "nbf": now - 30,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    return {
        "Authorization": "Bearer "
        + jwt.encode(claims, key, algorithm="PS256", headers={"kid": KID})
    }


def _seed_tree(sb: Sandbox) -> dict[str, str]:
    foundation = sb.add_project("Cloud Native Computing Foundation", "cncf", stage="Active")
    project = sb.add_project("Kubernetes", "kubernetes", parent_uid=foundation)
    subproject = sb.add_project("<b>minikube</b>", "minikube", parent_uid=project)
    board = sb.add_committee(foundation, "Governing Board", "Board")
    return {"cncf": foundation, "kubernetes": project, "minikube": subproject, "board": board}


def test_state_lists_every_object_with_its_last_writer(
    sandbox: Sandbox, heimdall_key: RSAPrivateKey
) -> None:
    uids = _seed_tree(sandbox)
    response = requests.post(
        sandbox.url + "/committees?v=1",
        json={
            "name": "TSC",
            "category": "Technical Steering Committee",
            "project_uid": uids["kubernetes"],
        },
        headers={**_bearer(heimdall_key, "lfx-v2-committee-service"), "X-On-Behalf-Of": "jdoe"},
        timeout=10,
    )
    assert response.status_code == 201
    tsc = response.json()["uid"]
    state = requests.get(sandbox.url + "/_sandbox/state", timeout=10).json()
    assert state["root_uid"] == sandbox.root_uid
    assert state["counts"] == {"projects": 4, "committees": 2, "members": 0, "deleted": 0}
    assert set(state["projects"]) == {
        sandbox.root_uid,
        uids["cncf"],
        uids["kubernetes"],
        uids["minikube"],
    }
    assert state["projects"][uids["minikube"]]["parent_uid"] == uids["kubernetes"]
    assert state["projects"][uids["cncf"]]["_last_write"]["principal"] == "sandbox@clients"
    assert state["committees"][tsc]["_last_write"] == {
        "principal": "jdoe",
        "sub": "jdoe",
        "email": None,
        "on_behalf_of": "jdoe",
        "method": "POST",
    }
    assert state["committees"][tsc]["project_name"] == "Kubernetes"
    assert isinstance(state["committees"][tsc]["_revision"], int)
    # The view's own requests are not recorded as traffic.
    assert sandbox.count("GET", "/_sandbox") == 0
    assert state == json.loads(json.dumps(state))


def test_html_page_shows_the_tree_with_committees_and_writers(sandbox: Sandbox) -> None:
    uids = _seed_tree(sandbox)
    response = requests.get(sandbox.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text

    # Nesting: ROOT contains cncf, which contains kubernetes, which contains minikube.
    def block(uid: str) -> str:
        start = page.index(f'id="{uid}"')
        depth, index = 0, page.rfind("<li", 0, start)
        for match in re.finditer(r"<li|</li>", page[index:]):
            depth += 1 if match.group() == "<li" else -1
            if depth == 0:
                return page[index : index + match.end()]
        raise AssertionError("unbalanced page")

    root_block = block(sandbox.root_uid)
    assert f'id="{uids["cncf"]}"' in root_block
    cncf_block = block(uids["cncf"])
    assert f'id="{uids["kubernetes"]}"' in cncf_block
    assert "Governing Board" in cncf_block
    assert f'id="{uids["minikube"]}"' in block(uids["kubernetes"])
    assert "Governing Board" not in block(uids["kubernetes"])
    assert "last written by sandbox@clients" in page
    assert "&lt;b&gt;minikube&lt;/b&gt;" in page
    assert "<b>minikube</b>" not in page


def test_html_page_shows_settings_under_each_project(sandbox: Sandbox) -> None:
    sandbox.add_user(
        "0032M00002XyZabQAB",
        {"ID": "0032M00002XyZabQAB", "Username": "jdoe", "Email": "jdoe@example.org",
         "FirstName": "Jane", "LastName": "Doe"},
    )  # fmt: skip
    uid = sandbox.add_project(
        "Settings Project",
        "settings-project",
        mission_statement="Make <things> better.",
        executive_director={"name": "J", "email": "jdoe@example.org", "username": "", "avatar": ""},
    )
    committee = sandbox.add_committee(uid, "TAC", "Technical Advisory Committee",
                                      business_email_required=True, join_mode="open")  # fmt: skip
    state = requests.get(sandbox.url + "/_sandbox/state", timeout=10).json()
    stored = state["project_settings"][uid]
    # The fake rewrote the user object from its directory by e-mail.
    assert stored["executive_director"]["name"] == "Jane Doe"
    assert stored["executive_director"]["username"] == "jdoe"
    assert state["committee_settings"][committee]["business_email_required"] is True
    page = requests.get(sandbox.url + "/", timeout=10).text
    start = page.index(f'id="{uid}"')
    block = page[start : page.index("</li>", start)]
    assert "mission: Make &lt;things&gt; better." in block
    assert "executive director: Jane Doe &lt;jdoe@example.org&gt;" in block
    assert "business e-mail required" in page
    assert "join: open" in page


def test_html_page_shows_members_under_their_committee(sandbox: Sandbox) -> None:
    uids = _seed_tree(sandbox)
    board = next(c["uid"] for c in sandbox.committees_of(uids["cncf"]))
    sandbox.add_member(
        board,
        "jane@example.com",
        first_name="Jane",
        role={"name": "Chair"},
        organization={"id": "0014100000Te2ovAAB", "name": "Example <Corp>"},
    )
    page = requests.get(sandbox.url + "/", timeout=10).text
    start = page.index(f'id="{board}"')
    committee_block = page[start : page.index("</ul></li>", start)]
    assert "jane@example.com" in committee_block
    assert "Chair" in committee_block
    assert "Example &lt;Corp&gt;" in committee_block
    assert page.count("jane@example.com") == 1
    assert "1 members" in page


def test_deleted_objects_are_listed_with_who_deleted_them(
    sandbox: Sandbox, heimdall_key: RSAPrivateKey
) -> None:
    sandbox.add_crowdfunding_slug("gone")
    uid = sandbox.add_project("Gone", "gone")
    headers = {**_bearer(heimdall_key, "lfx-v2-project-service"), "X-On-Behalf-Of": "jdoe"}
    etag = requests.get(f"{sandbox.url}/projects/{uid}?v=1", headers=headers, timeout=10).headers[
        "ETag"
    ]
    response = requests.delete(
        f"{sandbox.url}/projects/{uid}?v=1", headers={**headers, "If-Match": etag}, timeout=10
    )
    assert response.status_code == 204
    state = requests.get(sandbox.url + "/_sandbox/state", timeout=10).json()
    assert uid not in state["projects"]
    assert state["counts"]["deleted"] == 1
    gone = state["deleted"][uid]
    assert (gone["slug"], gone["_deleted_from"]) == ("gone", "projects")
    assert gone["_deleted_by"]["principal"] == "jdoe"
    assert gone["_deleted_by"]["method"] == "DELETE"
    page = requests.get(sandbox.url + "/", timeout=10).text
    assert "deleted by jdoe on behalf of jdoe" in page
    assert "1 deleted" in page


def test_view_is_read_only(sandbox: Sandbox) -> None:
    assert requests.post(sandbox.url + "/_sandbox/state", json={}, timeout=10).status_code == 405
    assert requests.delete(sandbox.url + "/", timeout=10).status_code == 405


def _sandbox_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sandbox-")]


def test_stop_joins_every_thread_even_with_open_and_stalled_connections(
    nats_server: NatsServer, heimdall_key: RSAPrivateKey
) -> None:
    assert _sandbox_threads() == []
    sb = Sandbox(
        heimdall_keys={KID: heimdall_key.public_key()}, auth0_clients={}, nats_url=nats_server.url
    )
    sb.start()
    session = requests.Session()  # keeps its connection open between requests
    assert session.get(sb.url + "/.well-known/jwks", timeout=10).status_code == 200
    sb.inject_fault("GET", "/.well-known/jwks", status=503, delay=30)
    outcome: list[object] = []

    def stalled_call() -> None:
        try:
            outcome.append(requests.get(sb.url + "/.well-known/jwks", timeout=60).status_code)
        except requests.RequestException as error:
            outcome.append(error)

    stalled = threading.Thread(target=stalled_call, daemon=True)
    stalled.start()
    deadline = time.monotonic() + 5
    while len(_sandbox_threads()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    # accept loop, NATS loop, the session's connection and the stalled one
    assert len(_sandbox_threads()) == 4
    started = time.monotonic()
    sb.stop()
    assert time.monotonic() - started < 5
    assert _sandbox_threads() == []
    stalled.join(5)
    # The stalled client got its answer or lost its connection: it did not hang for 30 s.
    assert len(outcome) == 1
    session.close()


def _write_keys(tmp_path: Path, rsa_pems: dict[str, str]) -> tuple[Path, Path]:
    heimdall_file = tmp_path / "heimdall.pem"
    heimdall_file.write_text(rsa_pems["heimdall"])
    auth0 = _private(rsa_pems["auth0"]).public_key()
    auth0_file = tmp_path / "auth0.pub"
    auth0_file.write_bytes(
        auth0.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return heimdall_file, auth0_file


def _check_users(url: str, auth0_key: RSAPrivateKey) -> None:
    """Both the --users file and the sample users are served, behind an Auth0 token."""
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": "client-1",
            "sub": "client-1",
            "aud": url + "/",
            "iat": now,
            "exp": now + 120,
            "jti": str(uuid.uuid4()),
        },
        auth0_key,
        algorithm="RS256",
    )
    grant = requests.post(
        url + "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "client-1",
            "audience": url + "/",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
        timeout=10,
    )
    assert grant.status_code == 200, grant.text
    headers = {"Authorization": "Bearer " + grant.json()["access_token"]}
    for platform_id in ("0032M00002XyZabQAB", next(iter(load_users()))):
        user = requests.get(f"{url}/v1/users/{platform_id}", headers=headers, timeout=10)
        assert user.status_code == 200
        assert user.json()["ID"] == platform_id


def test_python_m_sandbox_runs_until_sigterm(
    tmp_path: Path, rsa_pems: dict[str, str], heimdall_key: RSAPrivateKey, nats_server: NatsServer
) -> None:
    heimdall_file, auth0_file = _write_keys(tmp_path, rsa_pems)
    users_file = tmp_path / "users.json"
    users_file.write_text(
        json.dumps({"0032M00002XyZabQAB": {"ID": "0032M00002XyZabQAB", "Username": "jdoe"}})
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--heimdall-key",
            str(heimdall_file),
            "--heimdall-key-id",
            KID,
            "--auth0-client-id",
            "client-1",
            "--auth0-key",
            str(auth0_file),
            "--users",
            str(users_file),
            "--sample-users",
            "--sample-crowdfunding",
            "--crowdfunding-slugs",
            "extra, more",
            "--nats-url",
            nats_server.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["event"] == "sandbox_ready"
        url = ready["url"]
        assert ready["env"]["LFX_API_GW"] == url + "/"
        jwks = requests.get(url + "/.well-known/jwks", timeout=10).json()
        assert jwks["keys"][0]["kid"] == KID
        response = requests.get(
            f"{url}/projects/{ready['root_uid']}?v=1",
            headers=_bearer(heimdall_key, "lfx-v2-project-service"),
            timeout=10,
        )
        assert response.status_code == 200
        assert response.json()["slug"] == "ROOT"
        _check_users(url, _private(rsa_pems["auth0"]))
        # The sample set's crowdfunded slugs and the listed ones; no other.
        for slug, crowdfunded in (("minikube", True), ("extra", True), ("helm", False)):
            created = requests.post(
                f"{url}/projects?v=1",
                json={
                    "name": slug,
                    "slug": slug,
                    "description": "",
                    "parent_uid": ready["root_uid"],
                },
                headers=_bearer(heimdall_key, "lfx-v2-project-service"),
                timeout=10,
            )
            assert created.status_code == 201, created.text
            assert (created.json().get("funding_model") == ["Crowdfunding"]) is crowdfunded, slug
        process.send_signal(signal.SIGTERM)
        assert process.wait(PROCESS_TIMEOUT) == 0
        assert json.loads(process.stdout.readline())["event"] == "sandbox_stopped"
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(PROCESS_TIMEOUT)


def test_python_m_sandbox_rejects_a_bad_key_file_without_quoting_it(tmp_path: Path) -> None:
    secret_file = tmp_path / "bad.pem"
    secret_file.write_text(
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXZhbHVl\n-----END PRIVATE KEY-----\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "--heimdall-key", str(secret_file)],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        env={**os.environ, "NATS_URL": ""},
    )
    assert result.returncode == 2
    assert "--heimdall-key" in result.stderr
    assert "c2VjcmV0LXZhbHVl" not in result.stderr + result.stdout
