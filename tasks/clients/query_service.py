"""Finding a committee that V2 already has, through the V2 query service.

A committee create whose answer was lost (a timeout or reset after V2
committed, a worker killed before the mapping write) comes back as 409 on the
retry: the committee service enforces one name per project. Projects recover
through ``slug_to_uid``; committees through the query service::

    GET {QUERY_SERVICE_URL}/query/resources?v=1&type=committee
        &parent=project:{project_uid}&name={name}

(audience ``lfx-v2-query-service``). The committee kind adopts what it finds
(``tasks.kinds.committees.adopt_committee``). ``name`` matches by words, like a
typeahead, so only the resource whose ``data.name`` is exactly the name and
whose ``data.project_uid`` is the project counts. The index is eventually
consistent: a committee created a moment ago may not be listed yet, which is
a transient error (the task retries with backoff), never a dead letter at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.clients.identity import Identity
from tasks.clients.tokens import TokenMinter
from tasks.clients.v2 import V2Service

if TYPE_CHECKING:
    from sync_core.settings import WorkerSettings

QUERY_AUDIENCE = "lfx-v2-query-service"

QUERY_COLLECTION = "query/resources"
COMMITTEE_TYPE = "committee"
# Pages read at most per lookup: a typeahead on a common word can list many.
MAX_PAGES = 10


def query_service(settings: WorkerSettings, minter: TokenMinter) -> V2Service | None:
    """The query service at ``QUERY_SERVICE_URL``, or ``None`` when it is not set."""
    if not settings.query_service_url:
        return None
    return V2Service(
        settings.query_service_url,
        QUERY_COLLECTION,
        QUERY_AUDIENCE,
        minter,
        timeout=settings.http_timeout,
        service="query",
    )


def exact_committee(resources: list[Any], project_uid: str, name: str) -> str | None:
    """The uid of the resource that is exactly committee ``name`` of ``project_uid``."""
    for resource in resources:
        if not isinstance(resource, dict) or resource.get("type") != COMMITTEE_TYPE:
            continue
        data = resource.get("data")
        if not isinstance(data, dict):
            continue
        if data.get("name") == name and data.get("project_uid") == project_uid:
            uid = data.get("uid") or resource.get("id")
            if isinstance(uid, str) and uid:
                return uid
    return None


def find_committee(query: V2Service, project_uid: str, name: str, identity: Identity) -> str | None:
    """The uid of committee ``name`` in project ``project_uid``, or None when not listed (yet).

    Raises ``TransientError`` / ``PermanentError`` as the V2 client does.
    """
    params = {"type": COMMITTEE_TYPE, "parent": f"project:{project_uid}", "name": name}
    for _ in range(MAX_PAGES):
        answer = query.search(params, identity)
        resources = answer.get("resources")
        uid = exact_committee(resources if isinstance(resources, list) else [], project_uid, name)
        if uid is not None:
            return uid
        token = answer.get("page_token")
        if not isinstance(token, str) or not token:
            return None
        params = {**params, "page_token": token}
    return None
