"""What the sandbox received, and the faults it was told to answer with.

Tests read ``RecordedRequest`` entries to check what a client sent (headers,
body, verified claims) and count calls; ``Fault`` entries make the next
matching requests fail (or stall) on purpose.
"""

from __future__ import annotations

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
    ``method`` ``"*"`` matches every method.
    """

    method: str
    path_prefix: str
    status: int | None
    remaining: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with ``method`` on ``path`` should get this fault."""
        return (self.method == "*" or self.method == method) and path.startswith(self.path_prefix)


class TrafficLog:
    """The recorded requests and the pending faults; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []

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

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first pending fault matching the request, spending one of its uses."""
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()
