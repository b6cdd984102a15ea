"""The settings of a project or committee: a second V2 resource beside the base.

``/projects/{uid}/settings`` and ``/committees/{uid}/settings`` have their own
ETag and are replaced whole by every PUT. After the base, ``sync_settings``
GETs them, lays the V1-owned values over them (``tasks.mapping.settings_merge``)
and PUTs with ``If-Match`` only when something V1 owns changed; a stale ETag
refetches, up to ``STALE_SETTINGS_ATTEMPTS`` times in one run, then the task
retries like any ``StaleRevision``. It runs inside the base's run: same lease,
same retries, same durable state.

Only records that carry a settings column get here (``Desired.settings`` is
None otherwise), so the resource costs nothing to records without one. A create
sends the settings inside the base's POST (``create_body``): no second call.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.clients.identity import Identity
from tasks.clients.v2 import V2Service
from tasks.errors import StaleRevision
from tasks.mapping.settings_merge import planned_settings
from tasks.run.report import RunReport

log = logging.getLogger(__name__)

SETTINGS_RESOURCE = "settings"
# PUTs tried within one run when the settings' ETag went stale in between.
STALE_SETTINGS_ATTEMPTS = 3


def create_body(body: dict[str, Any], settings: dict[str, Any] | None) -> dict[str, Any]:
    """The POST body of a create: the base with the V1-owned settings in it."""
    return body if not settings else {**settings, **body}


def sync_settings(
    service: V2Service,
    uid: str,
    settings: dict[str, Any],
    identity: Identity,
    report: RunReport,
) -> bool:
    """Bring the settings of object ``uid`` in line with ``settings``; True when PUT.

    Raises ``StaleRevision`` after ``STALE_SETTINGS_ATTEMPTS`` stale ETags and the
    usual ``SyncError`` for the rest.
    """
    resource = service.below(uid)
    stale: StaleRevision | None = None
    for _ in range(STALE_SETTINGS_ATTEMPTS):
        current = resource.get(SETTINGS_RESOURCE, identity)
        body = planned_settings(current.record, settings)
        if body is None:
            return False
        try:
            resource.update(SETTINGS_RESOURCE, body, current.etag, identity)
        except StaleRevision as error:
            stale = error
            log.info("stale settings ETag, refetching", extra=report.context())
            continue
        return True
    assert stale is not None
    raise stale
