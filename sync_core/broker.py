"""What the bridge, the workers and the operations commands agree on about Celery.

The bridge publishes ``sync_kv_entry`` by name without importing worker code,
so the task name, the id format, the queue and the Redis transport options live
here, in one place both sides read.
"""

from __future__ import annotations

from typing import Any

SYNC_TASK_NAME = "sync_kv_entry"
# V2 -> V1 (``SYNC_V2_TO_V1``): one task per V2 indexer event, args (key, stream sequence, action).
V2_EVENT_TASK_NAME = "sync_v2_event"

# Task time limits. The hard limit bounds a stuck V2 call; the per-key lease is
# renewed while the run lives, so it needs no TTL above the limit.
TASK_SOFT_TIME_LIMIT = 90
TASK_HARD_TIME_LIMIT = 120

# Redis redelivers a message not acked within the visibility timeout: that is
# how long a task held by a dead worker (prefetched, or waiting out a retry
# countdown) stays stranded. Every countdown plus the hard limit must stay
# below it, or delayed retries run twice; this margin is on top. With the
# default backoff cap (300 s) the timeout is 480 s: stranded tasks come back
# within eight minutes, and the reconciler re-enqueues their keys sooner.
VISIBILITY_MARGIN = 60

OPERATIONS = ("PUT", "DEL", "PURGE")


def task_id_for(key: str, revision: int) -> str:
    """The Celery task id of one KV change: Flower and the dead letters show it."""
    return f"{key}@{revision}"


def visibility_timeout(backoff_max: float) -> int:
    """The longest countdown plus the hard limit plus a margin: no earlier, no later."""
    return int(backoff_max + TASK_HARD_TIME_LIMIT + VISIBILITY_MARGIN)


def broker_transport_options(backoff_max: float = 300.0) -> dict[str, Any]:
    """Redis transport options: never block forever on a half-open socket."""
    return {
        "visibility_timeout": visibility_timeout(backoff_max),
        "socket_timeout": 5.0,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "retry_on_timeout": True,
    }
