"""``ObjectKind``: one V2 object type, owning every fact the service has about it.

A kind is the one place a type is described; the registry (``tasks.kinds.registry``)
builds every per-type table from the registered kinds:

- its keys (``keys``: prefix, name, sync rank; a ``sync_core.keys.KeySpec`` because
  the bridge needs them too) and the columns naming other V1 records (``reference_columns``,
  checked as V1 ids at the edge);
- its V2 service (``v2``: collection, audience, settings, skip reason when not configured);
- its mappings: the forward and reverse prefixes, what a delete tombstones, what
  ``requeue --undelete`` clears (``undelete_key``), whether children park on it;
- how a record becomes a V2 body (``desired``, through the type's pure mapping
  module in ``tasks.mapping``), where the object is (``service``, ``locate``),
  how a 409 on create is resolved (``adopt_existing``), and where it moved
  (``moved_from``), which the shared path of ``tasks.run.upsert`` calls.

Importing a kind reads no settings and opens nothing. A kind sees the worker's
runtime and the run's report through the two protocols below (``KindRuntime``,
``KindReport``): ``tasks.run`` provides them, and no kind imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sync_core.keys import KeySpec
from tasks.clients.identity import Identity
from tasks.clients.organizations import OrganizationDirectory
from tasks.clients.users import UserDirectory
from tasks.clients.v2 import V2Service, V2ServiceSpec
from tasks.errors import SlugConflict
from tasks.stores.id_mappings import MappingStore

if TYPE_CHECKING:
    from sync_core.settings import WorkerSettings

log = logging.getLogger(__name__)


class KindRuntime(Protocol):
    """What a kind uses of a worker's resources (``tasks.run.runtime.Runtime`` is one)."""

    @property
    def settings(self) -> WorkerSettings: ...

    @property
    def mappings(self) -> MappingStore: ...

    @property
    def services(self) -> dict[str, V2Service | None]: ...

    @property
    def query(self) -> V2Service | None: ...

    @property
    def users(self) -> UserDirectory: ...

    @property
    def organizations(self) -> OrganizationDirectory: ...

    def slug_to_uid(self, slug: str) -> str | None:
        """The V2 uid of the project ``slug`` (the project service's NATS responder)."""
        ...

    def list_members(self, committee_uid: str) -> list[dict[str, Any]]:
        """The members of a committee (the committee service's NATS responder)."""
        ...

    def root_uid(self) -> str:
        """The uid of the ROOT project."""
        ...

    def v1_value(self, key: str) -> bytes | None:
        """The current value of ``key`` in ``v1-objects`` (None: absent or deleted)."""
        ...


class KindReport(Protocol):
    """What a kind notes on a run's report (``tasks.run.report.KindReport`` is one)."""

    sfid: str | None
    slug: str | None
    project_uid: str | None
    committee_uid: str | None
    member_uid: str | None
    object_uid: str | None
    warnings: tuple[str, ...]

    def context(self) -> dict[str, Any]:
        """The standard log fields known so far."""
        ...


@dataclass(frozen=True)
class Desired:
    """What one V1 record wants in V2.

    Parameters:
        sfid: the V1 record id.
        body: the complete V2 write body (parent uids resolved).
        parent_uid: the V2 uid of the object's parent where the collection lives
            under it (committee members), else None.
        slug: the project slug, for mappings and logs.
        settings: the V1-owned fields of the object's settings resource
            (``tasks.run.settings_resource``), None when the record carries none.
    """

    sfid: str
    body: dict[str, Any]
    parent_uid: str | None = None
    slug: str | None = None
    settings: dict[str, Any] | None = None


@dataclass(frozen=True)
class Place:
    """Where a synced object is in V2: its uid and the collection holding it.

    ``context``: log fields naming the place (a member's ``from_committee_uid``).
    """

    uid: str
    service: V2Service
    context: Mapping[str, str] = field(default_factory=dict)


class ObjectKind:
    """One V2 object type (subclass per type, one instance registered).

    ``read_only``: the V2 fields a write body never carries (kept from the current
    record). ``uid_field``: the run's log field of the object's uid
    (``project_uid``…), or None for a type without one of its own.
    """

    keys: KeySpec
    v2: V2ServiceSpec
    read_only: frozenset[str] = frozenset()
    reference_columns: tuple[str, ...] = ()
    # The ``v1-mappings`` prefixes of the forward (sfid -> uid) and reverse (uid -> sfid)
    # mappings: the keys a delete tombstones.
    sfid_prefix: str = ""
    uid_prefix: str = ""
    # Whether other records park on this type's forward mapping (a project's
    # children, a committee's members); False: a run never looks for parked children.
    has_children: bool = True
    uid_field: str | None = None

    @property
    def name(self) -> str:
        """The ``object_type`` of logs and metrics."""
        return str(self.keys.object_type)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- the V2 service -----------------------------------------------------------

    def available(self, runtime: KindRuntime) -> bool:
        """Whether the worker has this type's V2 service (else its keys are skipped)."""
        return runtime.services.get(self.v2.name) is not None

    def top_service(self, runtime: KindRuntime) -> V2Service:
        """The type's V2 service as the runtime opened it (the run checked ``available``)."""
        service = runtime.services.get(self.v2.name)
        assert service is not None, f"{self.v2.name} service not configured"
        return service

    def service(self, runtime: KindRuntime, desired: Desired) -> V2Service:
        """The V2 collection that holds the object (default: the service's own)."""
        return self.top_service(runtime)

    # -- the mappings -------------------------------------------------------------

    def forward_key(self, sfid: str) -> str:
        """The forward mapping of ``sfid``: the key children park on and deletes tombstone."""
        return self.sfid_prefix + sfid

    def undelete_key(self, sfid: str) -> str:
        """The mapping whose tombstone ``requeue --undelete`` removes (the forward one)."""
        return self.forward_key(sfid)

    def tombstone_keys(self, sfid: str, uid: str) -> list[str]:
        """The mapping keys that become ``!del`` once the object is deleted."""
        return [self.forward_key(sfid), self.uid_prefix + uid]

    def locate(self, runtime: KindRuntime, sfid: str) -> Place | None:
        """Where the object mapped to ``sfid`` is; None when unmapped.

        The forward mapping holds the uid itself; a kind whose mapping holds
        more (a member's ``{committee_uid}:{member_uid}``) overrides this.
        """
        uid = runtime.mappings.get(self.forward_key(sfid))
        return None if uid is None else Place(uid, self.top_service(runtime))

    def mapped_uid(self, runtime: KindRuntime, desired: Desired) -> str | None:
        """The V2 uid the mappings hold for the record, or None when never synced.

        Default: the forward mapping (a kind whose objects may move overrides it).
        """
        return runtime.mappings.get(self.forward_key(desired.sfid))

    def record_mappings(self, runtime: KindRuntime, desired: Desired, uid: str) -> None:
        """Write the forward and reverse mappings of ``uid`` (default: those two only)."""
        runtime.mappings.put_many(
            {self.forward_key(desired.sfid): uid, self.uid_prefix + uid: desired.sfid}
        )

    def sfid_of(self, runtime: KindRuntime, uid: str) -> str | None:
        """The V1 record the reverse mapping gives for ``uid`` (an adoption's owner check)."""
        return runtime.mappings.get(self.uid_prefix + uid)

    # -- the record ---------------------------------------------------------------

    def desired(
        self, runtime: KindRuntime, record: dict[str, Any], identity: Identity, report: KindReport
    ) -> Desired:
        """Map ``record`` to its V2 body; raises ``InvalidRecord`` or ``MissingMapping``."""
        raise NotImplementedError

    def moved_from(self, runtime: KindRuntime, desired: Desired) -> Place | None:
        """Before the upsert: where the object was when its parent changed, else None.

        The shared path deletes it there (a member moving between committees is
        deleted and created again); the default type never moves.
        """
        return None

    def adopt_existing(
        self,
        runtime: KindRuntime,
        desired: Desired,
        identity: Identity,
        report: KindReport,
        conflict: SlugConflict,
    ) -> str:
        """After a 409 (``conflict``) on create: the uid of the V2 object already there.

        Raises a ``SyncError`` when it cannot be found (transient while an index
        catches up, permanent when it belongs to another V1 record). Default:
        the 409 passes through (a permanent error).
        """
        raise conflict

    def note_uid(self, report: KindReport, uid: str) -> None:
        """Put ``uid`` into the run's report (and its log field, ``uid_field``)."""
        report.object_uid = uid
        if self.uid_field is not None:
            setattr(report, self.uid_field, uid)

    def check_update(
        self,
        runtime: KindRuntime,
        uid: str,
        current: dict[str, Any],
        merged: dict[str, Any],
        identity: Identity,
    ) -> None:
        """Raise a ``SyncError`` when ``merged`` must not replace ``current`` (a parent cycle).

        Called before every PUT; the default accepts everything.
        """


def log_mapping_warnings(warnings: tuple[str, ...], report: KindReport) -> None:
    """One WARNING per value the mapping dropped or changed (kept on the report too)."""
    report.warnings = ()
    log_more_warnings(warnings, report)


def log_more_warnings(warnings: tuple[str, ...], report: KindReport) -> None:
    """Like ``log_mapping_warnings`` for warnings found after it (lookups, resolutions)."""
    report.warnings = (*report.warnings, *warnings)
    for warning in warnings:
        log.warning("V1 value dropped or changed", extra=report.context() | {"detail": warning})
