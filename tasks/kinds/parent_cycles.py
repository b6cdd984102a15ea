"""Parent cycles: a project is never sent with a parent that is itself or below it.

V2 is the truth for the parent chain: the mappings hold only sfid <-> uid, and
the V1 records of the ancestors may not be synced yet, so the walk reads each
ancestor's ``parent_uid`` from V2 (``parent_of``). It starts at the proposed
parent and goes up until ROOT (or a project without a parent), at most
``MAX_PARENT_DEPTH`` steps (LF trees are a handful of levels deep):

- meeting the project itself: ``parent_cycle`` (the parent is the project or
  one of its descendants);
- meeting an ancestor twice: ``parent_cycle`` (V2 already holds a loop above
  the parent: the project would never reach ROOT);
- more than ``MAX_PARENT_DEPTH`` steps: ``parent_chain_too_deep``.

The caller walks only when the parent changes (a new project has no
descendants, and an unchanged parent sends nothing new), so the usual update
costs no extra V2 call. Errors of ``parent_of`` (a V2 call) pass through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAX_PARENT_DEPTH = 32
PARENT_CYCLE_KIND = "parent_cycle"
PARENT_CHAIN_TOO_DEEP_KIND = "parent_chain_too_deep"


@dataclass(frozen=True)
class ParentProblem:
    """Why a parent cannot be sent: a dead-letter ``kind`` and a message for people."""

    kind: str
    message: str


def find_parent_problem(
    project_uid: str,
    parent_uid: str,
    parent_of: Callable[[str], str | None],
    root_uid: str,
    max_depth: int = MAX_PARENT_DEPTH,
) -> ParentProblem | None:
    """The problem with putting ``project_uid`` under ``parent_uid``, or None.

    ``parent_of(uid)`` gives the V2 ``parent_uid`` of project ``uid`` (None for
    a project without one); it is called at most ``max_depth`` times.
    """
    if parent_uid == project_uid:
        return ParentProblem(PARENT_CYCLE_KIND, f"project {project_uid}: the parent is itself")
    seen: set[str] = set()
    current: str | None = parent_uid
    for _ in range(max_depth):
        if current is None or current == root_uid:
            return None
        if current in seen:
            return ParentProblem(
                PARENT_CYCLE_KIND,
                f"project {project_uid}: the parents above {parent_uid} loop at {current} "
                "and never reach ROOT",
            )
        seen.add(current)
        current = parent_of(current)
        if current == project_uid:
            return ParentProblem(
                PARENT_CYCLE_KIND,
                f"project {project_uid}: the new parent {parent_uid} is one of its descendants",
            )
    if current is None or current == root_uid:
        return None
    return ParentProblem(
        PARENT_CHAIN_TOO_DEEP_KIND,
        f"project {project_uid}: the parents above {parent_uid} go more than {max_depth} "
        "levels up without reaching ROOT",
    )
