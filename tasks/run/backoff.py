"""Retry delays: exponential backoff with full jitter, and the short "key locked" wait.

Full jitter (a uniform draw between 0 and the exponential cap) spreads the
retries of many tasks that failed together, e.g. when a V2 service restarts,
instead of sending them back in one wave.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# 2**60 seconds is beyond any cap; stops ``2**attempt`` growing without bound.
MAX_EXPONENT = 60
# A task that finds its key locked comes back after about this long.
LOCK_WAIT_SECONDS = 1.0
# ... give or take this fraction, so waiting tasks do not return in step.
LOCK_WAIT_JITTER = 0.5


def backoff_cap(attempt: int, base: float, maximum: float) -> float:
    """The upper bound of the ``attempt``-th delay: ``min(maximum, base * 2**attempt)``."""
    return min(maximum, base * 2 ** min(max(attempt, 0), MAX_EXPONENT))


def retry_countdown(
    attempt: int,
    base: float,
    maximum: float,
    retry_after: float | None = None,
    draw: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    A uniform draw in ``[0, backoff_cap(attempt)]``; when the server asked for a
    longer wait (``Retry-After``), that wait, but never more than ``maximum``:
    the countdown must stay below the broker's visibility timeout.
    """
    delay = draw() * backoff_cap(attempt, base, maximum)
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, maximum)
    return delay


def lock_wait_countdown(draw: Callable[[], float] = random.random) -> float:
    """Seconds a task whose key is locked waits: about one second, jittered."""
    return LOCK_WAIT_SECONDS * (1 - LOCK_WAIT_JITTER + 2 * LOCK_WAIT_JITTER * draw())
