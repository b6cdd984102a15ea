"""What the sandbox received, and the faults it was told to answer with.

Tests read ``RecordedRequest`` entries to check what a client sent (headers,
body, verified claims) and count calls; ``Fault`` entries make the next
matching requests fail (or stall) on purpose.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

from requests.structures import CaseInsensitiveDict


@dataclass(frozen=True)
class RecordedRequest:
    """One request the sandbox answered.

    ``claims`` are the verified JWT claims of a V2 call (``None`` when the call
    was refused before or at verification); ``form`` the fields of a
    form-encoded body (the Auth0 token endpoint); ``status`` the answer's.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: CaseInsensitiveDict[str]
    json_body: Any
    claims: dict[str, Any] | None
    status: int
    form: dict[str, str] | None = None


@dataclass
class Fault:
    """Answer the next ``remaining`` requests matching ``method`` and ``path_prefix``.

    ``status`` ``None`` means: wait ``delay`` seconds, then answer normally.
    ``method`` ``"*"`` matches every method. ``drop`` closes the connection
    without an answer: ``DROP_BEFORE`` without doing the work, ``DROP_AFTER``
    after doing it (a create whose answer is lost); ``status`` is then ignored.
    """

    method: str
    path_prefix: str
    status: int | None
    remaining: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    drop: str | None = None

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with ``method`` on ``path`` should get this fault."""
        return (self.method == "*" or self.method == method) and path.startswith(self.path_prefix)


DROP_BEFORE = "before"
DROP_AFTER = "after"
DROPS = (DROP_BEFORE, DROP_AFTER)
RANDOM_FAULT_RETRY_AFTER = "1"
# The V1 committee API fake (``sandbox.v1_api``): its random faults are drawn apart.
V1_API_PATH_PREFIXES = ("/project-service/",)
# The two sets of random faults a sandbox can be told to answer with at once.
V2_FAULTS = "v2"
V1_FAULTS = "v1"


@dataclass(frozen=True)
class RandomFaults:
    """Faults drawn at random for every V2 call (chaos runs), from a seeded generator.

    Fractions of requests: ``unavailable`` answer 503, ``rate_limited`` 429
    (with ``Retry-After``), ``dropped`` lose their connection, half of those
    after the work was done. ``path_prefixes`` limits them to the V2 services
    (``V1_API_PATH_PREFIXES``: to the V1 committee API).
    """

    unavailable: float = 0.0
    rate_limited: float = 0.0
    dropped: float = 0.0
    seed: int = 0
    path_prefixes: tuple[str, ...] = ("/projects", "/committees")


class TrafficLog:
    """The recorded requests and the pending faults; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        # slot (V2_FAULTS, V1_FAULTS) -> the faults and their own seeded generator, so
        # that turning one set on does not change the draws of the other.
        self._random: dict[str, tuple[RandomFaults, random.Random]] = {}

    def record(self, request: RecordedRequest) -> None:
        """Append one answered request."""
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every recorded request, oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, method: str, path_prefix: str) -> int:
        """How many recorded requests had ``method`` (``*``: any) and a path with this prefix."""
        method = method.upper()
        with self._lock:
            return sum(
                1
                for r in self._requests
                if (method == "*" or r.method == method) and r.path.startswith(path_prefix)
            )

    def reset(self) -> None:
        """Forget the recorded requests (pending faults stay)."""
        with self._lock:
            self._requests.clear()

    def inject(self, fault: Fault) -> None:
        """Queue a fault; faults are matched in the order they were injected."""
        with self._lock:
            self._faults.append(fault)

    def set_random_faults(self, faults: RandomFaults | None, slot: str = V2_FAULTS) -> None:
        """Draw faults at random from now on for the paths of ``faults`` (``None``: stop).

        ``slot`` names the set (``V2_FAULTS``, ``V1_FAULTS``): each set is replaced
        or stopped alone and draws from its own generator.
        """
        with self._lock:
            if faults is None:
                self._random.pop(slot, None)
            else:
                self._random[slot] = (faults, random.Random(faults.seed))

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first pending fault matching the request, spending one of its uses.

        Without one, a random fault when ``set_random_faults`` asked for them.
        """
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
            return self._random_fault(path)

    def _random_fault(self, path: str) -> Fault | None:
        found = next(
            (s for s in self._random.values() if path.startswith(s[0].path_prefixes)), None
        )
        if found is None:
            return None
        chosen, rng = found
        draw = rng.random()
        if draw < chosen.dropped:
            drop = DROP_AFTER if rng.random() < 0.5 else DROP_BEFORE
            return Fault("*", "", None, 1, drop=drop)
        draw -= chosen.dropped
        if draw < chosen.rate_limited:
            return Fault("*", "", 429, 1, headers={"Retry-After": RANDOM_FAULT_RETRY_AFTER})
        draw -= chosen.rate_limited
        if draw < chosen.unavailable:
            return Fault("*", "", 503, 1)
        return None

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()
