"""The V2 -> V1 half of the chaos proof: a person's V2 edits under fire, and what reached V1.

With ``SYNC_V2_TO_V1`` on, committees loaded from V1 before the chaos window
(``prelude``) are edited in V2 during it by a person (a Heimdall JWT of
``chaos-person``, through the sandbox's V2 HTTP API, which answers that
person with the same random faults as the pipeline): committee updates
(``description``), and members created, updated (``job_title``) and some
deleted. The V1 committee API fake answers 503, 429 with ``Retry-After`` and
drops answers (half of them after doing the write), from its own seed.

A person edits an object again only once the previous edit is visible in
V1, as a person would, so no event of an edit is ever superseded by the next
one: each edit must make exactly one V1 write. The checks (``ReverseFigures``):

- converged: every edited V2 object as V2 holds it now is what V1 holds,
  field by field through the reverse mapping (``sync_core.v1_bodies``;
  a deleted member has no live V1 row);
- duplicates: more than one live V1 committee per (project, name), or
  member per (committee, e-mail), anywhere in ``v1-objects``;
- V1 writes: *effective* V1 writes are the V1 API's POST, PATCH and DELETE
  requests it applied (a 2xx, also when the answer was then dropped), less a
  PATCH identical to the one applied just before on the same path (the same
  write sent again because its answer was lost, or its run was killed before
  recording it: it changes nothing). A POST is never discounted: a second
  create is a duplicate, and shows as one. Refused requests (the injected
  503, 429 and answers dropped before the work; V1's 4xx) change nothing. They
  must equal the person's V2 edits: one more would be a write for an echo of
  the forward path (ping-pong), one fewer a lost edit;
- V2 echo writes: V2 writes on the edited committees and their members by
  anyone but the person after the prelude (the forward path writing back the
  V1 rows the reverse path wrote): must be 0.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from sandbox.v1_api import COMMITTEE_COLUMNS, member_columns
from sandbox.v2_edits import COMMITTEE_READ_ONLY, MEMBER_READ_ONLY
from sync_core.v1_bodies import v1_committee_body, v1_member_body
from tasks.clients.identity import Identity
from tasks.clients.tokens import TokenMinter
from tasks.clients.v2 import V2Service
from tasks.errors import InvalidRecord, SyncError
from tasks.kinds.committees import COMMITTEE_AUDIENCE
from tasks.mapping.codec import decode_value
from tasks.stores.v2_event_log import read_event

if TYPE_CHECKING:
    from tests.chaos_harness import ChaosStack, KeyPlan

log = logging.getLogger(__name__)

PERSON = Identity(
    principal="chaos-person",
    sub="chaos-person",
    email="chaos-person@example.org",
    on_behalf_of="chaos-person",
)
OBJECTS = "v1-objects"
V2_EVENTS_STREAM = "committee_events"
V1_API = "/project-service/"
V1_WRITES = ("POST", "PATCH", "DELETE")
# What the sandbox records for an injected fault: 503, 429, or 0 (dropped before the work).
FAULT_STATUSES = frozenset({0, 429, 503})
V2_WRITES = ("POST", "PUT", "DELETE")
COMMITTEE_ROWS = "platform-collaboration__c."
MEMBER_ROWS = "platform-community__c."
COMMITTEE_UID = "committee.uid."
COMMITTEE_SFID = "committee.sfid."
MEMBER_UID = "committee_member.uid."
TOMBSTONE = "!del"
# The committees from V1 have voting on: V2 wants a member's organization.
ORGANIZATION = {"id": "0014100000Te2ovAAB", "name": "Acme"}
# How a person's own V2 call is retried through the sandbox's faults.
PERSON_TRIES = 20
PERSON_RETRY_SECONDS = 0.2
# How often an object waiting for its previous edit to reach V1 is looked at.
LANDED_POLL_SECONDS = 0.5
# After a nats-server restart, edits wait this long: the indexer's events are core
# NATS (a restart loses the ones published meanwhile, in production too).
NATS_SETTLE_SECONDS = 3.0

Row = dict[str, Any]


@dataclass(frozen=True)
class ReverseConfig:
    """The person's work: how many committees from V1, and the edits on each."""

    committees: int = 12
    committee_updates: int = 3
    members_per_committee: int = 3
    member_updates: int = 2
    member_delete_fraction: float = 0.4
    # The fraction of the chaos window in which the person edits (start, end).
    window: tuple[float, float] = (0.0, 0.9)
    settle_timeout: float = 240.0


@dataclass
class Edit:
    """One edit of a person: ``op`` (create, update, delete) and the value it sets."""

    op: str
    value: str
    due: float = 0.0


@dataclass
class PersonObject:
    """A V2 object the person edits: a committee from V1, or a member the person adds."""

    kind: str  # "committee" or "member"
    committee_uid: str
    committee_sfid: str
    edits: list[Edit]
    email: str = ""
    uid: str | None = None
    sfid: str | None = None
    made: int = 0
    checked_at: float = 0.0
    landed: bool = True

    @property
    def last(self) -> Edit | None:
        return self.edits[self.made - 1] if self.made else None

    def next_due(self, now: float) -> Edit | None:
        if self.made < len(self.edits) and self.edits[self.made].due <= now:
            return self.edits[self.made]
        return None


@dataclass
class ReverseFigures:
    """What the V2 -> V1 half measured; ``line()`` is its figure line."""

    seed: int
    edits: int = 0
    edits_by_op: dict[str, int] = field(default_factory=dict)
    objects: int = 0
    converged: int = 0
    duplicates: int = 0
    v1_applied: int = 0
    v1_repeats: int = 0
    v1_refused: int = 0
    v1_rejected: int = 0
    v1_by_method: dict[str, int] = field(default_factory=dict)
    v2_echo_writes: int = 0
    events_pending: int = 0
    settle_seconds: float = 0.0
    unconverged: list[str] = field(default_factory=list)

    @property
    def v1_effective(self) -> int:
        return self.v1_applied - self.v1_repeats

    def line(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.edits_by_op.items())) or "-"
        methods = ",".join(f"{k}:{v}" for k, v in sorted(self.v1_by_method.items())) or "-"
        return (
            f"chaos v2->v1 seed={self.seed}: {self.edits} V2 edits ({ops}) on "
            f"{self.objects} objects, converged {self.converged}/{self.objects}, "
            f"duplicates {self.duplicates}, V1 writes {self.v1_effective} effective "
            f"({methods}; {self.v1_applied} applied, {self.v1_repeats} sent again after a "
            f"lost answer or a killed run, {self.v1_refused} refused by faults, "
            f"{self.v1_rejected} refused by V1), V2 echo writes {self.v2_echo_writes}, "
            f"events pending {self.events_pending}, "
            f"settled in {self.settle_seconds:.0f}s"
        )

    @property
    def clean(self) -> bool:
        """Every edit in V1 once: converged, no duplicate, writes = edits, no echo write."""
        return (
            self.converged == self.objects
            and self.duplicates == 0
            and self.v1_effective == self.edits
            and self.v2_echo_writes == 0
            and self.events_pending == 0
        )


class PersonEdits:
    """The person's edits over the chaos window, each object's in order, paced by V1."""

    def __init__(
        self,
        stack: ChaosStack,
        config: ReverseConfig,
        rng: random.Random,
        heimdall: RSAPrivateKey,
        key_id: str,
    ) -> None:
        self.stack = stack
        self.config = config
        self.rng = rng
        assert stack.sandbox is not None
        minter = TokenMinter(
            heimdall, key_id=key_id, jwks_url=stack.sandbox.env()["HEIMDALL_JWKS_URL"]
        )
        self.committees = V2Service(
            stack.sandbox.url,
            "committees",
            COMMITTEE_AUDIENCE,
            minter,
            timeout=5.0,
            service="committee",
        )
        self.objects: list[PersonObject] = []
        self.names: set[str] = set()
        self.requests_after_prelude = 0
        self.paused_until = 0.0

    def close(self) -> None:
        self.committees.close()

    # -- before the window --------------------------------------------------------

    def prelude(self, plans: list[KeyPlan], timeout: float) -> None:
        """Load the committees (and their projects) into V1 and wait until V2 has them."""
        for plan in plans:
            self.stack.put(plan, 0)
        deadline = time.monotonic() + timeout
        committees = [p for p in plans if p.kind == "committee"]
        uids: dict[str, str] = {}
        while len(uids) < len(committees):
            assert time.monotonic() < deadline, "the person's committees did not reach V2"
            for plan in committees:
                uid = self.stack.mapping(COMMITTEE_SFID + plan.sfid)
                if uid is not None and self._committee(uid) is not None:
                    uids[plan.sfid] = uid
            time.sleep(0.2)
        assert self.stack.sandbox is not None
        self.requests_after_prelude = len(self.stack.sandbox.requests)
        for ci, plan in enumerate(committees):
            uid = uids[plan.sfid]
            self.names.add(str(plan.base["mailing_list__c"]))
            updates = [
                Edit("update", f"Person's description {n} of {plan.sfid}")
                for n in range(self.config.committee_updates)
            ]
            self.objects.append(PersonObject("committee", uid, plan.sfid, updates))
            for mi in range(self.config.members_per_committee):
                edits = [Edit("create", "Title 0")]
                edits += [
                    Edit("update", f"Title {n}") for n in range(1, self.config.member_updates + 1)
                ]
                if self.rng.random() < self.config.member_delete_fraction:
                    edits.append(Edit("delete", ""))
                email = f"person-{plan.sfid[:8]}-{ci}-{mi}@example.org"
                self.objects.append(PersonObject("member", uid, plan.sfid, edits, email=email))

    def schedule(self, start: float, end: float) -> None:
        """Spread each object's edits, in order, over ``[start, end]`` (monotonic times)."""
        for obj in self.objects:
            times = sorted(self.rng.uniform(start, end) for _ in obj.edits)
            for edit, due in zip(obj.edits, times, strict=True):
                edit.due = due

    # -- during the window ----------------------------------------------------------

    def pause(self, seconds: float) -> None:
        self.paused_until = time.monotonic() + seconds

    def step(self) -> None:
        """Make the edits that are due on objects whose previous edit reached V1."""
        now = time.monotonic()
        if now < self.paused_until:
            return
        for obj in self.objects:
            edit = obj.next_due(now)
            if edit is None or not self._ready(obj, now):
                continue
            if self._make(obj, edit):
                obj.made += 1
                obj.landed = False

    def _ready(self, obj: PersonObject, now: float) -> bool:
        if obj.landed:
            return True
        if now - obj.checked_at < LANDED_POLL_SECONDS:
            return False
        obj.checked_at = now
        obj.landed = self.landed(obj)
        return obj.landed

    def all_landed(self) -> bool:
        """Whether every object's last edit made is visible in V1 (each looked at again)."""
        for obj in self.objects:
            if not obj.landed and obj.made:
                obj.landed = self.landed(obj)
        return all(obj.landed or not obj.made for obj in self.objects)

    def landed(self, obj: PersonObject) -> bool:
        """Whether the object's last edit made is what V1 holds."""
        last = obj.last
        if last is None:
            return True
        if obj.kind == "committee":
            row = self._row(COMMITTEE_ROWS + obj.committee_sfid)
            return row is not None and row.get("description__c") == last.value
        if obj.sfid is None and obj.uid is not None:
            sfid = self.stack.mapping(MEMBER_UID + obj.uid)
            obj.sfid = sfid if sfid != TOMBSTONE else None
        if obj.sfid is None:
            return False
        if last.op == "delete":
            return self._row(MEMBER_ROWS + obj.sfid) is None
        row = self._row(MEMBER_ROWS + obj.sfid)
        return row is not None and row.get("title") == last.value

    # -- a person's V2 calls, through the faults --------------------------------------

    def _make(self, obj: PersonObject, edit: Edit) -> bool:
        """Make ``edit`` in V2; True once V2 holds it (a dropped answer is looked up)."""
        for _ in range(PERSON_TRIES):
            try:
                if obj.kind == "committee":
                    done = self._update(self.committees, obj.committee_uid, "description", edit)
                elif edit.op == "create":
                    done = self._create_member(obj, edit)
                elif edit.op == "update":
                    done = self._update(self._members(obj), str(obj.uid), "job_title", edit)
                else:
                    done = self._delete_member(obj)
                if done:
                    return True
            except SyncError as error:
                log.debug("person's V2 call failed: %s", error)
            time.sleep(PERSON_RETRY_SECONDS)
        return False

    def _update(self, service: V2Service, uid: str, name: str, edit: Edit) -> bool:
        current = service.get(uid, PERSON)
        if current.record.get(name) == edit.value:
            return True  # an earlier try's answer was lost after V2 did it
        read_only = COMMITTEE_READ_ONLY if service is self.committees else MEMBER_READ_ONLY
        body = {k: v for k, v in current.record.items() if k not in read_only}
        service.update(uid, {**body, name: edit.value}, current.etag, PERSON)
        return True

    def _create_member(self, obj: PersonObject, edit: Edit) -> bool:
        found = self._v2_member(obj)
        if found is not None:
            obj.uid = found
            return True
        created = self._members(obj).create(
            {
                "email": obj.email,
                "first_name": "Chaos",
                "last_name": "Person",
                "job_title": edit.value,
                "organization": ORGANIZATION,
            },
            PERSON,
        )
        obj.uid = str(created["uid"])
        return True

    def _delete_member(self, obj: PersonObject) -> bool:
        assert obj.uid is not None
        assert self.stack.sandbox is not None
        if obj.uid not in self.stack.sandbox.members:
            return True
        members = self._members(obj)
        members.delete(obj.uid, members.get(obj.uid, PERSON).etag, PERSON)
        return True

    def _members(self, obj: PersonObject) -> V2Service:
        return self.committees.collection_under(obj.committee_uid, "members")

    def _v2_member(self, obj: PersonObject) -> str | None:
        assert self.stack.sandbox is not None
        for uid, member in self.stack.sandbox.members.items():
            if (
                member.get("committee_uid") == obj.committee_uid
                and member.get("email") == obj.email
            ):
                return uid
        return None

    def _committee(self, uid: str) -> dict[str, Any] | None:
        assert self.stack.sandbox is not None
        return self.stack.sandbox.committees.get(uid)

    def _row(self, key: str) -> Row | None:
        """The live V1 row of ``key`` in ``v1-objects`` (None: absent or deleted)."""
        assert self.stack.sync_nats is not None
        try:
            entry = self.stack.sync_nats.kv_get(OBJECTS, key)
        except Exception:  # nats-server restarting: looked at again later
            return None
        return _live(None if entry is None else bytes(entry.value))

    # -- the figures --------------------------------------------------------------------

    def figures(self, settle_seconds: float, events_pending: int) -> ReverseFigures:
        """Measure what reached V1 (see the module docstring)."""
        assert self.stack.sandbox is not None
        figures = ReverseFigures(self.stack.config.seed, settle_seconds=settle_seconds)
        figures.events_pending = events_pending
        edited = [obj for obj in self.objects if obj.made]
        figures.objects = len(edited)
        for obj in edited:
            for edit in obj.edits[: obj.made]:
                op = f"{obj.kind} {edit.op}s"
                figures.edits_by_op[op] = figures.edits_by_op.get(op, 0) + 1
                figures.edits += 1
        rows = self._all_rows()
        v2_committees = self.stack.sandbox.committees
        v2_members = self.stack.sandbox.members
        captured: dict[str, list[str]] | None = None
        for obj in edited:
            if self._converged(obj, rows, v2_committees, v2_members):
                figures.converged += 1
                continue
            captured = self._captured_events() if captured is None else captured
            uid = str(obj.uid or obj.committee_uid)
            actions = "+".join(captured.get(uid, [])) or "no event captured"
            figures.unconverged.append(f"{obj.kind} {uid} ({actions})")
        figures.duplicates = _duplicates(rows)
        self._count_v1_writes(figures)
        figures.v2_echo_writes = self._v2_echo_writes()
        return figures

    def _converged(
        self,
        obj: PersonObject,
        rows: dict[str, Row],
        v2_committees: dict[str, dict[str, Any]],
        v2_members: dict[str, dict[str, Any]],
    ) -> bool:
        if obj.kind == "committee":
            committee = v2_committees.get(obj.committee_uid)
            row = rows.get(COMMITTEE_ROWS + obj.committee_sfid)
            if committee is None or row is None or obj.last is None:
                return False
            wanted = {COMMITTEE_COLUMNS[k]: v for k, v in v1_committee_body(committee).body.items()}
            return committee.get("description") == obj.last.value and _holds(row, wanted)
        same = [
            row
            for row in rows.values()
            if row.get("collaboration_name__c") == obj.committee_sfid
            and str(row.get("contactemail__c", "")).lower() == obj.email.lower()
        ]
        member = v2_members.get(obj.uid or "")
        if obj.last is not None and obj.last.op == "delete":
            return member is None and not same
        if member is None or len(same) != 1 or member.get("job_title") != obj.last.value:
            return False
        return _holds(same[0], member_columns(v1_member_body(member).body))

    def _captured_events(self) -> dict[str, list[str]]:
        """object_id -> the actions of its events the V2 events stream holds (a diagnosis)."""
        assert self.stack.sync_nats is not None
        nats = self.stack.sync_nats
        found: dict[str, list[str]] = {}
        info = nats.run(nats.js.stream_info(V2_EVENTS_STREAM))
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            stored = read_event(nats, V2_EVENTS_STREAM, sequence)
            if stored is None:
                continue
            try:
                event = json.loads(stored.data)
            except ValueError:
                continue
            action = f"{event.get('action')}@{sequence}"
            found.setdefault(str(event.get("object_id")), []).append(action)
        return found

    def _all_rows(self) -> dict[str, Row]:
        """Every live committee and member row of ``v1-objects``."""
        assert self.stack.sync_nats is not None
        nats = self.stack.sync_nats
        bucket = OBJECTS
        rows: dict[str, Row] = {}
        for key in nats.run(nats.kv(bucket).keys()):
            if key.startswith((COMMITTEE_ROWS, MEMBER_ROWS)):
                entry = nats.kv_get(bucket, key)
                row = _live(None if entry is None else bytes(entry.value))
                if row is not None:
                    rows[key] = row
        return rows

    def _count_v1_writes(self, figures: ReverseFigures) -> None:
        assert self.stack.sandbox is not None
        last_applied: dict[str, tuple[str, str]] = {}
        for request in self.stack.sandbox.requests:
            if not request.path.startswith(V1_API) or request.method not in V1_WRITES:
                continue
            if request.status in FAULT_STATUSES:
                figures.v1_refused += 1
                continue
            if not 200 <= request.status < 300:
                figures.v1_rejected += 1  # e.g. 404: a DELETE whose first answer was lost
                continue
            figures.v1_applied += 1
            figures.v1_by_method[request.method] = figures.v1_by_method.get(request.method, 0) + 1
            body = json.dumps(request.json_body, sort_keys=True)
            if request.method == "PATCH" and last_applied.get(request.path) == ("PATCH", body):
                figures.v1_repeats += 1
                figures.v1_by_method["PATCH"] -= 1
            last_applied[request.path] = (request.method, body)

    def _v2_echo_writes(self) -> int:
        """V2 writes on the person's committees or members by anyone else, after the prelude."""
        assert self.stack.sandbox is not None
        uids = {obj.committee_uid for obj in self.objects}
        count = 0
        for request in self.stack.sandbox.requests[self.requests_after_prelude :]:
            if request.method not in V2_WRITES or not 200 <= request.status < 300:
                continue
            if (request.claims or {}).get("principal") == PERSON.principal:
                continue
            parts = request.path.split("/")
            on_ours = len(parts) > 2 and parts[1] == "committees" and parts[2] in uids
            created_ours = (
                request.path == "/committees"
                and isinstance(request.json_body, dict)
                and request.json_body.get("name") in self.names
            )
            if on_ours or created_ours:
                count += 1
        return count


def _live(value: bytes | None) -> Row | None:
    if not value:
        return None
    try:
        row = decode_value(value)
    except InvalidRecord:
        return None
    if row.get("isdeleted") or row.get("_sdc_deleted_at"):
        return None
    return row


def _holds(row: Row, wanted: dict[str, Any]) -> bool:
    return all(row.get(column) == value for column, value in wanted.items())


def _duplicates(rows: dict[str, Row]) -> int:
    """Live V1 committees beyond one per (project, name), members per (committee, e-mail)."""
    seen: dict[tuple[str, ...], int] = {}
    for key, row in rows.items():
        if key.startswith(COMMITTEE_ROWS):
            name = " ".join(str(row.get("mailing_list__c", "")).split())
            ident = ("committee", str(row.get("project_name__c")), name)
        else:
            email = str(row.get("contactemail__c", "")).strip().lower()
            ident = ("member", str(row.get("collaboration_name__c")), email)
        seen[ident] = seen.get(ident, 0) + 1
    return sum(count - 1 for count in seen.values() if count > 1)


def settle(
    edits: PersonEdits,
    timeout: float,
    events_pending: Callable[[], int],
    reap: Callable[[], None],
) -> float:
    """Wait until every edit made is in V1 and no V2 event is pending; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        reap()
        if edits.all_landed() and events_pending() == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - started
