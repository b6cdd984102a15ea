"""V1 ids at the edge: what a key's id and a record's id columns may hold.

V1 ids are 18-character Salesforce ids (``a0941000002wBz9AAE``) or UUIDs
(``3f0c2a8e-5b1d-4c59-9a0e-0b7d8f1e2c3a``); see ``reference/v1-records.md``.
Either form is accepted for every object type, since both are safe as NATS KV
key tokens and short enough for any header or log line. Everything else is not
a V1 id, and a record carrying one becomes a dead letter ``invalid_record``
before anything reaches V2 or the mappings:

- the key's id (everything after the first ``.``) is not a V1 id;
- ``sfid`` is missing, not a V1 id, or not the key's id (a record under key
  ``…A`` that says ``sfid: B`` would otherwise update B's V2 object);
- a reference column (``parent_project__c``, ``project_name__c``: each kind's
  ``reference_columns``) is set but is not a V1 id.

String ids are trimmed of surrounding whitespace first; a reference that is
blank after trimming counts as absent. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync_core.keys import parse_key
from sync_core.v1_values import SALESFORCE_ID_PATTERN, UUID_PATTERN
from sync_core.value_repr import short_repr
from tasks.errors import InvalidRecord

ID_SHAPES = "an 18-character Salesforce id or a UUID"
SFID_COLUMN = "sfid"


def is_v1_id(value: object) -> bool:
    """Whether ``value`` is a V1 id as it stands (no trimming)."""
    return isinstance(value, str) and bool(
        SALESFORCE_ID_PATTERN.fullmatch(value) or UUID_PATTERN.fullmatch(value)
    )


def check_key_id(key: str) -> str:
    """The id of ``key``; ``InvalidRecord`` when it is not a V1 id.

    Run before the key is used for anything else (a KV read included): a key
    published raw to the stream may hold what the KV would refuse.
    """
    _, key_id = parse_key(key)
    if not is_v1_id(key_id):
        raise InvalidRecord(f"the key's id {short_repr(key_id)} is not {ID_SHAPES}")
    return key_id


def checked_record(
    reference_columns: tuple[str, ...], key_id: str, record: Mapping[str, Any]
) -> dict[str, Any]:
    """``record`` with its id columns trimmed; ``InvalidRecord`` naming the first problem.

    ``reference_columns``: the columns naming other V1 records (the kind's).
    """
    checked = dict(record)
    sfid = _trimmed(record.get(SFID_COLUMN))
    if sfid is None:
        raise InvalidRecord(f"{SFID_COLUMN} is missing ({short_repr(record.get(SFID_COLUMN))})")
    if not is_v1_id(sfid):
        raise InvalidRecord(f"{SFID_COLUMN} {short_repr(sfid)} is not {ID_SHAPES}")
    if sfid != key_id:
        raise InvalidRecord(f"{SFID_COLUMN} {sfid!r} is not the id of its key ({key_id!r})")
    checked[SFID_COLUMN] = sfid
    for column in reference_columns:
        value = record.get(column)
        if value is None:
            continue
        reference = _trimmed(value)
        if reference is None and isinstance(value, str):
            checked[column] = None  # blank: absent
            continue
        if reference is None or not is_v1_id(reference):
            raise InvalidRecord(f"{column} {short_repr(value)} is not {ID_SHAPES}")
        checked[column] = reference
    return checked


def _trimmed(value: Any) -> str | None:
    """A string without surrounding whitespace, or None when blank or not a string."""
    if not isinstance(value, str):
        return None
    return value.strip() or None
