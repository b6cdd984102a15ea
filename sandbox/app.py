"""Request routing of the sandbox: one HTTP server, every fake service.

``SandboxApp.handle`` turns an ``HttpRequest`` into an ``HttpResponse``; the
HTTP plumbing lives in ``sandbox.http_server``. Routes:

- V2 Project Service: ``/projects``, ``/projects/{uid}``;
- V2 Committee Service: ``/committees``, ``/committees/{uid}``,
  ``/committees/{uid}/members``, ``/committees/{uid}/members/{member_uid}``;
- V2 Query Service: ``/query/resources`` (committees, typeahead on ``name``);
- any collection mounted with ``mount`` (``sandbox.collection``): ``/{name}``,
  ``/{name}/{uid}``;
- Heimdall JWKS: ``/.well-known/jwks``;
- Auth0 token endpoint: ``/oauth/token``; V1 user service: ``/v1/users/{id}``;
- V1 organization service: ``/organization-service/v1/orgs/{sfid}``;
- V1 committee API: ``/project-service/v2/projects/{sfid}/committees…``
  (``sandbox.v1_api``; only when the sandbox writes ``v1-objects``);
- the read-only view: ``/`` (HTML) and ``/_sandbox/state`` (JSON).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from requests.structures import CaseInsensitiveDict

from sandbox import view
from sandbox.api_error import ApiError
from sandbox.auth import Auth0Issuer, HeimdallVerifier
from sandbox.collection import FakeCollection
from sandbox.indexer_events import IndexerEvents
from sandbox.store import V2Store, Writer
from sandbox.traffic import DROP_AFTER, DROP_BEFORE, Fault, RecordedRequest, TrafficLog
from sandbox.user_objects import directory_of
from sandbox.v1_api import V1CommitteeApi
from sandbox.validation import is_uuid

log = logging.getLogger(__name__)

PROJECT_AUDIENCE = "lfx-v2-project-service"
COMMITTEE_AUDIENCE = "lfx-v2-committee-service"
QUERY_AUDIENCE = "lfx-v2-query-service"
QUERY_PAGE_SIZE = 50
API_VERSION = "1"
ON_BEHALF_OF_HEADER = "X-On-Behalf-Of"
SKIP_NOTIFICATION_HEADER = "X-Skip-Notification"
JSON_TYPE = "application/json"
VIEW_PATHS = ("/", "/_sandbox/state")
V1_COMMITTEES = r"^/project-service/v2/projects/([^/]+)/committees"


@dataclass
class HttpRequest:
    """A parsed request: ``query`` holds the first value of each parameter."""

    method: str
    path: str
    query: dict[str, str]
    headers: CaseInsensitiveDict[str]
    body: bytes = b""


@dataclass
class HttpResponse:
    """What the server writes back; ``Content-Length`` is added by the server."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Close the connection without writing anything (a lost answer).
    drop_connection: bool = False


@dataclass
class _CallNotes:
    """What a handler learned while answering, for the recorded request."""

    json_body: Any = None
    claims: dict[str, Any] | None = None
    form: dict[str, str] | None = None


def json_response(
    status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    """A JSON answer."""
    return HttpResponse(
        status,
        {"Content-Type": JSON_TYPE, **(headers or {})},
        json.dumps(payload).encode(),
    )


def parse_query(raw: str) -> dict[str, str]:
    """The first value of each query parameter (blank values kept)."""
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _etag(revision: int) -> dict[str, str]:
    return {"ETag": f'"{revision}"'}


Handler = Callable[..., HttpResponse]


class SandboxApp:
    """Dispatches requests to the fakes, applies injected faults, records traffic."""

    def __init__(
        self,
        store: V2Store,
        verifier: HeimdallVerifier,
        auth0: Auth0Issuer,
        users: dict[str, dict[str, Any]],
        traffic: TrafficLog,
        stopping: threading.Event,
        organizations: dict[str, dict[str, Any]] | None = None,
        v1_api: V1CommitteeApi | None = None,
        indexer: IndexerEvents | None = None,
    ) -> None:
        self.store = store
        # The V1 committee API; None: its routes answer 404 (the sandbox has no NATS).
        self.v1_api = v1_api
        # Publishes the V2 indexer's committee events after each write; None: no events.
        self.indexer = indexer
        self.verifier = verifier
        self.auth0 = auth0
        self.users = users
        # The V1 organization service's data; guarded by users_lock too.
        self.organizations = organizations if organizations is not None else {}
        self.users_lock = threading.Lock()
        # The services rewrite settings user objects from their directory by e-mail.
        self.store.user_directory = directory_of(self._user_entries)
        self.traffic = traffic
        self.stopping = stopping
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r"^/projects$"), {"POST": self._create_project}),
            (
                re.compile(r"^/projects/([^/]+)$"),
                {
                    "GET": self._get_project,
                    "PUT": self._update_project,
                    "DELETE": self._delete_project,
                },
            ),
            (
                re.compile(r"^/projects/([^/]+)/settings$"),
                {"GET": self._get_project_settings, "PUT": self._update_project_settings},
            ),
            (re.compile(r"^/committees$"), {"POST": self._create_committee}),
            (
                re.compile(r"^/committees/([^/]+)/settings$"),
                {"GET": self._get_committee_settings, "PUT": self._update_committee_settings},
            ),
            (
                re.compile(r"^/committees/([^/]+)$"),
                {
                    "GET": self._get_committee,
                    "PUT": self._update_committee,
                    "DELETE": self._delete_committee,
                },
            ),
            (re.compile(r"^/committees/([^/]+)/members$"), {"POST": self._create_member}),
            (
                re.compile(r"^/committees/([^/]+)/members/([^/]+)$"),
                {
                    "GET": self._get_member,
                    "PUT": self._update_member,
                    "DELETE": self._delete_member,
                },
            ),
            (re.compile(r"^/query/resources$"), {"GET": self._query_resources}),
            (re.compile(r"^/\.well-known/jwks$"), {"GET": self._jwks}),
            (re.compile(r"^/oauth/token$"), {"POST": self._oauth_token}),
            (re.compile(r"^/v1/users/([^/]+)$"), {"GET": self._v1_user}),
            (
                re.compile(r"^/organization-service/v1/orgs/([^/]+)$"),
                {"GET": self._v1_organization},
            ),
            (re.compile(V1_COMMITTEES + "$"), {"POST": self._v1_create_committee}),
            (
                re.compile(V1_COMMITTEES + r"/([^/]+)$"),
                {"PATCH": self._v1_update_committee, "DELETE": self._v1_delete_committee},
            ),
            (re.compile(V1_COMMITTEES + r"/([^/]+)/members$"), {"POST": self._v1_create_member}),
            (
                re.compile(V1_COMMITTEES + r"/([^/]+)/members/([^/]+)$"),
                {"PATCH": self._v1_update_member, "DELETE": self._v1_delete_member},
            ),
            (re.compile(r"^/_sandbox/state$"), {"GET": self._state}),
            (re.compile(r"^/$"), {"GET": self._page}),
        ]

    def mount(self, collection: FakeCollection) -> None:
        """Serve ``collection`` at ``/{name}`` and ``/{name}/{uid}`` (a new type's fake)."""

        def create(request: HttpRequest, notes: _CallNotes) -> HttpResponse:
            writer = self._v2_call(request, notes, collection.audience)
            return json_response(201, collection.create(self._json(request, notes), writer))

        def get(request: HttpRequest, notes: _CallNotes, uid: str) -> HttpResponse:
            self._v2_call(request, notes, collection.audience, uid)
            record, revision = collection.get(uid)
            return json_response(200, record, _etag(revision))

        def update(request: HttpRequest, notes: _CallNotes, uid: str) -> HttpResponse:
            writer = self._v2_call(request, notes, collection.audience, uid)
            body = self._json(request, notes)
            return json_response(
                200, collection.update(uid, body, request.headers.get("If-Match"), writer)
            )

        def delete(request: HttpRequest, notes: _CallNotes, uid: str) -> HttpResponse:
            self._v2_call(request, notes, collection.audience, uid)
            collection.delete(uid, request.headers.get("If-Match"))
            return HttpResponse(204)

        name = re.escape(collection.name)
        self._routes[:0] = [
            (re.compile(rf"^/{name}$"), {"POST": create}),
            (re.compile(rf"^/{name}/([^/]+)$"), {"GET": get, "PUT": update, "DELETE": delete}),
        ]

    # -- entry point -----------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request: an injected fault, or the route's answer, or an error."""
        notes = _CallNotes()
        fault = None
        if request.path not in VIEW_PATHS:
            fault = self.traffic.take_fault(request.method, request.path)
        if fault is not None and fault.delay > 0:
            self.stopping.wait(fault.delay)
        if fault is not None and fault.drop == DROP_BEFORE:
            response = HttpResponse(0, drop_connection=True)
        elif fault is not None and fault.drop is None and fault.status is not None:
            response = self._fault_response(fault)
        else:
            try:
                response = self._dispatch(request, notes)
            except ApiError as error:
                response = json_response(error.status, error.payload(), error.headers)
            except Exception:  # a bug in a fake must still answer, and show up in the logs
                log.exception("sandbox failed to answer", extra={"path": request.path})
                response = json_response(500, {"code": "500", "message": "sandbox error"})
            if fault is not None and fault.drop == DROP_AFTER:
                # The work is done (and recorded with its status); the answer is lost.
                response.drop_connection = True
        if request.path not in VIEW_PATHS:
            self.traffic.record(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query=dict(request.query),
                    headers=CaseInsensitiveDict(request.headers),
                    json_body=notes.json_body,
                    claims=notes.claims,
                    status=response.status,
                    form=notes.form,
                )
            )
        return response

    @staticmethod
    def _fault_response(fault: Fault) -> HttpResponse:
        status = int(fault.status or 500)
        if isinstance(fault.body, bytes):
            return HttpResponse(status, dict(fault.headers), fault.body)
        if isinstance(fault.body, str):
            return HttpResponse(
                status, {"Content-Type": "text/plain", **fault.headers}, fault.body.encode()
            )
        payload = (
            fault.body
            if fault.body is not None
            else {
                "code": str(status),
                "message": "injected fault",
            }
        )
        return json_response(status, payload, fault.headers)

    def _dispatch(self, request: HttpRequest, notes: _CallNotes) -> HttpResponse:
        for pattern, methods in self._routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                raise ApiError(
                    405,
                    f"method {request.method} not allowed",
                    headers={"Allow": ", ".join(sorted(methods))},
                )
            return handler(request, notes, *match.groups())
        raise ApiError(404, f"no route for {request.path}")

    # -- shared steps of the V2 calls ----------------------------------------

    def _v2_call(
        self, request: HttpRequest, notes: _CallNotes, audience: str, *uids: str
    ) -> Writer:
        """Check ``v=1``, the path UIDs and the JWT; return who is writing."""
        version = request.query.get("v")
        if version is None:
            raise ApiError(400, "missing required query parameter v")
        if version != API_VERSION:
            raise ApiError(400, f"query parameter v must be {API_VERSION}")
        for uid in uids:
            if not is_uuid(uid):
                raise ApiError(400, f"{uid!r} is not a UUID")
        notes.claims = self.verifier.verify(request.headers.get("Authorization"), audience)
        return Writer.from_claims(
            notes.claims, request.headers.get(ON_BEHALF_OF_HEADER), request.method
        )

    @staticmethod
    def _json(request: HttpRequest, notes: _CallNotes) -> Any:
        if not request.body.strip():
            raise ApiError(400, "the request body must be a JSON object")
        try:
            notes.json_body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not valid JSON") from None
        return notes.json_body

    # -- projects --------------------------------------------------------------

    def _create_project(self, request: HttpRequest, notes: _CallNotes) -> HttpResponse:
        writer = self._v2_call(request, notes, PROJECT_AUDIENCE)
        return json_response(201, self.store.create_project(self._json(request, notes), writer))

    def _get_project(self, request: HttpRequest, notes: _CallNotes, uid: str) -> HttpResponse:
        self._v2_call(request, notes, PROJECT_AUDIENCE, uid)
        record, revision = self.store.get_project(uid)
        return json_response(200, record, _etag(revision))

    def _update_project(self, request: HttpRequest, notes: _CallNotes, uid: str) -> HttpResponse:
        writer = self._v2_call(request, notes, PROJECT_AUDIENCE, uid)
        body = self._json(request, notes)
        record = self.store.update_project(uid, body, request.headers.get("If-Match"), writer)
        return json_response(200, record)

    def _delete_project(self, request: HttpRequest, notes: _CallNotes, uid: str) -> HttpResponse:
        writer = self._v2_call(request, notes, PROJECT_AUDIENCE, uid)
        self.store.delete_project(uid, request.headers.get("If-Match"), writer)
        return HttpResponse(204)

    def _get_project_settings(
        self, request: HttpRequest, notes: _CallNotes, uid: str
    ) -> HttpResponse:
        self._v2_call(request, notes, PROJECT_AUDIENCE, uid)
        record, revision = self.store.get_project_settings(uid)
        return json_response(200, record, _etag(revision))

    def _update_project_settings(
        self, request: HttpRequest, notes: _CallNotes, uid: str
    ) -> HttpResponse:
        writer = self._v2_call(request, notes, PROJECT_AUDIENCE, uid)
        body = self._json(request, notes)
        if_match = request.headers.get("If-Match")
        return json_response(200, self.store.update_project_settings(uid, body, if_match, writer))

    def _user_entries(self) -> list[dict[str, Any]]:
        with self.users_lock:
            return [dict(user) for user in self.users.values()]

    # -- committees ------------------------------------------------------------

    def _create_committee(self, request: HttpRequest, notes: _CallNotes) -> HttpResponse:
        writer = self._v2_call(request, notes, COMMITTEE_AUDIENCE)
        committee = self.store.create_committee(self._json(request, notes), writer)
        if self.indexer is not None:
            self.indexer.committee("created", committee, writer)
        return json_response(201, committee)

    def _get_committee(self, request: HttpRequest, notes: _CallNotes, uid: str) -> HttpResponse:
        self._v2_call(request, notes, COMMITTEE_AUDIENCE, uid)
        record, revision = self.store.get_committee(uid)
        return json_response(200, record, _etag(revision))

    def _update_committee(self, request: HttpRequest, notes: _CallNotes, uid: str) -> HttpResponse:
        writer = self._v2_call(request, notes, COMMITTEE_AUDIENCE, uid)
        body = self._json(request, notes)
        record = self.store.update_committee(uid, body, request.headers.get("If-Match"), writer)
        if self.indexer is not None:
            self.indexer.committee("updated", record, writer)
        return json_response(200, record)

    def _delete_committee(self, request: HttpRequest, notes: _CallNotes, uid: str) -> HttpResponse:
        writer = self._v2_call(request, notes, COMMITTEE_AUDIENCE, uid)
        committee = self.store.get_committee(uid)[0] if self.indexer is not None else None
        self.store.delete_committee(uid, request.headers.get("If-Match"), writer)
        if self.indexer is not None and committee is not None:
            self.indexer.committee("deleted", committee, writer)
        return HttpResponse(204)

    def _get_committee_settings(
        self, request: HttpRequest, notes: _CallNotes, uid: str
    ) -> HttpResponse:
        self._v2_call(request, notes, COMMITTEE_AUDIENCE, uid)
        record, revision = self.store.get_committee_settings(uid)
        return json_response(200, record, _etag(revision))

    def _update_committee_settings(
        self, request: HttpRequest, notes: _CallNotes, uid: str
    ) -> HttpResponse:
        writer = self._v2_call(request, notes, COMMITTEE_AUDIENCE, uid)
        body = self._json(request, notes)
        if_match = request.headers.get("If-Match")
        return json_response(200, self.store.update_committee_settings(uid, body, if_match, writer))

    # -- committee members -------------------------------------------------------

    def _create_member(
        self, request: HttpRequest, notes: _CallNotes, committee_uid: str
    ) -> HttpResponse:
        writer = self._v2_call(request, notes, COMMITTEE_AUDIENCE, committee_uid)
        body = self._json(request, notes)
        skip = request.headers.get(SKIP_NOTIFICATION_HEADER, "").strip().lower() == "true"
        member = self.store.create_member(committee_uid, body, writer, skip_notification=skip)
        if self.indexer is not None:
            self.indexer.member("created", member, writer)
        return json_response(201, member)

    def _get_member(
        self, request: HttpRequest, notes: _CallNotes, committee_uid: str, uid: str
    ) -> HttpResponse:
        self._v2_call(request, notes, COMMITTEE_AUDIENCE, committee_uid, uid)
        record, revision = self.store.get_member(committee_uid, uid)
        return json_response(200, record, _etag(revision))

    def _update_member(
        self, request: HttpRequest, notes: _CallNotes, committee_uid: str, uid: str
    ) -> HttpResponse:
        writer = self._v2_call(request, notes, COMMITTEE_AUDIENCE, committee_uid, uid)
        body = self._json(request, notes)
        if_match = request.headers.get("If-Match")
        member = self.store.update_member(committee_uid, uid, body, if_match, writer)
        if self.indexer is not None:
            self.indexer.member("updated", member, writer)
        return json_response(200, member)

    def _delete_member(
        self, request: HttpRequest, notes: _CallNotes, committee_uid: str, uid: str
    ) -> HttpResponse:
        writer = self._v2_call(request, notes, COMMITTEE_AUDIENCE, committee_uid, uid)
        member = self.store.get_member(committee_uid, uid)[0] if self.indexer is not None else None
        self.store.delete_member(committee_uid, uid, request.headers.get("If-Match"), writer)
        if self.indexer is not None and member is not None:
            self.indexer.member("deleted", member, writer)
        return HttpResponse(204)

    # -- the query service ------------------------------------------------------

    def _query_resources(self, request: HttpRequest, notes: _CallNotes) -> HttpResponse:
        """``GET /query/resources?v=1&type=committee&parent=project:{uid}&name=…``."""
        self._v2_call(request, notes, QUERY_AUDIENCE)
        kind = request.query.get("type")
        if kind != "committee":
            raise ApiError(400, "query parameter type must be committee in the sandbox")
        parent = request.query.get("parent")
        project_uid = None
        if parent is not None:
            prefix, _, project_uid = parent.partition(":")
            if prefix != "project" or not is_uuid(project_uid):
                raise ApiError(400, "query parameter parent must be project:{uid}")
        token = request.query.get("page_token") or "0"
        if not token.isdigit():
            raise ApiError(400, "page_token is not one this service issued")
        found = self.store.search_committees(project_uid, request.query.get("name", ""))
        start = int(token)
        page = found[start : start + QUERY_PAGE_SIZE]
        more = start + QUERY_PAGE_SIZE < len(found)
        resources = [{"type": "committee", "id": c["uid"], "data": c} for c in page]
        return json_response(
            200,
            {"resources": resources, "page_token": str(start + QUERY_PAGE_SIZE) if more else None},
        )

    # -- identity services --------------------------------------------------------

    def _jwks(self, request: HttpRequest, notes: _CallNotes) -> HttpResponse:
        return json_response(200, self.verifier.jwks())

    def _oauth_token(self, request: HttpRequest, notes: _CallNotes) -> HttpResponse:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if content_type == JSON_TYPE:
                raw = json.loads(request.body or b"{}")
                form = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
            else:
                form = parse_query(request.body.decode())
        except (ValueError, UnicodeDecodeError):
            form = {}
        notes.form = form
        return json_response(200, self.auth0.grant(form), {"Cache-Control": "no-store"})

    def _v1_user(self, request: HttpRequest, notes: _CallNotes, platform_id: str) -> HttpResponse:
        self.auth0.check_access_token(request.headers.get("Authorization"))
        with self.users_lock:
            user = self.users.get(platform_id)
            user = dict(user) if user is not None else None
        if user is None:
            raise ApiError(404, "user not found", body={"message": "user not found"})
        return json_response(200, user)

    def _v1_organization(self, request: HttpRequest, notes: _CallNotes, sfid: str) -> HttpResponse:
        self.auth0.check_access_token(request.headers.get("Authorization"))
        with self.users_lock:
            organization = self.organizations.get(sfid)
            organization = dict(organization) if organization is not None else None
        if organization is None:
            raise ApiError(
                404, "organization not found", body={"message": "organization not found"}
            )
        return json_response(200, organization)

    # -- the V1 committee API -------------------------------------------------------

    def _v1_call(self, request: HttpRequest) -> tuple[V1CommitteeApi, str]:
        """The API and the Auth0 client id of the bearer (401 before anything else)."""
        client_id = self.auth0.client_of(request.headers.get("Authorization"))
        if self.v1_api is None:
            raise ApiError(404, "the V1 committee API is not enabled in this sandbox")
        return self.v1_api, client_id

    def _v1_create_committee(
        self, request: HttpRequest, notes: _CallNotes, project_sfid: str
    ) -> HttpResponse:
        api, client_id = self._v1_call(request)
        body = self._json(request, notes)
        return json_response(201, api.create_committee(project_sfid, body, client_id))

    def _v1_update_committee(
        self, request: HttpRequest, notes: _CallNotes, project_sfid: str, sfid: str
    ) -> HttpResponse:
        api, client_id = self._v1_call(request)
        body = self._json(request, notes)
        return json_response(200, api.update_committee(project_sfid, sfid, body, client_id))

    def _v1_delete_committee(
        self, request: HttpRequest, notes: _CallNotes, project_sfid: str, sfid: str
    ) -> HttpResponse:
        api, client_id = self._v1_call(request)
        api.delete_committee(project_sfid, sfid, client_id)
        return HttpResponse(204)

    def _v1_create_member(
        self, request: HttpRequest, notes: _CallNotes, project_sfid: str, committee_sfid: str
    ) -> HttpResponse:
        api, client_id = self._v1_call(request)
        body = self._json(request, notes)
        # V1 answers a member create with 200, not 201.
        return json_response(200, api.create_member(project_sfid, committee_sfid, body, client_id))

    def _v1_update_member(
        self,
        request: HttpRequest,
        notes: _CallNotes,
        project_sfid: str,
        committee_sfid: str,
        contact_id: str,
    ) -> HttpResponse:
        api, client_id = self._v1_call(request)
        body = self._json(request, notes)
        member = api.update_member(project_sfid, committee_sfid, contact_id, body, client_id)
        return json_response(200, member)

    def _v1_delete_member(
        self,
        request: HttpRequest,
        notes: _CallNotes,
        project_sfid: str,
        committee_sfid: str,
        contact_id: str,
    ) -> HttpResponse:
        api, client_id = self._v1_call(request)
        api.delete_member(project_sfid, committee_sfid, contact_id, client_id)
        return HttpResponse(204)

    # -- the view ---------------------------------------------------------------

    def _state(self, request: HttpRequest, notes: _CallNotes) -> HttpResponse:
        return json_response(200, view.state(self.store))

    def _page(self, request: HttpRequest, notes: _CallNotes) -> HttpResponse:
        return HttpResponse(
            200,
            {"Content-Type": "text/html; charset=utf-8"},
            view.html_page(view.state(self.store)).encode(),
        )
