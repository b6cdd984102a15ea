"""The sample data set of the local stack, as the dev command and tests use it.

``load_records()`` gives the KV writes in load order (puts, and the ``DEL``
and ``PURGE`` of deletes), ``load_phases()`` the same grouped by phase (a phase
is written once the one before has settled), ``encode(record)`` the bytes to
put; ``load_users()`` the V1 users for the fake user service;
``load_organizations()`` the V1 organizations for the fake organization service;
``load_expected()`` what the sync must end with, per key, and
``crowdfunding_slugs()`` the projects V2 must hold as crowdfunded (see
``sandbox.sample_builder`` for how the set is made and what it contains).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgpack

SAMPLE_DIR = Path(__file__).parent / "sample_data"
RECORDS_PATH = SAMPLE_DIR / "records.jsonl"
USERS_PATH = SAMPLE_DIR / "users.json"
ORGANIZATIONS_PATH = SAMPLE_DIR / "organizations.json"
EXPECTED_PATH = SAMPLE_DIR / "expected.json"

Encoding = Literal["json", "msgpack", "raw", "empty"]
ENCODINGS: tuple[str, ...] = ("json", "msgpack", "raw", "empty")
PUT = "PUT"
# The KV operations of a hard delete (the marker a ``kv.delete``/``kv.purge`` writes).
DELETE_OPERATIONS: tuple[str, ...] = ("DEL", "PURGE")
FIRST_PHASE = 1


@dataclass(frozen=True)
class SampleRecord:
    """One KV write of phase ``phase``.

    A put (``operation`` ``PUT``): ``value`` is the record (json/msgpack), text
    (raw) or ``None`` (empty). A hard delete (``DEL``/``PURGE``): no encoding,
    no value.
    """

    key: str
    encoding: Encoding | None
    value: Any
    operation: str = PUT
    phase: int = FIRST_PHASE

    @property
    def is_delete(self) -> bool:
        """Whether this write is a KV ``DEL`` or ``PURGE`` rather than a put."""
        return self.operation in DELETE_OPERATIONS

    @property
    def record_id(self) -> str:
        """Everything after the first ``.`` of the key."""
        return self.key.partition(".")[2]


def encode(record: SampleRecord) -> bytes:
    """The bytes to put into ``v1-objects`` for ``record`` (a put)."""
    if record.is_delete:
        raise ValueError(f"{record.key}: a {record.operation} has no value to encode")
    if record.encoding == "json":
        return json.dumps(record.value, ensure_ascii=False).encode()
    if record.encoding == "msgpack":
        return bytes(msgpack.packb(record.value, use_bin_type=True))
    if record.encoding == "raw":
        return str(record.value).encode()
    if record.encoding == "empty":
        return b""
    raise ValueError(f"unknown encoding {record.encoding!r}")


def _record(entry: dict[str, Any], where: str) -> SampleRecord:
    operation = entry.get("operation", PUT)
    phase = entry.get("phase", FIRST_PHASE)
    if not isinstance(phase, int) or isinstance(phase, bool) or phase < FIRST_PHASE:
        raise ValueError(f"{where}: phase must be a whole number from 1, got {phase!r}")
    if operation in DELETE_OPERATIONS:
        if "encoding" in entry or "value" in entry:
            raise ValueError(f"{where}: a {operation} has neither encoding nor value")
        return SampleRecord(entry["key"], None, None, operation, phase)
    if operation != PUT:
        raise ValueError(f"{where}: unknown operation {operation!r}")
    if entry.get("encoding") not in ENCODINGS:
        raise ValueError(f"{where}: unknown encoding {entry.get('encoding')!r}")
    return SampleRecord(entry["key"], entry["encoding"], entry.get("value"), PUT, phase)


def load_records(path: Path = RECORDS_PATH) -> list[SampleRecord]:
    """Every write of the sample set, in load order (a key may appear more than once).

    Phases never go back: a record of phase N never follows one of phase N+1.
    """
    records: list[SampleRecord] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = _record(json.loads(line), f"{path}:{number}")
        if records and record.phase < records[-1].phase:
            raise ValueError(f"{path}:{number}: phase {record.phase} after {records[-1].phase}")
        records.append(record)
    return records


def load_phases(path: Path = RECORDS_PATH) -> list[list[SampleRecord]]:
    """The writes grouped by phase, in order (phase 1 first; no empty phase)."""
    phases: dict[int, list[SampleRecord]] = {}
    for record in load_records(path):
        phases.setdefault(record.phase, []).append(record)
    return [phases[number] for number in sorted(phases)]


def load_users(path: Path = USERS_PATH) -> dict[str, dict[str, Any]]:
    """V1 platform id -> ``{"ID","Username","Email","FirstName","LastName"}``."""
    users: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return users


def load_organizations(path: Path = ORGANIZATIONS_PATH) -> dict[str, dict[str, Any]]:
    """V1 account sfid -> ``{"ID","Name","Domains"}``."""
    organizations: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return organizations


def load_expected(path: Path = EXPECTED_PATH) -> dict[str, Any]:
    """The expectations: ``{"heimdall_client_id", "counts", "keys": {key: outcome}}``."""
    expected: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return expected


def crowdfunding_slugs(expected: dict[str, Any] | None = None) -> frozenset[str]:
    """Slugs of the sample projects V2 holds as crowdfunded (the ones it lets us delete).

    V1 does not send a funding model: the sandbox must be told
    (``Sandbox(crowdfunding_slugs=...)``).
    """
    return frozenset((expected or load_expected()).get("crowdfunding_slugs", []))


def dead_letter_reasons(expected: dict[str, Any] | None = None) -> dict[str, str]:
    """Key -> error kind of every key that must end in the dead letters."""
    keys = (expected or load_expected())["keys"]
    return {k: v["reason"] for k, v in keys.items() if v["outcome"] == "dead_letter"}


def expected_writer(expectation: dict[str, Any], heimdall_client_id: str) -> dict[str, Any]:
    """The ``principal``/``sub``/``email``/``on_behalf_of`` of the last write of a synced key.

    The fallback identity depends on ``HEIMDALL_CLIENT_ID``; the file assumes
    ``v1_sync_helper``.
    """
    return resolve_writer(expectation["writer"], heimdall_client_id)


def expected_deleter(expectation: dict[str, Any], heimdall_client_id: str) -> dict[str, Any]:
    """The identity V2 must have seen on the delete of a key (as ``expected_writer``)."""
    return resolve_writer(expectation["delete"]["deleter"], heimdall_client_id)


def resolve_writer(writer: dict[str, Any], heimdall_client_id: str) -> dict[str, Any]:
    """A writer of the file with the service's own identity filled in for ``fallback``."""
    resolved = dict(writer)
    kind = resolved.pop("kind")
    if kind == "fallback":
        resolved["principal"] = f"{heimdall_client_id}@clients"
        resolved["sub"] = heimdall_client_id
    return resolved


def delete_accepted(expectation: dict[str, Any]) -> bool:
    """Whether the key's V1 delete must have removed its V2 object."""
    return bool(expectation.get("delete", {}).get("accepted", False))


def stays_in_v2(expectation: dict[str, Any]) -> bool:
    """Whether the object of an expectation is in V2 at the end of the run.

    Synced objects are, and so are those whose delete V2 refused; deleted ones
    (re-put or not), the members of a deleted committee and every untyped key
    (malformed, skipped) are not.
    """
    if "type" not in expectation or "removed_with_committee" in expectation:
        return False
    return not delete_accepted(expectation)
