"""What the bridge, the workers and the operations commands agree on about Celery.

The bridge publishes ``sync_kv_entry`` by name without importing worker code,
so the task name, the id format, the queue and the Redis transport options live
here, in one place both sides read.
"""

from __future__ import annotations

from typing import Any

SYNC_TASK_NAME = "sync_kv_entry"

# Task time limits. The hard limit bounds a stuck V2 call; the per-key lock
# outlives it so two workers never hold one key.
TASK_SOFT_TIME_LIMIT = 90
TASK_HARD_TIME_LIMIT = 120

# Redis redelivers a message not acked within the visibility timeout. Every
# countdown plus the hard limit must stay below it, or delayed retries run twice.
MIN_VISIBILITY_TIMEOUT = 3600

OPERATIONS = ("PUT", "DEL", "PURGE")


def task_id_for(key: str, revision: int) -> str:
    """The Celery task id of one KV change: Flower and the dead letters show it."""
    return f"{key}@{revision}"


def visibility_timeout(backoff_max: float) -> int:
    """A visibility timeout safely above the longest countdown plus the hard limit."""
    return max(MIN_VISIBILITY_TIMEOUT, int(backoff_max + TASK_HARD_TIME_LIMIT) * 2)


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
