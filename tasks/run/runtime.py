"""Per-process resources of a worker, opened once and shared by the task's threads.

One ``Runtime`` per worker process: the settings, one NATS connection (which
reconnects on its own), one Redis client, the token minter, the V2 clients, the
user and organization directories (one Auth0 token source for both), the
mapping store, and the sync state and dead-letter stores (both in JetStream).
A prefork child opens its own at ``worker_process_init`` (a NATS loop thread
does not survive ``fork``); the threads and solo pools, and tests, create it
on first use. Tests build one for their servers and install it with
``set_runtime``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import redis
from celery import signals
from celery._state import get_current_app

from sync_core.nats_client import SyncNats
from sync_core.redis_connection import RedisTarget
from sync_core.redis_connection import redis_client as connect_redis
from sync_core.settings import WorkerSettings, load_settings
from tasks.clients.auth0 import token_source_from_settings
from tasks.clients.identity import Identity
from tasks.clients.organizations import OrganizationDirectory, organization_directory_from_settings
from tasks.clients.query_service import query_service
from tasks.clients.tokens import TokenMinter, minter_from_settings
from tasks.clients.users import UserDirectory, user_directory_from_settings
from tasks.clients.v2 import V2Service, committee_service, project_service
from tasks.errors import TransientError
from tasks.run.metrics import mark_process_dead
from tasks.stores.dead_letters import DeadLetterStore
from tasks.stores.id_mappings import MappingStore
from tasks.stores.objects_epoch import ObjectsEpoch
from tasks.stores.sync_state import StateStore
from tasks.worker.app import app

log = logging.getLogger(__name__)

SLUG_TO_UID_SUBJECT = "lfx.projects-api.slug_to_uid"
LIST_MEMBERS_SUBJECT = "lfx.committee-api.list_members"
ROOT_SLUG = "ROOT"
SLUG_LOOKUP_TIMEOUT = 5.0
REDIS_SOCKET_TIMEOUT = 5.0
REDIS_HEALTH_CHECK_INTERVAL = 30
NATS_CLIENT_NAME = "v1-sync-helper-worker"


@dataclass
class Runtime:
    """What the task needs to do its work, for one worker process."""

    settings: WorkerSettings
    nats: SyncNats
    redis: redis.Redis
    minter: TokenMinter
    projects: V2Service
    committees: V2Service | None
    query: V2Service | None
    users: UserDirectory
    organizations: OrganizationDirectory
    mappings: MappingStore
    dead_letters: DeadLetterStore
    state: StateStore
    _objects_epoch: ObjectsEpoch | None = field(default=None, repr=False)
    _root_uid: str | None = field(default=None, repr=False)
    _root_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> Runtime:
        """Open every connection for ``settings`` (NATS first: it fails fastest)."""
        nats_client = SyncNats(settings.nats_url, f"{NATS_CLIENT_NAME}-{os.getpid()}")
        try:
            redis_client = redis_client_for(settings.redis_target)
            minter = minter_from_settings(settings)
            auth0 = token_source_from_settings(settings)
            return cls(
                settings=settings,
                nats=nats_client,
                redis=redis_client,
                minter=minter,
                projects=project_service(settings, minter),
                committees=committee_service(settings, minter),
                query=query_service(settings, minter),
                users=user_directory_from_settings(settings, nats_client, auth0),
                organizations=organization_directory_from_settings(settings, nats_client, auth0),
                mappings=MappingStore(nats_client, settings.v1_mappings_bucket),
                dead_letters=DeadLetterStore(nats_client, settings.sync_state_bucket),
                state=StateStore(nats_client, settings.sync_state_bucket),
            )
        except BaseException:
            nats_client.close()
            raise

    @property
    def objects_epoch(self) -> ObjectsEpoch:
        """The cached epoch of ``v1-objects`` (``tasks.stores.objects_epoch``)."""
        if self._objects_epoch is None:
            self._objects_epoch = ObjectsEpoch(self.nats, self.settings.v1_objects_bucket)
        return self._objects_epoch

    def identity_for(self, last_modified_by: object) -> Identity:
        """The identity V2 calls for a record modified by ``last_modified_by`` are made as."""
        return self.users.identity_for(last_modified_by)

    def slug_to_uid(self, slug: str) -> str | None:
        """The V2 uid of the project ``slug`` from the project service's NATS responder.

        None when the service does not know the slug; ``TransientError`` when it
        does not answer.
        """
        try:
            reply = self.nats.request(
                SLUG_TO_UID_SUBJECT, slug.encode("utf-8"), timeout=SLUG_LOOKUP_TIMEOUT
            )
        except (nats.errors.Error, TimeoutError) as error:
            raise TransientError(
                f"{SLUG_TO_UID_SUBJECT} for {slug!r} failed: {type(error).__name__}",
                kind="slug_lookup_unavailable",
            ) from None
        uid = reply.decode("utf-8", "replace").strip()
        return uid or None

    def list_members(self, committee_uid: str) -> list[dict[str, Any]]:
        """The members of a committee, from the committee service's NATS responder.

        ``TransientError`` when it does not answer or answers something that is
        not a JSON list.
        """
        try:
            reply = self.nats.request(
                LIST_MEMBERS_SUBJECT, committee_uid.encode("utf-8"), timeout=SLUG_LOOKUP_TIMEOUT
            )
        except (nats.errors.Error, TimeoutError) as error:
            raise TransientError(
                f"{LIST_MEMBERS_SUBJECT} for {committee_uid} failed: {type(error).__name__}",
                kind="member_list_unavailable",
            ) from None
        try:
            members = json.loads(reply or b"null")
        except ValueError:
            members = None
        if not isinstance(members, list):
            raise TransientError(
                f"{LIST_MEMBERS_SUBJECT} for {committee_uid} answered no JSON list",
                kind="member_list_unavailable",
            )
        return [member for member in members if isinstance(member, dict)]

    def root_uid(self) -> str:
        """The uid of the ROOT project, looked up once per process."""
        with self._root_lock:
            if self._root_uid is None:
                uid = self.slug_to_uid(ROOT_SLUG)
                if uid is None:
                    raise TransientError(
                        "the project service does not know the ROOT project", kind="root_unknown"
                    )
                self._root_uid = uid
                log.info("found the ROOT project", extra={"project_uid": uid})
            return self._root_uid

    def close(self) -> None:
        """Close every connection (errors are logged, not raised)."""
        closers: list[Any] = [
            self.users.close,
            self.organizations.close,
            self.projects.close,
            self.redis.close,
        ]
        if self.committees is not None:
            closers.append(self.committees.close)
        if self.query is not None:
            closers.append(self.query.close)
        closers.append(self.nats.close)
        for close in closers:
            try:
                close()
            except Exception:
                log.warning("closing a worker resource failed", exc_info=True)


def redis_client_for(target: RedisTarget | str) -> redis.Redis:
    """A Redis client that never blocks on a half-open socket and follows a Sentinel failover."""
    return connect_redis(
        target,
        socket_timeout=REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
        socket_keepalive=True,
        health_check_interval=REDIS_HEALTH_CHECK_INTERVAL,
        retry_on_timeout=True,
    )


_runtime: Runtime | None = None
_runtime_pid: int | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, opened from the environment on first use."""
    global _runtime, _runtime_pid
    runtime = _runtime
    if runtime is not None and _runtime_pid == os.getpid():
        return runtime
    with _runtime_lock:
        if _runtime is None or _runtime_pid != os.getpid():
            # A runtime inherited through fork has a dead NATS thread: never reuse it.
            _runtime = Runtime.from_settings(load_settings(WorkerSettings))
            _runtime_pid = os.getpid()
        return _runtime


def set_runtime(runtime: Runtime | None) -> Runtime | None:
    """Install ``runtime`` for this process (tests); returns the one it replaces."""
    global _runtime, _runtime_pid
    with _runtime_lock:
        previous, _runtime = _runtime, runtime
        _runtime_pid = os.getpid() if runtime is not None else None
    return previous


def has_runtime() -> bool:
    """Whether this process has a runtime open already."""
    return _runtime is not None and _runtime_pid == os.getpid()


def close_runtime() -> None:
    """Close and forget this process's runtime, if it opened one."""
    global _runtime, _runtime_pid
    with _runtime_lock:
        runtime, owned = _runtime, _runtime_pid == os.getpid()
        _runtime, _runtime_pid = None, None
    if runtime is not None and owned:
        runtime.close()


# Celery signals are process-wide: every handler first checks that the worker
# is ours, so other apps in the same process (tests) are left alone.


def _ours(worker: Any = None) -> bool:
    """Whether the signalling worker (or, without one, this process's current app) is ours."""
    owner = getattr(worker, "app", None) if worker is not None else get_current_app()
    return owner is app


@signals.worker_init.connect
def _check_settings(sender: Any = None, **_: Any) -> None:
    """Stop a worker with bad configuration before it takes any task (exit code 2)."""
    if _ours(sender) and not has_runtime():
        load_settings(WorkerSettings)


@signals.worker_process_init.connect
def _open_in_child(**_: Any) -> None:
    """A prefork child opens its own connections before its first task."""
    if not _ours():
        return
    try:
        get_runtime()
    except Exception:
        # The first task tries again and retries with backoff if it still fails.
        log.exception("could not open the worker's connections")


@signals.worker_process_shutdown.connect
def _close_in_child(pid: int | None = None, **_: Any) -> None:
    if _ours():
        close_runtime()
        mark_process_dead(pid or os.getpid())


@signals.worker_shutdown.connect
def _close_in_main(sender: Any = None, **_: Any) -> None:
    if _ours(sender):
        close_runtime()
