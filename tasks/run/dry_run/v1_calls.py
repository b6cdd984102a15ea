"""V1 for a dry run (V2 -> V1): the committee writes are recorded and answered as accepted.

The V2 -> V1 run makes only writes in V1 (``tasks.clients.v1_committees``: POST,
PATCH, DELETE of committees and members); none is sent. Each is answered as V1
accepting it: a create with ``NEW_V1_SFID`` (and a member's ``NEW_CONTACT_ID``),
so the run goes on to write its mappings as it would. Whether V1 would refuse
a body can only be known by sending it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.clients.auth0 import Auth0TokenSource
from tasks.clients.http_pool import Answer
from tasks.clients.v1_committees import ID_FIELD, MEMBER_ID_FIELD, MEMBERS, V1CommitteeWriter
from tasks.run.dry_run.write_log import RecordedWrite, WriteLog

if TYPE_CHECKING:
    from sync_core.settings import WorkerSettings

# The ids a dry create answers with (valid KV tokens: the mappings are written with them).
NEW_V1_SFID = "new-sfid-from-the-v1-answer"
NEW_CONTACT_ID = "new-contact-id-from-the-v1-answer"
V1_TARGET = "v1:committees"
HTTP_CREATED = 201
HTTP_OK = 200
HTTP_NO_CONTENT = 204


@dataclass(frozen=True)
class V1Call:
    """One V1 write the run would make: method, path below ``LFX_API_GW``, body."""

    method: str
    path: str
    body: dict[str, Any] | None


class DryRunV1Writer(V1CommitteeWriter):
    """A ``V1CommitteeWriter`` whose calls are recorded, never sent (no token is fetched).

    Only the call (``_call``) is replaced: the paths, the bodies and the reading
    of the answers (``_created``) are the real client's.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        calls: list[V1Call],
        writes: WriteLog,
        token_source: Auth0TokenSource | None = None,
    ) -> None:
        super().__init__(settings, token_source=token_source)
        self.calls = calls
        self.writes = writes

    def __repr__(self) -> str:
        return f"DryRunV1Writer(base_url={self.base_url!r})"

    def _call(
        self, object_type: str, method: str, path: str, body: dict[str, Any] | None
    ) -> Answer:
        self.calls.append(V1Call(method, path, body))
        self.writes.add(RecordedWrite(V1_TARGET, method, path, body))
        status, content = _accepted(method, path, body)
        return Answer(status, {"Content-Type": "application/json"}, content)


def _accepted(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
    """The status and body of V1 accepting a write (``tasks.clients.v1_committees``)."""
    if method == "POST" and path.rstrip("/").endswith("/" + MEMBERS):
        answer = {**(body or {}), ID_FIELD: NEW_V1_SFID, MEMBER_ID_FIELD: NEW_CONTACT_ID}
        return HTTP_OK, json.dumps(answer).encode()
    if method == "POST":
        return HTTP_CREATED, json.dumps({**(body or {}), ID_FIELD: NEW_V1_SFID}).encode()
    if method == "PATCH":
        return HTTP_OK, json.dumps(body or {}).encode()
    return HTTP_NO_CONTENT, b""
