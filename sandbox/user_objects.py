"""How the fake V2 services rewrite the user objects of a settings resource.

The real services fill ``username``, ``name`` and ``avatar`` from their own
directory by ``email`` on every write, so a client that compares what it sent
field by field sees a change every time. The fake does the same with the V1
users it knows (``SandboxApp`` plugs them in); an unknown e-mail keeps the name
and username sent, and loses its avatar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# What the directory knows of the person with an e-mail: username, name, avatar.
UserDirectory = Callable[[str], dict[str, str] | None]
AVATAR_BASE = "https://avatars.sandbox.example/"


def no_directory(email: str) -> dict[str, str] | None:
    """A directory that knows nobody."""
    return None


def directory_of(users: Callable[[], list[dict[str, Any]]]) -> UserDirectory:
    """A directory over V1 user service entries (``Username``, ``Email``, names)."""

    def lookup(email: str) -> dict[str, str] | None:
        wanted = email.strip().lower()
        for user in users():
            if str(user.get("Email", "")).strip().lower() == wanted and wanted:
                username = str(user.get("Username", ""))
                name = f"{user.get('FirstName', '')} {user.get('LastName', '')}".strip()
                return {"username": username, "name": name, "avatar": AVATAR_BASE + username}
        return None

    return lookup


def rewrite_users(settings: dict[str, Any], directory: UserDirectory) -> dict[str, Any]:
    """``settings`` with every user object (alone or in a list) rewritten from ``directory``."""
    return {key: _rewrite(value, directory) for key, value in settings.items()}


def _rewrite(value: Any, directory: UserDirectory) -> Any:
    if isinstance(value, list):
        return [_rewrite(item, directory) for item in value]
    if not isinstance(value, dict) or "email" not in value:
        return value
    known = directory(str(value.get("email", "")))
    if known is None:
        return {**value, "avatar": ""}
    return {**value, **known}
