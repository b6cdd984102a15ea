"""The worker's view of the current epoch of ``v1-objects`` (``sync_core.epochs``).

Read once per process (one stream-info request) and kept: the bridge stamps
every task with the epoch of the stream it consumed the change from, and a task
whose stamp equals the cached epoch, nearly all of them, costs no request at
all. A stamp that differs makes the cache look again (the bucket may have been
rebuilt since); a stamp of an older life than the current one is a change of a
stream that is gone: its run ends ``superseded`` (the new life's change of the
key has a task of its own, and the reconciler re-drives every key of the new
life). Tasks without a stamp (queued before stamps existed, or by hand) use the
cached epoch, looked at again when it is older than ``UNSTAMPED_MAX_AGE``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sync_core.epochs import bucket_epoch
from sync_core.nats_client import SyncNats

# A task without a stamp trusts a cached epoch at most this old (seconds).
UNSTAMPED_MAX_AGE = 30.0
# A stamp of an older life than the cached one looks again at most this often:
# a backlog of old-life tasks after a rebuild must not cost a request each.
OLDER_STAMP_RECHECK = 1.0


class ObjectsEpoch:
    """The current epoch of ``bucket``, cached; thread-safe.

    Parameters:
        nats: the process's blocking NATS client.
        bucket: the ``v1-objects`` bucket.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self, nats: SyncNats, bucket: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._nats = nats
        self.bucket = bucket
        self._clock = clock
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._read_at = 0.0
        self.reads = 0

    def __repr__(self) -> str:
        return f"ObjectsEpoch(bucket={self.bucket!r}, epoch={self._epoch})"

    def current(self, max_age: float | None = None) -> int:
        """The cached epoch, read first when there is none or it is older than ``max_age``."""
        with self._lock:
            epoch = self._epoch
            fresh = max_age is None or self._clock() - self._read_at <= max_age
        if epoch is not None and fresh:
            return epoch
        return self.refresh()

    def refresh(self) -> int:
        """Read the epoch from the server now."""
        epoch = self._nats.run(bucket_epoch(self._nats.js, self.bucket))
        with self._lock:
            self._epoch, self._read_at = epoch, self._clock()
            self.reads += 1
        return epoch

    def of_task(self, stamp: int | None) -> int | None:
        """The epoch a task runs in; None when its stamp is of another life than the current.

        ``stamp``: the epoch the task was stamped with (None: unstamped).
        """
        if stamp is None:
            return self.current(UNSTAMPED_MAX_AGE)
        cached = self.current()
        if stamp == cached:
            return stamp
        with self._lock:
            recent = self._clock() - self._read_at < OLDER_STAMP_RECHECK
        if stamp < cached and recent:
            return None
        return stamp if self.refresh() == stamp else None
