"""A lean fake of the V2 Project Service for the end-to-end benchmark.

``python -m bench.fake_v2 --port P --nats-url U --latency 0.02 --heimdall-key PEM-FILE
--auth0-key PEM-FILE`` runs, in one process and on one asyncio loop:

- ``POST /projects``, ``GET /projects/{uid}``, ``PUT /projects/{uid}`` (``?v=1``),
  each answered after ``--latency`` seconds, enforcing what the worker's code
  path depends on: a PS256 Heimdall bearer (verified once per distinct token,
  then cached with its expiry), the body rules of ``sandbox.validation``, a
  known ``parent_uid``, unique slugs (409), ``ETag`` on every answer and
  ``If-Match`` on PUT (400 without, 409 when stale);
- the Auth0 token endpoint and ``GET /v1/users/{id}`` of the V1 user service,
  so records modified by platform ids take the real user-cache path;
- ``POST /committees``, ``GET /committees/{uid}``, ``PUT /committees/{uid}`` of the
  V2 Committee Service, with the same rules (``sandbox.validation``, a known
  ``project_uid``, unique names per project (409), ETag/If-Match) and the
  fields the service fills in (``sso_group_name``, ``project_name``);
- with indexer events on (``POST /_bench/events``), after each committee
  write the V2 indexer's event ``lfx.committee.{action}`` on core NATS (the
  envelope of ``sandbox.indexer_events``, the principal of the request's JWT);
- the V1 committee API under ``/project-service/`` (create, PATCH, DELETE),
  each call counted: the V2 -> V1 direction's writes;
- ``POST /_bench/republish``: the last event of ``count`` committees again
  (an echo), or with ``edit`` a person's change of their description (a V1 write);
- the ``lfx.projects-api.slug_to_uid`` responder (ROOT and every created slug);
- ``GET /_bench/stats`` and ``POST /_bench/reset``: V2 calls in flight (max
  and time-weighted mean since the reset), calls by method, and the time
  (``time.monotonic()``, comparable across processes on Linux) each write
  whose description starts with ``LATENCY_MARKER`` was applied, V1 calls by
  method and the indexer events published.

The sandbox's own fake (``sandbox.service``) is a thread per connection and
verifies every token; at several hundred calls a second it would take the
cores the benchmark measures. This one stays cheap, and the benchmark reports
its CPU so that can be checked.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jwt
import nats
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from nats.aio.client import Client
from nats.aio.msg import Msg

from sandbox.api_error import ApiError
from sandbox.auth import CLOCK_SKEW_SECONDS, HEIMDALL_ALGORITHM, HEIMDALL_ISSUER
from sandbox.indexer_events import COMMITTEE, SUBJECT_PREFIX, indexer_event
from sandbox.nats_responder import SLUG_TO_UID_SUBJECT
from sandbox.store import Writer, sso_group_name
from sandbox.validation import READ_ONLY_FIELDS, validate_committee, validate_project

PROJECT_AUDIENCE = "lfx-v2-project-service"
COMMITTEE_AUDIENCE = "lfx-v2-committee-service"
V1_API_PREFIX = "/project-service/"
# The person whose edits ``/_bench/republish`` with ``edit`` stands for.
PERSON = Writer(
    principal="bench_person", sub="bench_person", email=None, on_behalf_of=None, method="PUT"
)
EDITED_PREFIX = "Edited by a person "
ROOT_SLUG = "ROOT"
LATENCY_MARKER = "lat-"
# The fake Auth0 tenant's one access token (a fake's, not a secret).
ACCESS_TOKEN = "bench-access-token"
MAX_HEADER_BYTES = 64 * 1024
REQUIRED_V2_CLAIMS = ("exp", "nbf", "iat", "iss", "aud", "sub", "jti")
NO_CONTENT = 204
REASONS = {200: "OK", 201: "Created", NO_CONTENT: "No Content", 400: "Bad Request"}
REASONS |= {401: "Unauthorized", 404: "Not Found"}
REASONS |= {409: "Conflict", 412: "Precondition Failed", 405: "Method Not Allowed"}


@dataclass
class InFlight:
    """V2 calls being answered right now, integrated over time for the mean."""

    current: int = 0
    maximum: int = 0
    since: float = field(default_factory=time.monotonic)
    last_change: float = field(default_factory=time.monotonic)
    area: float = 0.0

    def change(self, delta: int) -> None:
        now = time.monotonic()
        self.area += self.current * (now - self.last_change)
        self.last_change = now
        self.current += delta
        self.maximum = max(self.maximum, self.current)

    def mean(self) -> float:
        now = time.monotonic()
        area = self.area + self.current * (now - self.last_change)
        return area / (now - self.since) if now > self.since else 0.0


class FakeV2:
    """The state and the request handling (all on one event loop: no locks)."""

    def __init__(self, heimdall_public: Any, latency: float) -> None:
        self.latency = latency
        self._key = heimdall_public
        # token -> (exp, the writer its claims name)
        self._verified: dict[str, tuple[float, Writer]] = {}
        self.projects: dict[str, tuple[dict[str, Any], int]] = {}
        self.slugs: dict[str, str] = {}
        self.committees: dict[str, tuple[dict[str, Any], int, Writer]] = {}
        self.committee_names: dict[tuple[str, str], str] = {}  # (project_uid, name) -> uid
        self._revisions = itertools.count(1)
        self.in_flight = InFlight()
        self.calls: dict[str, int] = {}
        self.writes: dict[str, float] = {}
        self.v1_calls: dict[str, int] = {}
        self.events = 0
        self.verifications = 0
        # Publishes one indexer event (subject, payload); None: indexer events off.
        self.publish: Callable[[str, bytes], None] | None = None
        root = str(uuid.uuid4())
        self.projects[root] = (
            {"uid": root, "name": "ROOT", "slug": ROOT_SLUG, "description": "", "public": True},
            next(self._revisions),
        )
        self.slugs[ROOT_SLUG] = root

    def reset(self) -> None:
        self.in_flight = InFlight(current=self.in_flight.current)
        self.calls = {}
        self.writes = {}
        self.v1_calls = {}

    def stats(self) -> dict[str, Any]:
        return {
            "in_flight_max": self.in_flight.maximum,
            "in_flight_mean": self.in_flight.mean(),
            "calls": self.calls,
            "writes": self.writes,
            "verifications": self.verifications,
            "projects": len(self.projects),
            "committees": len(self.committees),
            "v1_calls": self.v1_calls,
            "events": self.events,
        }

    def verify(self, authorization: str | None, audience: str, method: str) -> Writer:
        """The writer of a valid PS256 Heimdall token for ``audience``, or a 401."""
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token:
            raise ApiError(401, "missing bearer token")
        known = self._verified.get(token)
        if known is None:
            self.verifications += 1
            try:
                claims = jwt.decode(
                    token,
                    key=self._key,
                    algorithms=[HEIMDALL_ALGORITHM],
                    audience=audience,
                    issuer=HEIMDALL_ISSUER,
                    leeway=CLOCK_SKEW_SECONDS,
                    options={"require": list(REQUIRED_V2_CLAIMS)},
                )
            except jwt.InvalidTokenError as error:
                raise ApiError(401, f"invalid token: {error}") from None
            if not str(claims.get("principal") or "").strip():
                raise ApiError(401, "token principal claim is missing or empty")
            known = (float(claims["exp"]), Writer.from_claims(claims, None, method))
            self._verified[token] = known
        exp, writer = known
        if time.time() > exp + CLOCK_SKEW_SECONDS:
            raise ApiError(401, "token expired")
        return writer

    async def project_call(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """One V2 call: counted in flight for its whole life, answered after the latency."""
        self.in_flight.change(1)
        self.calls[method] = self.calls.get(method, 0) + 1
        try:
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            if path.startswith("/committees"):
                writer = self.verify(headers.get("authorization"), COMMITTEE_AUDIENCE, method)
                return self._committee(method, path, headers, body, writer)
            self.verify(headers.get("authorization"), PROJECT_AUDIENCE, method)
            return self._project(method, path, headers, body)
        finally:
            self.in_flight.change(-1)

    def _project(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 1:
            record = self._checked(body, None)
            if record["slug"] in self.slugs:
                raise ApiError(409, f"slug {record['slug']!r} exists")
            uid = str(uuid.uuid4())
            return self._store(uid, record, 201)
        if len(parts) != 2:
            raise ApiError(404, "not found")
        uid = unquote(parts[1])
        if uid not in self.projects:
            raise ApiError(404, "project not found")
        current, revision = self.projects[uid]
        if method == "GET":
            return 200, current, {"ETag": str(revision)}
        if method == "PUT":
            if_match = headers.get("if-match")
            if not if_match:
                raise ApiError(400, "If-Match is required")
            if if_match.strip('"') != str(revision):
                raise ApiError(409, "revision mismatch")
            record = self._checked(body, uid)
            if record["slug"] != current["slug"] and record["slug"] in self.slugs:
                raise ApiError(409, f"slug {record['slug']!r} exists")
            self.slugs.pop(current["slug"], None)
            return self._store(uid, record, 200)
        raise ApiError(405, "method not allowed")

    def _checked(self, body: bytes, uid: str | None) -> dict[str, Any]:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "the request body is not JSON") from None
        record = validate_project(data)
        for name in ("name", "slug", "description", "parent_uid"):
            if name not in record:
                raise ApiError(400, f"{name} is required")
        if record["parent_uid"] not in self.projects or record["parent_uid"] == uid:
            raise ApiError(400, "parent_uid is not a known project")
        if READ_ONLY_FIELDS & record.keys():
            raise ApiError(400, "read-only fields must not be sent")
        return record

    def _store(
        self, uid: str, record: dict[str, Any], status: int
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        revision = next(self._revisions)
        stored = {**record, "uid": uid}
        self.projects[uid] = (stored, revision)
        self.slugs[record["slug"]] = uid
        description = str(record.get("description", ""))
        if description.startswith(LATENCY_MARKER):
            self.writes[description] = time.monotonic()
        return status, stored, {"ETag": str(revision)}

    def slug_to_uid(self, slug: str) -> str:
        return self.slugs.get(slug, "")

    # -- committees ----------------------------------------------------------

    def _committee(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: Writer
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 1:
            record = self._checked_committee(body, None)
            return self._store_committee(str(uuid.uuid4()), record, 201, writer, "created")
        if len(parts) != 2:
            raise ApiError(404, "not found")
        uid = unquote(parts[1])
        if uid not in self.committees:
            raise ApiError(404, "committee not found")
        current, revision, _ = self.committees[uid]
        if method == "GET":
            return 200, current, {"ETag": str(revision)}
        if method == "PUT":
            if_match = headers.get("if-match")
            if not if_match:
                raise ApiError(400, "If-Match is required")
            if if_match.strip('"') != str(revision):
                raise ApiError(409, "revision mismatch")
            record = self._checked_committee(body, uid)
            self.committee_names.pop((current["project_uid"], current["name"]), None)
            return self._store_committee(uid, record, 200, writer, "updated")
        raise ApiError(405, "method not allowed")

    def _checked_committee(self, body: bytes, uid: str | None) -> dict[str, Any]:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "the request body is not JSON") from None
        record = validate_committee(data)
        if record["project_uid"] not in self.projects:
            raise ApiError(404, f"project {record['project_uid']} not found")
        owner = self.committee_names.get((record["project_uid"], record["name"]))
        if owner is not None and owner != uid:
            raise ApiError(409, f"committee {record['name']!r} already exists in the project")
        return record

    def _store_committee(
        self, uid: str, record: dict[str, Any], status: int, writer: Writer, action: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Store, answer with what the service shows (its own fields filled in), publish."""
        revision = next(self._revisions)
        project = self.projects[record["project_uid"]][0]
        view = {
            "uid": uid,
            **record,
            "project_name": project.get("name", ""),
            "total_members": 0,
            "sso_group_name": (
                sso_group_name(str(project.get("slug", "")), record["name"])
                if record.get("sso_group_enabled")
                else ""
            ),
        }
        self.committees[uid] = (view, revision, writer)
        self.committee_names[(record["project_uid"], record["name"])] = uid
        self._publish_committee(action, view, writer)
        return status, view, {"ETag": str(revision)}

    def _publish_committee(self, action: str, view: dict[str, Any], writer: Writer) -> None:
        """The indexer's event of a committee write, when indexer events are on."""
        if self.publish is None:
            return
        parents = [f"project:{view['project_uid']}"]
        event = indexer_event(COMMITTEE, action, view["uid"], view, writer, parents)
        self.publish(f"{SUBJECT_PREFIX}.{COMMITTEE}.{action}", json.dumps(event).encode())
        self.events += 1

    def republish(self, count: int, edit: bool) -> int:
        """The last state of the ``count`` newest committees as ``updated`` events again; with
        ``edit`` a person changes each one's description first (revision and all)."""
        published = 0
        for uid in list(self.committees)[-count:]:
            view, revision, writer = self.committees[uid]
            if edit:
                view = {**view, "description": f"{EDITED_PREFIX}{published}"}
                revision, writer = next(self._revisions), PERSON
                self.committees[uid] = (view, revision, writer)
            self._publish_committee("updated", view, writer)
            published += 1
        return published

    # -- the V1 committee API (the V2 -> V1 direction's writes) -------------------

    def v1_call(self, method: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Counted; a create answers a new sfid (a member's also its contact id)."""
        self.v1_calls[method] = self.v1_calls.get(method, 0) + 1
        if method == "POST":
            answer = {"ID": "a0B" + uuid.uuid4().hex[:15]}
            if path.rstrip("/").endswith("/members"):
                answer["MemberID"] = "003" + uuid.uuid4().hex[:15]
            return 201, answer, {}
        if method == "PATCH":
            return 200, {}, {}
        if method == "DELETE":
            return NO_CONTENT, {}, {}
        raise ApiError(405, "method not allowed")


def user_body(platform_id: str) -> dict[str, Any]:
    """The V1 user service's answer for a benchmark platform id."""
    name = f"bench_{platform_id.lower()}"
    return {
        "ID": platform_id,
        "Username": name,
        "Email": f"{name}@example.org",
        "FirstName": "Bench",
        "LastName": platform_id,
    }


class HttpFront:
    """A minimal HTTP/1.1 keep-alive server in front of ``FakeV2``."""

    def __init__(
        self,
        fake: FakeV2,
        auth0_public: Any,
        base_url: str,
        publisher: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.fake = fake
        self._auth0_public = auth0_public
        self._base_url = base_url
        # What ``POST /_bench/events`` turns the fake's indexer events on with.
        self.publisher = publisher

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                status, payload, extra = await self.route(method, target, headers, body)
                data = b"" if status == NO_CONTENT else json.dumps(payload).encode()
                response = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
                response += [f"{name}: {value}" for name, value in extra.items()]
                response += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
                writer.write(("\r\n".join(response) + "\r\n\r\n").encode() + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            writer.close()

    async def route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        path = urlsplit(target).path
        try:
            if path.startswith(("/projects", "/committees")):
                return await self.fake.project_call(method, path, headers, body)
            if path.startswith(V1_API_PREFIX):
                if headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
                    raise ApiError(401, "bad access token")
                return self.fake.v1_call(method, path)
            if path == "/oauth/token" and method == "POST":
                return 200, self.grant(body), {}
            if path.startswith("/v1/users/") and method == "GET":
                if headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
                    raise ApiError(401, "bad access token")
                return 200, user_body(unquote(path.removeprefix("/v1/users/"))), {}
            if path == "/_bench/stats":
                return 200, self.fake.stats(), {}
            if path == "/_bench/reset" and method == "POST":
                self.fake.reset()
                return 200, {}, {}
            if path == "/_bench/events" and method == "POST":
                self.fake.publish = self.publisher if json.loads(body)["publish"] else None
                return 200, {}, {}
            if path == "/_bench/republish" and method == "POST":
                order = json.loads(body)
                count = self.fake.republish(int(order["count"]), bool(order.get("edit")))
                return 200, {"published": count}, {}
            raise ApiError(404, "not found")
        except ApiError as error:
            return error.status, error.payload(), error.headers

    def grant(self, body: bytes) -> dict[str, Any]:
        """Client credentials with a private-key JWT assertion (verified)."""
        from urllib.parse import parse_qs

        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        try:
            jwt.decode(
                form.get("client_assertion", ""),
                key=self._auth0_public,
                algorithms=["RS256"],
                audience=self._base_url + "/",
            )
        except jwt.InvalidTokenError as error:
            raise ApiError(401, f"invalid client assertion: {error}") from None
        return {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 86400}


def publisher(nc: Client) -> Callable[[str, bytes], None]:
    """Publish on core NATS from the loop, fire-and-forget like the indexer (nats-py's
    flusher sends it; the write's answer does not wait for it)."""
    pending: set[asyncio.Task[None]] = set()

    def publish(subject: str, payload: bytes) -> None:
        task = asyncio.get_running_loop().create_task(nc.publish(subject, payload))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return publish


async def serve(args: argparse.Namespace) -> None:
    heimdall = load_pem_private_key(Path(args.heimdall_key).read_bytes(), None).public_key()
    auth0 = load_pem_private_key(Path(args.auth0_key).read_bytes(), None).public_key()
    fake = FakeV2(heimdall, args.latency)
    nc = await nats.connect(args.nats_url, name="bench-fake-v2")
    front = HttpFront(fake, auth0, f"http://127.0.0.1:{args.port}", publisher(nc))

    async def answer(msg: Msg) -> None:
        await msg.respond(fake.slug_to_uid(msg.data.decode(errors="replace").strip()).encode())

    await nc.subscribe(SLUG_TO_UID_SUBJECT, cb=answer)
    await nc.flush()
    server = await asyncio.start_server(
        front.connection, "127.0.0.1", args.port, limit=MAX_HEADER_BYTES, backlog=512
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--heimdall-key", required=True, help="PEM file of the Heimdall key")
    parser.add_argument("--auth0-key", required=True, help="PEM file of the Auth0 client key")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
