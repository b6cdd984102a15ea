"""The durable sync state of every V1 key, in the JetStream KV bucket ``v1-sync-state``.

The workers write it, the bridge's reconciler and the ``status`` command read
it; Redis keeps only caches. One bucket (history 1) holds several kinds of
entries, told apart by the first token of the KV key, so each can be watched
on its own with a server-side filter:

- ``{v1 key}`` (a key of ``v1-objects``): a ``SyncState``. The last revision
  that reached a terminal outcome (created, updated, unchanged, skipped,
  deleted, dead_lettered), the epoch of ``v1-objects`` it belongs to
  (``sync_core.epochs``: revisions restart at 1 when the bucket is rebuilt),
  the outcome, when, and the V2 uid; a ``PendingRun``
  when the key's latest run is not finished (parked on a parent, or a retry
  scheduled for a due time); the ``KeyLease`` of the run working on it.
- ``deadletter.{v1 key}``: the key's dead letter (``tasks.stores.dead_letters``).
- ``parked.{parent mapping key}.{v1 key}``: an index entry saying the child
  waits for that mapping, so the run that writes it finds its children.
- ``reconciler.lease`` / ``reconciler.sweep``: the reconciler's lease and the
  summary of its last sweep.

Values are compact JSON. Every write that depends on what was read is a
compare-and-set on the KV revision (``modify``), so two writers never lose
each other's update.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from sync_core.keys import is_valid_kv_key

DEFAULT_STATE_BUCKET = "v1-sync-state"

DEAD_LETTER_PREFIX = "deadletter."
# Under ``deadletter.``: letters of keys KV cannot hold, stored by digest.
UNSTORABLE_KEY_TOKEN = "unstorable"  # noqa: S105 (a key token, not a secret)
PARKED_PREFIX = "parked."
RECONCILER_LEASE_KEY = "reconciler.lease"
RECONCILER_SWEEP_KEY = "reconciler.sweep"

# A compare-and-set loses only to another writer of the same key: a few tries suffice.
CAS_ATTEMPTS = 20


class Terminal(enum.StrEnum):
    """Outcomes that finish a revision: nothing more will happen to it by itself."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    DELETED = "deleted"
    DEAD_LETTERED = "dead_lettered"
    # A delete V2 refused: a dead letter of its own kind (mappings kept).
    DELETE_REFUSED = "delete_refused"


TERMINAL_OUTCOMES = frozenset(item.value for item in Terminal)


class RunState(enum.StrEnum):
    """What an unfinished run of a key is waiting for."""

    PARKED = "parked"
    RETRY = "retry"


@dataclass(frozen=True)
class KeyLease:
    """The run that works on a key holds it until ``expires`` (Unix seconds) unless renewed."""

    token: str
    expires: float

    def live(self, now: float) -> bool:
        """Whether the lease still holds at ``now``."""
        return self.expires > now


@dataclass(frozen=True)
class PendingRun:
    """An unfinished run: parked on ``parent_key`` since ``since``, or retrying at ``due``.

    ``attempt``: the retry budget spent on ``revision`` so far, i.e. the
    ``attempt`` of its next run (0 first). Any run of the revision resumes
    from it, so a retry lost with its task (and re-driven by the reconciler, a
    replay or a parent's release) goes on counting instead of starting over.
    """

    state: RunState
    revision: int
    since: float
    due: float | None = None
    parent_key: str | None = None
    attempt: int = 0


@dataclass(frozen=True)
class MemberMove:
    """V2 -> V1 only: a member moving to another committee, not finished yet.

    Recorded before the create in the new committee, so a run that dies
    anywhere before the old V1 row is deleted finishes the move
    (``tasks.run.reverse_move``). ``sfid``: the member's V1 row in the old
    committee; its ``committee_sfid``, ``project_sfid`` and ``contact_id`` name
    it in V1's URL (any None: V1 cannot be asked, nothing is deleted there).
    ``to_*``: the committee it moves to.
    """

    sfid: str
    to_committee_uid: str
    to_committee_sfid: str
    to_project_sfid: str
    committee_sfid: str | None = None
    project_sfid: str | None = None
    contact_id: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> MemberMove:
        """The stored form back; ``TypeError``/``KeyError`` when it is not one."""
        if not isinstance(data, dict):
            raise TypeError("a member move is a JSON object")
        return cls(
            sfid=str(data["sfid"]),
            to_committee_uid=str(data["to_committee_uid"]),
            to_committee_sfid=str(data["to_committee_sfid"]),
            to_project_sfid=str(data["to_project_sfid"]),
            committee_sfid=_optional_text(data.get("committee_sfid")),
            project_sfid=_optional_text(data.get("project_sfid")),
            contact_id=_optional_text(data.get("contact_id")),
        )


@dataclass(frozen=True)
class SyncState:
    """Everything durable about one V1 key's sync."""

    key: str
    revision: int = -1
    outcome: str | None = None
    at: float | None = None
    uid: str | None = None
    pending: PendingRun | None = None
    lease: KeyLease | None = None
    # The life of ``v1-objects`` that ``revision`` and ``pending`` belong to
    # (``sync_core.epochs``); None: written before epochs, a life unknown.
    epoch: int | None = None
    # The V1-relevant fingerprint (``sync_core.v1_bodies``) of the content V1
    # and V2 last agreed on for this object, written by whichever direction wrote
    # it last: a V2 event carrying it is an echo (V2 -> V1, issue 24).
    fingerprint: str | None = None
    # V2 -> V1 only: a V1 create sent for stream sequence ``intent`` whose answer
    # is not recorded yet (a retry looks the object up in V1 before creating it),
    # and when the intent was recorded (how long the retry has waited for the row).
    intent: int | None = None
    intent_at: float | None = None
    # V2 -> V1 only: the V1 contact id of a member (its URL names it).
    contact_id: str | None = None
    # V2 -> V1 only: a move of a member to another committee not finished yet.
    moving_from: MemberMove | None = None

    def in_life(self, epoch: int) -> SyncState:
        """The state as seen from life ``epoch`` of ``v1-objects``.

        Revisions of another life (or of an unknown one) say nothing about this
        one: they read as a key never synced (no revision, outcome or pending
        run). The lease (a run at work now) and the V2 uid (the object V2 has)
        are facts of no life and stay.
        """
        if self.epoch == epoch:
            return self
        return replace(self, revision=-1, outcome=None, at=None, pending=None, epoch=epoch)

    def synced(self, revision: int) -> bool:
        """Whether ``revision`` reached V2 already (a dead letter did not)."""
        return self.revision >= revision and self.outcome != Terminal.DEAD_LETTERED

    def settled(self, revision: int) -> bool:
        """Whether ``revision`` reached a terminal outcome (dead letters included)."""
        return self.revision >= revision

    def lease_live(self, now: float) -> bool:
        """Whether a run holds the key at ``now``."""
        return self.lease is not None and self.lease.live(now)

    def finished(
        self, revision: int, outcome: str, at: float, uid: str | None, *, epoch: int
    ) -> SyncState:
        """The state after ``revision`` of life ``epoch`` ended in terminal ``outcome``.

        Never goes back within a life; a revision of another life replaces
        what is recorded (``in_life``).
        """
        if self.epoch != epoch:
            # The uid stays unless this outcome brings one: the V2 object is the same.
            return replace(
                self.in_life(epoch), revision=revision, outcome=outcome, at=at, uid=uid or self.uid
            )
        pending = self.pending
        if pending is not None and pending.revision <= revision:
            pending = None
        if revision < self.revision or (
            revision == self.revision and outcome == Terminal.UNCHANGED and self.synced(revision)
        ):
            # Older news, or a duplicate of what is recorded: keep the first outcome.
            return replace(self, pending=pending)
        return replace(
            self,
            revision=revision,
            outcome=outcome,
            at=at,
            uid=uid or (self.uid if revision >= self.revision else None),
            pending=pending,
        )

    def to_bytes(self) -> bytes:
        """The stored form: compact JSON, empty fields left out."""
        data: dict[str, Any] = {"key": self.key, "revision": self.revision}
        for name in (
            "outcome",
            "at",
            "uid",
            "epoch",
            "fingerprint",
            "intent",
            "intent_at",
            "contact_id",
        ):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.pending is not None:
            pending = {k: v for k, v in asdict(self.pending).items() if v is not None}
            if not self.pending.attempt:
                del pending["attempt"]  # states written before the count read the same
            data["pending"] = pending
        if self.lease is not None:
            data["lease"] = asdict(self.lease)
        if self.moving_from is not None:
            data["moving_from"] = {
                k: v for k, v in asdict(self.moving_from).items() if v is not None
            }
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, key: str) -> SyncState:
        """Parse the stored form; raises ``ValueError`` when it is not one."""
        try:
            data = json.loads(raw)
            pending = data.get("pending")
            lease = data.get("lease")
            return cls(
                key=key,
                revision=int(data.get("revision", -1)),
                outcome=data.get("outcome"),
                at=None if data.get("at") is None else float(data["at"]),
                uid=data.get("uid"),
                epoch=None if data.get("epoch") is None else int(data["epoch"]),
                fingerprint=data.get("fingerprint"),
                intent=None if data.get("intent") is None else int(data["intent"]),
                intent_at=None if data.get("intent_at") is None else float(data["intent_at"]),
                contact_id=data.get("contact_id"),
                moving_from=None
                if not data.get("moving_from")
                else MemberMove.from_dict(data["moving_from"]),
                pending=None
                if not pending
                else PendingRun(
                    state=RunState(pending["state"]),
                    revision=int(pending["revision"]),
                    since=float(pending["since"]),
                    due=None if pending.get("due") is None else float(pending["due"]),
                    parent_key=pending.get("parent_key"),
                    attempt=int(pending.get("attempt", 0)),
                ),
                lease=None
                if not lease
                else KeyLease(token=str(lease["token"]), expires=float(lease["expires"])),
            )
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a sync state: {type(error).__name__}: {error}") from None


@dataclass(frozen=True)
class ParkedChild:
    """An index entry: ``key`` at ``revision`` waits since ``since`` for a parent's mapping."""

    key: str
    revision: int
    since: float
    # The life of ``v1-objects`` ``revision`` belongs to (None: unknown).
    epoch: int | None = None

    def to_bytes(self) -> bytes:
        """The stored form."""
        data = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ParkedChild:
        """Parse the stored form; ``ValueError`` when it is not one."""
        try:
            data = json.loads(raw)
            epoch = None if data.get("epoch") is None else int(data["epoch"])
            return cls(str(data["key"]), int(data["revision"]), float(data["since"]), epoch)
        except (TypeError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"not a parked child: {error}") from None


def parked_key(parent_key: str, child_key: str) -> str:
    """The index entry saying ``child_key`` waits for mapping ``parent_key``."""
    return f"{PARKED_PREFIX}{parent_key}.{child_key}"


def parked_filter(parent_key: str) -> str:
    """The watch filter of every child waiting for ``parent_key``."""
    return f"{PARKED_PREFIX}{parent_key}.>"


def dead_letter_key(key: str) -> str:
    """Where the dead letter of V1 key ``key`` is stored.

    A key KV cannot hold (one published raw to the stream, outside the key
    alphabet or too long) is stored under a digest of it; the letter itself
    keeps the key.
    """
    stored = DEAD_LETTER_PREFIX + key
    if is_valid_kv_key(stored):
        return stored
    return f"{DEAD_LETTER_PREFIX}{UNSTORABLE_KEY_TOKEN}.{hashlib.sha256(key.encode()).hexdigest()}"


def decode_state(raw: bytes | None, key: str) -> SyncState:
    """The state stored as ``raw`` (an empty or unreadable value reads as a fresh key)."""
    if not raw:
        return SyncState(key)
    try:
        return SyncState.from_bytes(raw, key)
    except ValueError:
        return SyncState(key)


async def read_state(kv: KeyValue, key: str) -> tuple[SyncState, int]:
    """The key's state and its KV revision (0 when the key has none yet)."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError as missing:
        # A deleted state entry: a CAS write must name the delete marker's revision.
        revision = int(missing.entry.revision or 0) if missing.entry is not None else 0
        return SyncState(key), revision
    return decode_state(entry.value, key), int(entry.revision or 0)


class ConcurrentUpdate(RuntimeError):
    """The compare-and-set kept losing to other writers."""


async def modify(
    kv: KeyValue,
    key: str,
    change: Callable[[SyncState], SyncState | None],
    attempts: int = CAS_ATTEMPTS,
) -> SyncState:
    """Apply ``change`` to the key's state with compare-and-set; the state written.

    ``change`` may be called several times (once per lost race) and must be
    pure; returning None leaves the stored state as it is (returned as read).
    """
    for _ in range(attempts):
        state, revision = await read_state(kv, key)
        updated = change(state)
        if updated is None or updated == state:
            return state
        try:
            if revision == 0:
                await kv.create(key, updated.to_bytes())
            else:
                await kv.update(key, updated.to_bytes(), last=revision)
        except KeyWrongLastSequenceError:
            continue
        return updated
    raise ConcurrentUpdate(f"sync state of {key!r} changed under {attempts} writes in a row")


@dataclass(frozen=True)
class SweepSummary:
    """What the reconciler's last sweep found (stored under ``reconciler.sweep``)."""

    at: float
    duration: float
    keys: int
    behind: int
    reenqueued: int
    deferred: int
    holder: str
    # The epoch of ``v1-objects`` the sweep compared against, and how many
    # state entries it found of another (or an unknown) life.
    epoch: int | None = None
    other_life: int = 0
    # Of those, the entries of keys the bucket holds now (being synced again);
    # the rest are of keys absent from this life (harmless, left as they are).
    other_life_in_bucket: int = 0
    # What ``v1-mappings`` looked like (``sync_core.epochs.BucketLife``), so the
    # next sweep, in this bridge or another, tells whether it was emptied since.
    mappings_epoch: int | None = None
    mappings_messages: int | None = None
    # Keys settled in the state whose forward mapping was missing (re-driven).
    unmapped: int = 0
    # V2 -> V1: every event of the V2 events stream up to this sequence has left its
    # trace in the state (settled, or a pending run); the next sweep reads on from it.
    v2_events_checked: int = 0

    def to_bytes(self) -> bytes:
        """The stored form."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SweepSummary:
        """Parse the stored form; ``ValueError`` when it is not one."""
        try:
            data = json.loads(raw)
            return cls(
                at=float(data["at"]),
                duration=float(data["duration"]),
                keys=int(data["keys"]),
                behind=int(data["behind"]),
                reenqueued=int(data["reenqueued"]),
                deferred=int(data.get("deferred", 0)),
                holder=str(data["holder"]),
                epoch=_optional_int(data.get("epoch")),
                other_life=int(data.get("other_life", 0)),
                other_life_in_bucket=int(data.get("other_life_in_bucket", 0)),
                mappings_epoch=_optional_int(data.get("mappings_epoch")),
                mappings_messages=_optional_int(data.get("mappings_messages")),
                unmapped=int(data.get("unmapped", 0)),
                v2_events_checked=int(data.get("v2_events_checked", 0)),
            )
        except (TypeError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"not a sweep summary: {error}") from None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)
