"""The sample data set of the local stack, as the dev command and tests use it.

``load_records()`` gives the KV puts in load order, ``encode(record)`` the
bytes to put; ``load_users()`` the V1 users for the fake user service;
``load_organizations()`` the V1 organizations for the fake organization service;
``load_expected()`` what the sync must end with, per key (see
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


@dataclass(frozen=True)
class SampleRecord:
    """One KV put: ``value`` is the record (json/msgpack), text (raw) or ``None`` (empty)."""

    key: str
    encoding: Encoding
    value: Any

    @property
    def record_id(self) -> str:
        """Everything after the first ``.`` of the key."""
        return self.key.partition(".")[2]


def encode(record: SampleRecord) -> bytes:
    """The bytes to put into ``v1-objects`` for ``record``."""
    if record.encoding == "json":
        return json.dumps(record.value, ensure_ascii=False).encode()
    if record.encoding == "msgpack":
        return bytes(msgpack.packb(record.value, use_bin_type=True))
    if record.encoding == "raw":
        return str(record.value).encode()
    if record.encoding == "empty":
        return b""
    raise ValueError(f"unknown encoding {record.encoding!r}")


def load_records(path: Path = RECORDS_PATH) -> list[SampleRecord]:
    """Every put of the sample set, in load order (a key may appear more than once)."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry.get("encoding") not in ENCODINGS:
            raise ValueError(f"{path}:{number}: unknown encoding {entry.get('encoding')!r}")
        records.append(SampleRecord(entry["key"], entry["encoding"], entry.get("value")))
    return records


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


def dead_letter_reasons(expected: dict[str, Any] | None = None) -> dict[str, str]:
    """Key -> error kind of every key that must end in the dead letters."""
    keys = (expected or load_expected())["keys"]
    return {k: v["reason"] for k, v in keys.items() if v["outcome"] == "dead_letter"}


def expected_writer(expectation: dict[str, Any], heimdall_client_id: str) -> dict[str, Any]:
    """The ``principal``/``sub``/``email``/``on_behalf_of`` of the last write of a synced key.

    The fallback identity depends on ``HEIMDALL_CLIENT_ID``; the file assumes
    ``v1_sync_helper``.
    """
    writer = dict(expectation["writer"])
    kind = writer.pop("kind")
    if kind == "fallback":
        writer["principal"] = f"{heimdall_client_id}@clients"
        writer["sub"] = heimdall_client_id
    return writer
