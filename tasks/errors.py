"""The errors a sync can end in, split by what the task does with them.

``TransientError`` is retried with backoff until the budget is spent;
``PermanentError`` goes to the dead letters at once. Each carries a short
``kind`` that the dead-letter list and the metrics show.
"""

from __future__ import annotations

BODY_EXCERPT_CHARS = 500


class SyncError(Exception):
    """Base of every error the task classifies.

    Parameters:
        message: what went wrong, for people (never a secret).
        kind: a short stable label, e.g. ``v2_validation`` or ``missing_parent``.
        status: the V2 HTTP status when the error came from a V2 answer.
        body_excerpt: the start of the V2 answer's body.
        retry_after: seconds the server asked us to wait (429/503 ``Retry-After``).
    """

    transient = False

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        body_excerpt: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.body_excerpt = body_excerpt[:BODY_EXCERPT_CHARS] if body_excerpt else body_excerpt
        self.retry_after = retry_after


class TransientError(SyncError):
    """Worth retrying: timeouts, 5xx, 429, stale revision, a mapping not there yet."""

    transient = True


class PermanentError(SyncError):
    """Retrying cannot help: validation errors, auth failures, a malformed record."""


class StaleRevision(TransientError):
    """The ETag we sent is no longer current: refetch and try again."""


class SlugConflict(PermanentError):
    """POST answered 409: the slug (or committee) exists already."""


class MissingMapping(TransientError):
    """A parent (a project's parent, a committee's project…) has no V2 uid yet.

    ``parent_key`` is the ``v1-mappings`` key whose absence stopped the run
    (e.g. ``project.sfid.{sfid}``): the run waits for it to be written.
    """

    def __init__(self, message: str, *, kind: str, parent_key: str) -> None:
        super().__init__(message, kind=kind)
        self.parent_key = parent_key


class InvalidRecord(PermanentError):
    """The V1 record cannot be mapped: undecodable, or a required field is missing."""

    def __init__(self, message: str, kind: str = "invalid_record") -> None:
        super().__init__(message, kind=kind)


DELETE_REFUSED_KIND = "delete_refused"
DELETE_BUDGET_EXCEEDED_KIND = "delete_budget_exceeded"


class DeleteRefused(PermanentError):
    """V2 answered a delete with a refusal (e.g. a project not funded by crowdfunding).

    Not a failure to retry: the V2 object stays and its mappings too; the dead
    letter carries V2's own message.
    """

    def __init__(self, message: str, *, status: int | None, body_excerpt: str | None) -> None:
        super().__init__(
            message, kind=DELETE_REFUSED_KIND, status=status, body_excerpt=body_excerpt
        )
