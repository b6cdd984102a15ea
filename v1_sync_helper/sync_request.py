"""One KV change to sync: the arguments of the ``sync_kv_entry`` task."""

from __future__ import annotations

from dataclasses import dataclass

from v1_sync_helper.broker import task_id_for

PUT = "PUT"


@dataclass(frozen=True)
class SyncRequest:
    """``sync_kv_entry(key, revision, operation)`` with task id ``key@revision``."""

    key: str
    revision: int
    operation: str = PUT

    @property
    def task_id(self) -> str:
        """The task id Flower and the dead letters show for this change."""
        return task_id_for(self.key, self.revision)
