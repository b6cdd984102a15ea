"""Per-process resources of a worker, opened once and shared by the task's threads.

One ``Runtime`` per worker process: the settings, one NATS connection (which
reconnects on its own), one Redis client, the token minter, the V2 service of
every registered object kind (``tasks.kinds.registry``) and the query service,
the user and organization directories (one Auth0 token source for both), the
mapping store, and the sync state and dead-letter stores (both in JetStream).

A plain container: importing it reads no settings and touches no Celery.
When a worker process opens its runtime, and how tests install theirs
(``set_runtime``), is ``tasks.worker.process``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import redis

from sync_core.nats_client import SyncNats
from sync_core.redis_connection import RedisTarget
from sync_core.redis_connection import redis_client as connect_redis
from sync_core.settings import WorkerSettings
from tasks.clients.auth0 import token_source_from_settings
from tasks.clients.identity import Identity
from tasks.clients.organizations import OrganizationDirectory, organization_directory_from_settings
from tasks.clients.query_service import query_service
from tasks.clients.tokens import TokenMinter, minter_from_settings
from tasks.clients.users import UserDirectory, user_directory_from_settings
from tasks.clients.v1_committees import V1CommitteeWriter
from tasks.clients.v2 import V2Service
from tasks.errors import TransientError
from tasks.kinds.committees import COMMITTEE_SERVICE
from tasks.kinds.projects import PROJECT_SERVICE
from tasks.kinds.registry import service_specs
from tasks.stores.dead_letters import DeadLetterStore
from tasks.stores.id_mappings import MappingStore
from tasks.stores.objects_epoch import ObjectsEpoch
from tasks.stores.sync_state import StateStore

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
    # The V2 service of each registered kind by ``V2ServiceSpec.name`` (None: not configured).
    services: dict[str, V2Service | None]
    query: V2Service | None
    users: UserDirectory
    organizations: OrganizationDirectory
    mappings: MappingStore
    dead_letters: DeadLetterStore
    state: StateStore
    # Enqueues a task (``Celery.send_task``): how a run releases its parked children.
    # None (a dry run, a bare runtime): the reconciler releases them instead.
    send_task: Callable[..., Any] | None = field(default=None, repr=False)
    _objects_epoch: ObjectsEpoch | None = field(default=None, repr=False)
    _root_uid: str | None = field(default=None, repr=False)
    _root_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # The V1 write client of the V2 -> V1 direction, made on its first use.
    _v1_writer: V1CommitteeWriter | None = field(default=None, repr=False)

    @classmethod
    def from_settings(
        cls, settings: WorkerSettings, send_task: Callable[..., Any] | None = None
    ) -> Runtime:
        """Open every connection for ``settings`` (NATS first: it fails fastest)."""
        nats_client = SyncNats(settings.nats_target, f"{NATS_CLIENT_NAME}-{os.getpid()}")
        try:
            redis_client = redis_client_for(settings.redis_target)
            minter = minter_from_settings(settings)
            auth0 = token_source_from_settings(settings)
            return cls(
                settings=settings,
                nats=nats_client,
                redis=redis_client,
                minter=minter,
                services=open_services(settings, minter),
                query=query_service(settings, minter),
                users=user_directory_from_settings(settings, nats_client, auth0),
                organizations=organization_directory_from_settings(settings, nats_client, auth0),
                mappings=MappingStore(nats_client, settings.v1_mappings_bucket),
                dead_letters=DeadLetterStore(nats_client, settings.sync_state_bucket),
                state=StateStore(nats_client, settings.sync_state_bucket),
                send_task=send_task,
            )
        except BaseException:
            nats_client.close()
            raise

    @property
    def projects(self) -> V2Service:
        """The Project Service (always configured)."""
        service = self.services.get(PROJECT_SERVICE.name)
        assert service is not None, "PROJECT_SERVICE_URL is required"
        return service

    @property
    def committees(self) -> V2Service | None:
        """The Committee Service, or None without ``COMMITTEE_SERVICE_URL``."""
        return self.services.get(COMMITTEE_SERVICE.name)

    @committees.setter
    def committees(self, service: V2Service | None) -> None:
        self.services[COMMITTEE_SERVICE.name] = service

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

    def v1_value(self, key: str) -> bytes | None:
        """The current value of ``key`` in ``v1-objects`` (None: absent or deleted)."""
        entry = self.nats.kv_get(self.settings.v1_objects_bucket, key)
        return None if entry is None or not entry.value else bytes(entry.value)

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

    @property
    def v1_committees(self) -> V1CommitteeWriter:
        """The V1 committee write client (``SYNC_V2_TO_V1``), made once per process."""
        with self._root_lock:
            if self._v1_writer is None:
                self._v1_writer = V1CommitteeWriter(self.settings)
            return self._v1_writer

    def close(self) -> None:
        """Close every connection (errors are logged, not raised)."""
        closers: list[Any] = [self.users.close, self.organizations.close, self.redis.close]
        if self._v1_writer is not None:
            closers.append(self._v1_writer.close)
        closers.extend(service.close for service in self.services.values() if service is not None)
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


def open_services(settings: WorkerSettings, minter: TokenMinter) -> dict[str, V2Service | None]:
    """The V2 service of every registered kind, by name (None where not configured)."""
    return {spec.name: spec.open(settings, minter) for spec in service_specs()}
