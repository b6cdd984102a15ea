"""A fake V2 collection for a new object type: the contract every V2 service shares.

``FakeCollection`` answers ``POST /{name}``, ``GET``/``PUT``/``DELETE /{name}/{uid}``
the way the real V2 services do (``reference/v2-contract.md``): ``v=1`` required,
a Heimdall JWT for the collection's audience, path uids that are UUIDs, an
``ETag`` on GET, ``If-Match`` required on PUT and DELETE (a stale one: 409),
a 409 on create when ``unique_field`` repeats a stored object's value, 404 for
an unknown uid. The body is a JSON object that ``validate`` checks (default:
any object); the type's own rules go there.

A type's sandbox fake is one ``FakeCollection`` (a subclass where the service
has more rules), mounted with ``Sandbox.mount``: the routing, the faults and
the traffic log of ``sandbox.app`` apply to it as to the built-in fakes.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable
from typing import Any

from sandbox.api_error import ApiError
from sandbox.store import (
    LAST_WRITE_FIELD,
    REVISION_FIELD,
    Record,
    Writer,
    now_rfc3339,
    parse_if_match,
    public_view,
)

STALE_STATUS = 409


def any_object(body: object) -> Record:
    """The default body check: a JSON object, copied."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return copy.deepcopy(body)


class FakeCollection:
    """One V2 REST collection in memory (thread-safe).

    Parameters:
        name: the collection's path segment (``gadgets``).
        audience: the ``aud`` its JWTs must carry.
        unique_field: a field whose value may appear once (409 on create), or None.
        validate: checks and cleans a write body (``ApiError(400)`` when invalid).
    """

    def __init__(
        self,
        name: str,
        audience: str,
        unique_field: str | None = None,
        validate: Callable[[object], Record] = any_object,
    ) -> None:
        self.name = name
        self.audience = audience
        self.unique_field = unique_field
        self.validate = validate
        self.records: dict[str, Record] = {}
        self._revision = 0
        self._lock = threading.Lock()

    def create(self, body: object, writer: Writer) -> Record:
        """``POST /{name}``: a new object with a fresh uid (409 on a repeated unique value)."""
        clean = self.validate(body)
        with self._lock:
            if self.unique_field is not None and any(
                record.get(self.unique_field) == clean.get(self.unique_field)
                for record in self.records.values()
            ):
                raise ApiError(409, f"{self.unique_field} already exists")
            uid = str(uuid.uuid4())
            now = now_rfc3339()
            record = {"uid": uid, **clean, "created_at": now, "updated_at": now}
            self._stamp(record, writer)
            self.records[uid] = record
            return public_view(record)

    def get(self, uid: str) -> tuple[Record, int]:
        """``GET /{name}/{uid}``: the object and its revision (the ETag)."""
        with self._lock:
            record = self._get(uid)
            return public_view(record), int(record[REVISION_FIELD])

    def update(self, uid: str, body: object, if_match: str | None, writer: Writer) -> Record:
        """``PUT /{name}/{uid}``: replace the object (``If-Match`` required and current)."""
        clean = self.validate(body)
        with self._lock:
            record = self._get(uid)
            self._check_revision(record, if_match)
            replaced = {
                "uid": uid,
                **clean,
                "created_at": record["created_at"],
                "updated_at": now_rfc3339(),
            }
            self._stamp(replaced, writer)
            self.records[uid] = replaced
            return public_view(replaced)

    def delete(self, uid: str, if_match: str | None) -> None:
        """``DELETE /{name}/{uid}`` (``If-Match`` required and current)."""
        with self._lock:
            self._check_revision(self._get(uid), if_match)
            del self.records[uid]

    def _get(self, uid: str) -> Record:
        record = self.records.get(uid)
        if record is None:
            raise ApiError(404, f"{self.name} {uid} not found")
        return record

    @staticmethod
    def _check_revision(record: Record, if_match: str | None) -> None:
        revision = parse_if_match(if_match)
        if revision is None:
            raise ApiError(400, "If-Match header is required")
        if revision != record[REVISION_FIELD]:
            raise ApiError(STALE_STATUS, "revision mismatch")

    def _stamp(self, record: Record, writer: Writer) -> None:
        self._revision += 1
        record[REVISION_FIELD] = self._revision
        record[LAST_WRITE_FIELD] = writer.as_dict()

    def view(self) -> dict[str, Any]:
        """Every stored object, internal fields included (for tests and the state view)."""
        with self._lock:
            return copy.deepcopy(self.records)
