"""``Sandbox``: every fake external service behind one HTTP server, plus NATS.

Usage::

    with Sandbox(heimdall_keys={"kid-1": public_key}, auth0_clients={"cid": key}) as sb:
        os.environ.update(sb.env())
        ...
        assert sb.count("POST", "/projects") == 1

One HTTP server serves the V2 Project and Committee services, Heimdall's
JWKS, the Auth0 token endpoint, the V1 user service and the read-only view
(``/`` and ``/_sandbox/state``). With ``nats_url`` it also answers
``lfx.projects-api.slug_to_uid``; with ``v1_objects_bucket`` it serves the V1
committee API, writing into that bucket; with ``publish_indexer_events`` the
committee fakes publish the V2 indexer's events. The fakes enforce
``v2-contract.md`` and ``reverse-sync.md``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from sandbox.app import SandboxApp
from sandbox.auth import Auth0Issuer, HeimdallVerifier
from sandbox.collection import FakeCollection
from sandbox.http_server import SandboxHttpServer
from sandbox.indexer_events import IndexerEvents
from sandbox.nats_responder import NatsResponder
from sandbox.store import SEED_WRITER, V2Store
from sandbox.traffic import (
    DROPS,
    V1_API_PATH_PREFIXES,
    V1_FAULTS,
    Fault,
    RandomFaults,
    RecordedRequest,
    TrafficLog,
)
from sandbox.v1_api import V1CommitteeApi
from sync_core.nats_client import SyncNats
from sync_core.nats_connection import NatsTarget

DEFAULT_TOKEN_LIFETIME = 86400
JWKS_PATH = "/.well-known/jwks"


class Sandbox:
    """The fake external services of the sync helper; see the module docstring.

    Parameters:
        heimdall_keys: ``kid`` -> public key; served as the JWKS, verifies V2 JWTs.
        auth0_clients: Auth0 client id -> public key of its client assertions.
        users: V1 platform id -> ``{"ID","Username","Email","FirstName","LastName"}``.
        organizations: V1 account sfid -> ``{"ID","Name","Domains"}`` (the
            organization service).
        nats_url: when set, answer ``lfx.projects-api.slug_to_uid`` on that server.
        host, port: where the HTTP server listens (port 0: a free port).
        stale_revision_status: the answer to a stale project ``If-Match``: 400
            (body ``revision mismatch``), 409 or 412.
        token_lifetime: ``expires_in`` of Auth0 access tokens, in seconds.
        crowdfunding_slugs: projects created with these slugs get
            ``funding_model: ["Crowdfunding"]`` (V1 does not send it), the only
            projects the project service lets a client delete.
        v1_objects_bucket: with ``nats_url``, serve the V1 committee API
            (``sandbox.v1_api``), which writes its changes into this bucket.
        publish_indexer_events: with ``nats_url``, publish the V2 indexer's
            events after each committee and member write (``sandbox.indexer_events``).
    """

    def __init__(
        self,
        heimdall_keys: Mapping[str, RSAPublicKey],
        auth0_clients: Mapping[str, RSAPublicKey],
        users: Mapping[str, dict[str, Any]] | None = None,
        nats_url: NatsTarget | str | None = None,
        organizations: Mapping[str, dict[str, Any]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        stale_revision_status: int = 409,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        crowdfunding_slugs: frozenset[str] = frozenset(),
        v1_objects_bucket: str | None = None,
        publish_indexer_events: bool = False,
    ) -> None:
        if (v1_objects_bucket or publish_indexer_events) and not nats_url:
            raise ValueError("the V1 committee API and the indexer events need nats_url")
        self.host = host
        self.v1_objects_bucket = v1_objects_bucket
        self.publish_indexer_events = publish_indexer_events
        self._events_nats: SyncNats | None = None
        self.nats_url = nats_url
        self._store = V2Store(stale_revision_status, crowdfunding_slugs)
        self._traffic = TrafficLog()
        self._stopping = threading.Event()
        self._verifier = HeimdallVerifier(heimdall_keys)
        self._auth0_clients = dict(auth0_clients)
        self._token_lifetime = token_lifetime
        self._users = {k: dict(v) for k, v in (users or {}).items()}
        self._organizations = {k: dict(v) for k, v in (organizations or {}).items()}
        self._requested_port = port
        self._http: SandboxHttpServer | None = None
        self._responder: NatsResponder | None = None
        self._app: SandboxApp | None = None
        self._auth0: Auth0Issuer | None = None
        self._collections: list[FakeCollection] = []

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Listen on HTTP (and NATS when configured); returns when both answer."""
        if self._http is not None:
            return
        self._stopping.clear()
        # The URL (and so the Auth0 audiences) is known once the port is bound.
        placeholder = Auth0Issuer({}, "", "", self._token_lifetime)
        self._app = SandboxApp(
            self._store,
            self._verifier,
            placeholder,
            self._users,
            self._traffic,
            self._stopping,
            self._organizations,
        )
        for collection in self._collections:
            self._app.mount(collection)
        if self.v1_objects_bucket or self.publish_indexer_events:
            assert self.nats_url is not None  # checked in __init__
            self._events_nats = SyncNats(self.nats_url, "sandbox-v1-api")
            if self.v1_objects_bucket:
                self._app.v1_api = V1CommitteeApi(self._events_nats, self.v1_objects_bucket)
            if self.publish_indexer_events:
                self._app.indexer = IndexerEvents(self._events_nats)
        self._http = SandboxHttpServer(self._app, self.host, self._requested_port)
        self._auth0 = Auth0Issuer(
            self._auth0_clients, self.url, self.url + "/", self._token_lifetime
        )
        self._app.auth0 = self._auth0
        self._http.start()
        if self.nats_url:
            self._responder = NatsResponder(
                self.nats_url, self._store.uid_for_slug, self._store.members_of
            )
            try:
                self._responder.start()
            except BaseException:
                self._responder = None
                self.stop()
                raise

    def mount(self, collection: FakeCollection) -> FakeCollection:
        """Serve a new type's fake collection too (``sandbox.collection``); returns it."""
        self._collections.append(collection)
        if self._app is not None:
            self._app.mount(collection)
        return collection

    def stop(self) -> None:
        """Stop the NATS responder and the HTTP server; joins every thread."""
        self._stopping.set()
        if self._responder is not None:
            self._responder.stop()
            self._responder = None
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._events_nats is not None:
            self._events_nats.close()
            self._events_nats = None

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` of the one HTTP server (after ``start``)."""
        if self._http is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self.host}:{self._http.port}"

    @property
    def port(self) -> int:
        """The HTTP port (after ``start``)."""
        if self._http is None:
            raise RuntimeError("the sandbox is not started")
        return self._http.port

    def env(self) -> dict[str, str]:
        """The worker's environment variables that point at this sandbox."""
        return {
            "PROJECT_SERVICE_URL": self.url,
            "COMMITTEE_SERVICE_URL": self.url,
            "HEIMDALL_JWKS_URL": self.url + JWKS_PATH,
            "AUTH0_BASE_URL": self.url,
            "LFX_API_GW": self.url + "/",
            "QUERY_SERVICE_URL": self.url,
        }

    # -- state ---------------------------------------------------------------

    @property
    def root_uid(self) -> str:
        """UID of the seeded ``ROOT`` project."""
        return self._store.root_uid

    @property
    def projects(self) -> dict[str, dict[str, Any]]:
        """uid -> project as stored, with ``_revision`` and ``_last_write`` (deep copies)."""
        return self._store.snapshot()["projects"]

    @property
    def committees(self) -> dict[str, dict[str, Any]]:
        """uid -> committee (read-only fields computed), with ``_revision``/``_last_write``."""
        return self._store.snapshot()["committees"]

    @property
    def members(self) -> dict[str, dict[str, Any]]:
        """uid -> committee member, with ``_revision`` and ``_last_write``."""
        return self._store.snapshot()["members"]

    @property
    def deleted(self) -> dict[str, dict[str, Any]]:
        """uid -> what a client deleted, with ``_deleted_from`` (table) and ``_deleted_by``."""
        return self._store.snapshot()["deleted"]

    @property
    def settings_tables(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``project_settings`` and ``committee_settings``: uid -> settings, with ``_revision``."""
        snapshot = self._store.snapshot()
        return {name: snapshot[name] for name in ("project_settings", "committee_settings")}

    def project_settings(self, uid: str) -> dict[str, Any]:
        """The settings resource of project ``uid`` as the API shows it, with ``_revision``."""
        record, revision = self._store.get_project_settings(uid)
        return {**record, "_revision": revision}

    def committee_settings(self, uid: str) -> dict[str, Any]:
        """The settings resource of committee ``uid`` as the API shows it, with ``_revision``."""
        record, revision = self._store.get_committee_settings(uid)
        return {**record, "_revision": revision}

    def project_by_slug(self, slug: str) -> dict[str, Any] | None:
        """The stored project with this slug, or ``None``."""
        uid = self._store.uid_for_slug(slug)
        return self.projects.get(uid) if uid else None

    def committees_of(self, project_uid: str) -> list[dict[str, Any]]:
        """The stored committees of one project."""
        return [c for c in self.committees.values() if c.get("project_uid") == project_uid]

    # -- seeding -------------------------------------------------------------

    def add_project(
        self,
        name: str,
        slug: str,
        parent_uid: str | None = None,
        description: str = "",
        **fields: Any,
    ) -> str:
        """Store a project as if a client had POSTed it (validated); returns its UID.

        ``parent_uid`` defaults to ROOT. The write is attributed to ``sandbox@clients``.
        """
        body = {
            "name": name,
            "slug": slug,
            "description": description,
            "parent_uid": parent_uid or self.root_uid,
            **fields,
        }
        return str(self._store.create_project(body, SEED_WRITER)["uid"])

    def add_crowdfunding_slug(self, slug: str) -> None:
        """Projects created with ``slug`` from now on are crowdfunded (deletable)."""
        self._store.add_crowdfunding_slug(slug)

    def add_committee(
        self, project_uid: str, name: str, category: str = "Other", **fields: Any
    ) -> str:
        """Store a committee as if a client had POSTed it (validated); returns its UID."""
        body = {"name": name, "category": category, "project_uid": project_uid, **fields}
        return str(self._store.create_committee(body, SEED_WRITER)["uid"])

    def add_user(self, platform_id: str, user: dict[str, Any]) -> None:
        """Make the V1 user service know a user (replacing any earlier one)."""
        app_lock = self._app.users_lock if self._app is not None else threading.Lock()
        with app_lock:
            self._users[platform_id] = dict(user)

    def remove_user(self, platform_id: str) -> None:
        """Make the V1 user service answer 404 for this platform id."""
        app_lock = self._app.users_lock if self._app is not None else threading.Lock()
        with app_lock:
            self._users.pop(platform_id, None)

    def add_organization(self, sfid: str, organization: dict[str, Any]) -> None:
        """Make the V1 organization service know an organization (replacing any earlier one)."""
        app_lock = self._app.users_lock if self._app is not None else threading.Lock()
        with app_lock:
            self._organizations[sfid] = dict(organization)

    def add_member(self, committee_uid: str, email: str, **fields: Any) -> str:
        """Store a committee member as if a client had POSTed it (validated); returns its UID."""
        body = {"email": email, **fields}
        return str(self._store.create_member(committee_uid, body, SEED_WRITER)["uid"])

    def revision(self, kind: str, uid: str) -> int:
        """The current revision (the ETag number) of a project, committee or member."""
        table = {"project": "projects", "committee": "committees", "member": "members"}[kind]
        return self._store.revision_of(table, uid)

    # -- traffic -------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered so far (the view's own requests excluded), oldest first."""
        return self._traffic.requests

    def count(self, method: str, path_prefix: str) -> int:
        """How many requests with ``method`` (``"*"``: any) had a path starting with the prefix."""
        return self._traffic.count(method, path_prefix)

    def reset_requests(self) -> None:
        """Forget the recorded requests."""
        self._traffic.reset()

    @property
    def v1_api(self) -> V1CommitteeApi:
        """The V1 committee API fake (a sandbox given ``v1_objects_bucket`` only)."""
        api = self._app.v1_api if self._app is not None else None
        if api is None:
            raise RuntimeError(
                "this sandbox serves no V1 API (not started, or no v1_objects_bucket)"
            )
        return api

    def inject_fault(
        self,
        method: str,
        path_prefix: str,
        status: int | None = 503,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        delay: float = 0.0,
        drop: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``.

        ``body``: a dict (JSON), str or bytes; default ``{"code","message"}``.
        ``delay``: seconds to wait before answering (to provoke client
        timeouts); with ``status=None`` the request is then answered normally.
        ``method`` ``"*"`` matches any method. ``drop`` (``"before"`` or
        ``"after"``) closes the connection without an answer, before or after
        doing the work.
        """
        if drop is not None and drop not in DROPS:
            raise ValueError(f"drop must be one of {DROPS}")
        self._traffic.inject(
            Fault(
                method=method.upper(),
                path_prefix=path_prefix,
                status=status,
                remaining=times,
                headers=dict(headers or {}),
                body=copy.deepcopy(body),
                delay=delay,
                drop=drop,
            )
        )

    def set_random_faults(self, faults: RandomFaults | None) -> None:
        """Answer V2 calls with random 503s, 429s and dropped connections (``None``: stop)."""
        self._traffic.set_random_faults(faults)

    def set_v1_random_faults(self, faults: RandomFaults | None) -> None:
        """Answer V1 committee API calls with random 503s, 429s (``Retry-After``) and dropped
        connections, half of them after V1 did the write (``None``: stop).

        Drawn apart from the V2 faults (its own seeded generator); ``faults.path_prefixes``
        is replaced by the V1 API's.
        """
        chosen = None if faults is None else replace(faults, path_prefixes=V1_API_PATH_PREFIXES)
        self._traffic.set_random_faults(chosen, V1_FAULTS)

    def set_query_index_delay(self, seconds: float) -> None:
        """How long a new committee stays out of the query service's answers."""
        self._store.index_delay = max(0.0, seconds)

    def clear_faults(self) -> None:
        """Drop faults not yet spent."""
        self._traffic.clear_faults()

    def expire_access_tokens(self) -> None:
        """Expire every Auth0 access token issued so far (the user service then answers 401)."""
        if self._auth0 is not None:
            self._auth0.expire_tokens()

    @property
    def token_requests(self) -> int:
        """How many ``POST /oauth/token`` requests arrived."""
        return self.count("POST", "/oauth/token")
