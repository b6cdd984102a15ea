"""The one error type the fake services raise: an HTTP status and a message."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the fake refuses, answered as ``{"code": "<status>", "message": ...}``.

    ``headers`` are extra response headers (``WWW-Authenticate`` on a 401);
    ``body`` replaces the default JSON body (OAuth errors have their own shape).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.body = body

    def payload(self) -> dict[str, Any]:
        """The JSON body of the error answer."""
        if self.body is not None:
            return self.body
        return {"code": str(self.status), "message": self.message}
