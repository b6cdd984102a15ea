"""The V1 writes of the V2 -> V1 direction: committees and members through the API gateway.

``V1CommitteeWriter`` makes the calls of ``reverse-sync.md`` on
``{LFX_API_GW}project-service/v2/projects/{project_sfid}/committees``, each
with the Auth0 bearer the user lookups use (V1 records the change as
``{AUTH0_CLIENT_ID}@clients``):

| call | answer |
|---|---|
| create committee: ``POST …/committees`` | 201 ``{"ID": committee sfid}`` |
| update committee: ``PATCH …/committees/{sfid}`` | 200 |
| delete committee: ``DELETE …/committees/{sfid}`` | 204 |
| create member: ``POST …/committees/{sfid}/members`` | **200** ``{"ID", "MemberID"}`` |
| update member: ``PATCH …/members/{contact id}`` | 200 |
| delete member: ``DELETE …/members/{contact id}`` | 204 |

A member's URL names the person's **contact id** (``MemberID``), not the
member record's sfid. Errors are classified as the V2 client's are, so the
run decides from the type alone: connection failures, timeouts, 5xx, 408
and 429 are ``TransientError`` (with ``Retry-After``); a 401 drops the
access token and tries once more; other 4xx are ``PermanentError`` naming
V1's answer; a 404 on a DELETE means already gone (``False``). Messages and
logs carry no token: an answer echoing it is blanked.

The HTTP layer is the V2 client's (``tasks.clients.http_pool``). Every
request sent is timed in ``v1sync_v1_request_seconds{object_type,method,status}``
(``status`` is V1's HTTP code, or ``error`` when no answer came), as the V2
calls are in ``v1sync_v2_request_seconds``: the V1 error-rate alert and the
dashboard's V1 rows read it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from prometheus_client import Histogram

from tasks.clients.auth0 import Auth0Error, Auth0TokenSource, token_source_from_settings
from tasks.clients.http_pool import (
    TRANSPORT_ERRORS,
    Answer,
    ThreadPools,
    body_excerpt,
    is_timeout,
    transient_error,
)
from tasks.errors import PermanentError, SyncError, TransientError
from tasks.stores.leases import check_write_allowed

if TYPE_CHECKING:
    from sync_core.settings import WorkerSettings

log = logging.getLogger(__name__)

PROJECTS_PATH = "project-service/v2/projects"
COMMITTEES = "committees"
MEMBERS = "members"
USER_AGENT = "v1-sync-helper"
ACCEPT_ENCODING = "gzip, deflate"
ID_FIELD = "ID"
MEMBER_ID_FIELD = "MemberID"
NOT_FOUND = 404
# The kind of a failure to get the Auth0 token: no V1 call was sent.
V1_AUTH0_KIND = "v1_auth0"
# The ``object_type`` label of the calls: the V2 object types of the direction.
COMMITTEE = "committee"
MEMBER = "committee_member"
TRANSPORT_ERROR_STATUS = "error"

V1_REQUEST_SECONDS = Histogram(
    "v1sync_v1_request_seconds",
    "Latency of the V2 -> V1 direction's V1 API calls by object type, method and HTTP "
    "status ('error' on transport errors).",
    ["object_type", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


@dataclass(frozen=True)
class V1Created:
    """What V1 answered a create with: the new record's sfid (and a member's contact id)."""

    sfid: str
    contact_id: str | None
    record: dict[str, Any]


class V1CommitteeWriter:
    """Creates, updates and deletes V1 committees and members; thread-safe.

    Parameters:
        settings: the worker's settings (``LFX_API_GW``, ``HTTP_TIMEOUT``, the Auth0 client).
        token_source: Auth0 tokens; share one with the user lookups of a worker
            (one is made from ``settings`` when omitted).
        session: the HTTP session of a token source made here (closed by ``close``).
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        token_source: Auth0TokenSource | None = None,
        session: requests.Session | None = None,
    ) -> None:
        gateway = settings.lfx_api_gw
        # The audience stays as configured; only the URL needs the separator.
        self.base_url = gateway if gateway.endswith("/") else gateway + "/"
        self.timeout = settings.http_timeout
        self._session = session or requests.Session()
        self._tokens = token_source or token_source_from_settings(settings, self._session)
        self._pools = ThreadPools(self.base_url, self.timeout)

    def __repr__(self) -> str:
        return f"V1CommitteeWriter(base_url={self.base_url!r})"

    # -- committees -------------------------------------------------------------

    def create_committee(self, project_sfid: str, body: dict[str, Any]) -> V1Created:
        """``POST …/projects/{project_sfid}/committees``: the new committee's sfid."""
        answer = self._call(COMMITTEE, "POST", _committees(project_sfid), body)
        return self._created(answer, "POST", _committees(project_sfid), with_contact=False)

    def update_committee(
        self, project_sfid: str, committee_sfid: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """``PATCH …/committees/{committee_sfid}``: V1's answer (absent keys stay as they are)."""
        path = _committee(project_sfid, committee_sfid)
        return _json_or_empty(self._call(COMMITTEE, "PATCH", path, body))

    def delete_committee(self, project_sfid: str, committee_sfid: str) -> bool:
        """``DELETE …/committees/{committee_sfid}``: True, or False when V1 had no such one."""
        return self._delete(COMMITTEE, _committee(project_sfid, committee_sfid))

    # -- members ----------------------------------------------------------------

    def create_member(
        self, project_sfid: str, committee_sfid: str, body: dict[str, Any]
    ) -> V1Created:
        """``POST …/committees/{committee_sfid}/members``: the record sfid and contact id."""
        path = _committee(project_sfid, committee_sfid) + f"/{MEMBERS}"
        answer = self._call(MEMBER, "POST", path, body)
        return self._created(answer, "POST", path, with_contact=True)

    def update_member(
        self, project_sfid: str, committee_sfid: str, contact_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """``PATCH …/members/{contact_id}``: V1's answer."""
        path = _member(project_sfid, committee_sfid, contact_id)
        return _json_or_empty(self._call(MEMBER, "PATCH", path, body))

    def delete_member(self, project_sfid: str, committee_sfid: str, contact_id: str) -> bool:
        """``DELETE …/members/{contact_id}``: True, or False when V1 had no such member."""
        return self._delete(MEMBER, _member(project_sfid, committee_sfid, contact_id))

    def close(self) -> None:
        """Close every thread's connections."""
        self._pools.close()
        self._session.close()

    # -- the calls --------------------------------------------------------------

    def _delete(self, object_type: str, path: str) -> bool:
        try:
            self._call(object_type, "DELETE", path, None)
        except PermanentError as error:
            if error.status == NOT_FOUND:
                log.info("V1 delete: already gone", extra={"path": path, "status": NOT_FOUND})
                return False
            raise
        return True

    def _call(
        self, object_type: str, method: str, path: str, body: dict[str, Any] | None
    ) -> Answer:
        """Send once; on a 401 a new token and once more; raise on failure."""
        check_write_allowed()
        token = self._token()
        answer = self._send(object_type, method, path, body, token)
        if answer.status_code == 401:
            # The gateway may have revoked or rotated the token before its expiry.
            self._tokens.invalidate(token)
            answer = self._send(object_type, method, path, body, self._token())
        if answer.status_code >= 300:
            raise _classify(method, path, answer)
        return answer

    def _token(self) -> str:
        try:
            return self._tokens.access_token()
        except Auth0Error as error:
            status = error.status
            kind = V1_AUTH0_KIND
            if status is None or status >= 500 or status == 429:
                raise TransientError(str(error), kind=kind, status=status) from None
            raise PermanentError(str(error), kind=kind, status=status) from None

    def _send(
        self, object_type: str, method: str, path: str, body: dict[str, Any] | None, token: str
    ) -> Answer:
        headers = {
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            "User-Agent": USER_AGENT,
            "Authorization": f"Bearer {token}",
        }
        payload = None
        if body is not None:
            payload = json.dumps(body, allow_nan=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            answer = self._pools.request(method, self.base_url + path, payload, headers, token)
        except TRANSPORT_ERRORS as error:
            _observe(object_type, method, TRANSPORT_ERROR_STATUS, started)
            # Only the exception's type: its text can hold the full URL and headers.
            kind = "v1_timeout" if is_timeout(error) else "v1_unavailable"
            log.warning(
                "V1 call failed: %s",
                type(error).__name__,
                extra={"method": method, "path": path, "status": "error"},
            )
            raise TransientError(
                f"V1 {method} {path} failed: {type(error).__name__}", kind=kind
            ) from None
        _observe(object_type, method, str(answer.status_code), started)
        if answer.status_code >= 300:
            log.warning(
                "V1 call answered %s",
                answer.status_code,
                extra={"method": method, "path": path, "status": answer.status_code},
            )
        return answer

    def _created(self, answer: Answer, method: str, path: str, *, with_contact: bool) -> V1Created:
        record = _json_or_empty(answer)
        sfid = record.get(ID_FIELD)
        contact = record.get(MEMBER_ID_FIELD) if with_contact else None
        if not isinstance(sfid, str) or not sfid or (with_contact and not isinstance(contact, str)):
            # The object exists in V1 now but we cannot name it: a retry would
            # create a second one, so this is for a person, not for the retries.
            wanted = f"{ID_FIELD} and {MEMBER_ID_FIELD}" if with_contact else ID_FIELD
            raise PermanentError(
                f"V1 {method} {path} answered {answer.status_code} without {wanted}",
                kind="v1_bad_response",
                status=answer.status_code,
                body_excerpt=body_excerpt(answer),
            )
        return V1Created(sfid=sfid, contact_id=contact if with_contact else None, record=record)


def _observe(object_type: str, method: str, status: str, started: float) -> None:
    """Time one V1 call (``v1sync_v1_request_seconds``)."""
    V1_REQUEST_SECONDS.labels(object_type=object_type, method=method, status=status).observe(
        time.perf_counter() - started
    )


def _classify(method: str, path: str, answer: Answer) -> SyncError:
    """The error a non-success answer stands for (see the module docstring)."""
    status = answer.status_code
    message = f"V1 {method} {path} answered {status}"
    fields: dict[str, Any] = {"status": status, "body_excerpt": body_excerpt(answer)}
    transient = transient_error(answer, message, "v1", fields)
    if transient is not None:
        return transient
    kinds = {
        400: "v1_validation",
        401: "v1_unauthorized",
        403: "v1_forbidden",
        404: "v1_not_found",
        409: "v1_conflict",
        422: "v1_validation",
    }
    return PermanentError(message, kind=kinds.get(status, "v1_unexpected_status"), **fields)


def _json_or_empty(answer: Answer) -> dict[str, Any]:
    """The JSON object of a success answer; ``{}`` for an empty or non-object body."""
    if not answer.content.strip():
        return {}
    try:
        data = answer.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _committees(project_sfid: str) -> str:
    return f"{PROJECTS_PATH}/{quote(project_sfid, safe='')}/{COMMITTEES}"


def _committee(project_sfid: str, committee_sfid: str) -> str:
    return f"{_committees(project_sfid)}/{quote(committee_sfid, safe='')}"


def _member(project_sfid: str, committee_sfid: str, contact_id: str) -> str:
    return f"{_committee(project_sfid, committee_sfid)}/{MEMBERS}/{quote(contact_id, safe='')}"
