"""V2 for a dry run: GETs are sent, POST/PUT/DELETE are recorded and answered as accepted.

Whether V2 would refuse a write can only be known by sending it; a create
answers with ``NEW_UID``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3

from tasks.clients.identity import Identity
from tasks.clients.v2 import Answer, V2Service
from tasks.run.dry_run.write_log import RecordedWrite, WriteLog

# The uid a dry create answers with (a valid KV token: the mappings are written with it).
NEW_UID = "new-uid-from-the-create-answer"
DRY_ETAG = '"dry-run"'
HTTP_CREATED = 201
HTTP_OK = 200
HTTP_NO_CONTENT = 204


@dataclass(frozen=True)
class V2Call:
    """One V2 call of the run: sent (GET) or recorded (a write), with its identity."""

    method: str
    service: str
    path: str
    status: int
    body: dict[str, Any] | None
    identity: Identity


class DryRunV2Service(V2Service):
    """A V2 collection that sends GETs and answers writes as V2 accepting them.

    Only the transport of one request (``_send``) is replaced: the token, the
    lease check before a write, and the reading of every answer are the real
    client's. Views below an object (``collection_under``) share ``calls``.
    """

    calls: list[V2Call]
    writes: WriteLog

    @classmethod
    def standing_in_for(
        cls, real: V2Service, calls: list[V2Call], writes: WriteLog
    ) -> DryRunV2Service:
        """The dry twin of ``real`` (same URL, collection, audience, minter, timeout)."""
        dry = cls(
            real.base_url,
            real.collection,
            real.audience,
            real.minter,
            timeout=real.timeout,
            service=real.service,
            create_headers=real.create_headers,
        )
        dry.calls, dry.writes = calls, writes
        return dry

    def _send(
        self,
        method: str,
        path: str,
        identity: Identity,
        json_body: dict[str, Any] | None,
        if_match: str | None,
        extra_headers: Mapping[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        if method == "GET":
            answer = super()._send(
                method, path, identity, json_body, if_match, extra_headers, params
            )
            body = None
            if answer.status_code < 300 and params is None:
                try:
                    body = answer.json()
                except ValueError:
                    body = None
            self.calls.append(
                V2Call(method, self.service, path, answer.status_code, body, identity)
            )
            return answer
        status, content = _accepted(method, json_body)
        self.calls.append(V2Call(method, self.service, path, status, json_body, identity))
        self.writes.add(RecordedWrite(f"v2:{self.service}", method, path, json_body))
        headers = urllib3.HTTPHeaderDict({"ETag": DRY_ETAG, "Content-Type": "application/json"})
        return Answer(status, headers, content)


def _accepted(method: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
    """The status and body of V2 accepting a write."""
    if method == "POST":
        return HTTP_CREATED, json.dumps({**(body or {}), "uid": NEW_UID}).encode()
    if method == "PUT":
        return HTTP_OK, json.dumps(body or {}).encode()
    return HTTP_NO_CONTENT, b""
