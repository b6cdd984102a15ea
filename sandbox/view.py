"""The read-only view of what the fakes hold: a JSON document and an HTML page.

The page shows the project tree (ROOT, its children, theirs...) with each
project's committees, each committee's members, and who wrote each object
last. It is rendered on the server, needs no script, and reloads itself every
few seconds so a person can watch a sync arrive.
"""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

from sandbox.store import LAST_WRITE_FIELD, REVISION_FIELD, V2Store

REFRESH_SECONDS = 5

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d2733; }
h1 { font-size: 1.3rem; margin-bottom: .2rem; }
.summary { color: #566; margin-bottom: 1rem; }
ul { list-style: none; padding-left: 1.4rem; border-left: 1px dotted #bcc; }
li { margin: .25rem 0; }
.project > .name { font-weight: 600; }
.slug { font-family: ui-monospace, monospace; color: #345; }
.meta, .writer { color: #678; font-size: .85em; }
.committees { border-left: none; padding-left: 1.2rem; }
.committee { font-size: .92em; }
.committee .name::before { content: "\\25AA  "; color: #9ab; }
.members { border-left: none; padding-left: 1.4rem; font-size: .9em; }
.member .email { font-family: ui-monospace, monospace; }
.tag { background: #eef3f7; border-radius: 3px; padding: 0 .3rem; font-size: .8em; }
.settings { color: #456; font-size: .85em; }
"""
# The user objects of a project's settings, in the order the page shows them.
STAFF_FIELDS = ("executive_director", "program_manager", "opportunity_owner")
V2_LISTS = ("writers", "auditors", "meeting_coordinators")


def state(store: V2Store) -> dict[str, Any]:
    """Everything the fakes hold, with each object's ``_last_write`` and ``_revision``."""
    tables = store.snapshot()
    return {
        "root_uid": store.root_uid,
        # Objects only: a settings resource belongs to its project or committee.
        "counts": {
            name: len(rows) for name, rows in tables.items() if not name.endswith("_settings")
        },
        **tables,
    }


def _writer(record: dict[str, Any]) -> str:
    last = record.get(LAST_WRITE_FIELD) or {}
    text = str(last.get("principal", "?"))
    if last.get("on_behalf_of"):
        text += f" on behalf of {last['on_behalf_of']}"
    if last.get("email"):
        text += f" <{last['email']}>"
    return f"last written by {text} ({last.get('method', '?')}, rev {record.get(REVISION_FIELD)})"


def _member_items(members: list[dict[str, Any]]) -> str:
    if not members:
        return ""
    items = []
    for member in sorted(members, key=lambda m: str(m.get("email", "")).lower()):
        name = " ".join(str(member[k]) for k in ("first_name", "last_name") if member.get(k))
        details = [
            str(value)
            for value in (
                (member.get("role") or {}).get("name"),
                (member.get("voting") or {}).get("status"),
                (member.get("organization") or {}).get("name"),
                member.get("status"),
            )
            if value
        ]
        items.append(
            '<li class="member">'
            f'<span class="email">{html.escape(str(member.get("email", "")))}</span> '
            f"{html.escape(name)} "
            f'<span class="meta">{html.escape(" · ".join(details))}</span> '
            f'<span class="writer">{html.escape(_writer(member))}</span></li>'
        )
    return '<ul class="members">' + "".join(items) + "</ul>"


def _user_text(user: Any) -> str:
    if not isinstance(user, dict):
        return "?"
    name = str(user.get("name") or user.get("username") or "")
    email = str(user.get("email") or "")
    return f"{name} <{email}>" if name else f"<{email}>"


def _project_settings_line(settings: dict[str, Any] | None) -> str:
    """One line of a project's settings: mission, announcement, staff, V2's lists."""
    if not settings:
        return ""
    parts = []
    if settings.get("mission_statement"):
        parts.append(f"mission: {settings['mission_statement']}")
    if settings.get("announcement_date"):
        parts.append(f"announced {settings['announcement_date']}")
    for name in STAFF_FIELDS:
        if settings.get(name):
            parts.append(f"{name.replace('_', ' ')}: {_user_text(settings[name])}")
    for name in V2_LISTS:
        if settings.get(name):
            parts.append(f"{len(settings[name])} {name.replace('_', ' ')}")
    if not parts:
        return ""
    revision = settings.get(REVISION_FIELD)
    text = "settings (rev " + str(revision) + "): " + " · ".join(parts)
    return f'<br><span class="settings">{html.escape(text)}</span>'


def _committee_tags(committee: dict[str, Any], settings: dict[str, Any] | None) -> str:
    tags = [str(committee.get("category", ""))]
    if committee.get("join_mode"):
        tags.append(f"join: {committee['join_mode']}")
    if committee.get("mailing_list"):
        tags.append(str(committee["mailing_list"]))
    if (settings or {}).get("business_email_required"):
        tags.append("business e-mail required")
    return " ".join(f'<span class="tag">{html.escape(tag)}</span>' for tag in tags)


def _committee_items(
    committees: list[dict[str, Any]],
    members: dict[str, list[dict[str, Any]]],
    settings: dict[str, dict[str, Any]] | None = None,
) -> str:
    if not committees:
        return ""
    items = []
    for committee in sorted(committees, key=lambda c: str(c.get("name", ""))):
        own = (settings or {}).get(str(committee.get("uid")))
        items.append(
            f'<li class="committee" id="{html.escape(str(committee.get("uid", "")))}">'
            f'<span class="name">{html.escape(str(committee.get("name", "")))}</span> '
            f"{_committee_tags(committee, own)} "
            f'<span class="writer">{html.escape(_writer(committee))}</span>'
            f"{_member_items(members.get(str(committee.get('uid')), []))}</li>"
        )
    return '<ul class="committees">' + "".join(items) + "</ul>"


def _project_item(
    uid: str,
    projects: dict[str, dict[str, Any]],
    children: dict[str, list[str]],
    committees: dict[str, list[dict[str, Any]]],
    seen: set[str],
    members: dict[str, list[dict[str, Any]]],
    settings: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> str:
    seen.add(uid)
    settings = settings or {}
    project = projects[uid]
    details = [
        str(project[key]) for key in ("stage", "category", "legal_entity_type") if project.get(key)
    ]
    if "public" in project:
        details.append("public" if project["public"] else "private")
    parts = [
        f'<li class="project" id="{html.escape(uid)}">',
        f'<span class="name">{html.escape(str(project.get("name", "")))}</span> ',
        f'<span class="slug">{html.escape(str(project.get("slug", "")))}</span> ',
        f'<span class="meta">{html.escape(" · ".join(details))}</span><br>',
        f'<span class="writer">{html.escape(_writer(project))}</span>',
        _project_settings_line(settings.get("projects", {}).get(uid)),
        _committee_items(committees.get(uid, []), members, settings.get("committees")),
    ]
    kids = [k for k in children.get(uid, []) if k not in seen]
    if kids:
        parts.append("<ul>")
        for kid in sorted(kids, key=lambda k: str(projects[k].get("name", ""))):
            parts.append(
                _project_item(kid, projects, children, committees, seen, members, settings)
            )
        parts.append("</ul>")
    parts.append("</li>")
    return "".join(parts)


DELETED_LABELS = {"projects": "project", "committees": "committee", "members": "member"}


def _deleted_items(deleted: dict[str, dict[str, Any]]) -> str:
    """One line per object a client deleted, with who deleted it."""
    items = []
    for uid, record in sorted(deleted.items(), key=lambda item: str(item[1].get("_deleted_from"))):
        by = record.get("_deleted_by") or {}
        who = str(by.get("principal", "?"))
        if by.get("on_behalf_of"):
            who += f" on behalf of {by['on_behalf_of']}"
        name = record.get("slug") or record.get("name") or record.get("email") or uid
        what = DELETED_LABELS.get(str(record.get("_deleted_from")), "object")
        items.append(
            f'<li><span class="tag">{html.escape(what)}</span> '
            f'<span class="slug">{html.escape(str(name))}</span> '
            f'<span class="writer">deleted by {html.escape(who)}</span></li>'
        )
    return f"<h2>Deleted</h2><ul>{''.join(items)}</ul>" if items else ""


def html_page(document: dict[str, Any]) -> str:
    """A self-contained HTML page of ``state()``: the project tree with committees."""
    projects: dict[str, dict[str, Any]] = document["projects"]
    children: dict[str, list[str]] = defaultdict(list)
    for uid, project in projects.items():
        parent = project.get("parent_uid")
        if parent:
            children[parent].append(uid)
    committees: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for committee in document["committees"].values():
        committees[str(committee.get("project_uid"))].append(committee)
    members: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for member in document.get("members", {}).values():
        members[str(member.get("committee_uid"))].append(member)
    settings = {
        "projects": document.get("project_settings", {}),
        "committees": document.get("committee_settings", {}),
    }
    seen: set[str] = set()
    root_uid = document["root_uid"]
    tree = (
        _project_item(root_uid, projects, children, committees, seen, members, settings)
        if root_uid in projects
        else ""
    )
    # Objects not reachable from ROOT (a parent deleted, a cycle) still deserve a line.
    orphans = [uid for uid in projects if uid not in seen]
    orphan_items = "".join(
        _project_item(uid, projects, children, committees, seen, members, settings)
        for uid in orphans
        if uid not in seen
    )
    counts = document["counts"]
    summary = (
        f"{counts['projects']} projects (ROOT included), {counts['committees']} committees, "
        f"{counts['members']} members, {counts.get('deleted', 0)} deleted"
    )
    orphan_block = f"<h2>Not under ROOT</h2><ul>{orphan_items}</ul>" if orphan_items else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>"
        "<title>V2 sandbox</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>V2 sandbox: projects, committees and members</h1>"
        f'<div class="summary">{html.escape(summary)} · '
        '<a href="/_sandbox/state">JSON</a></div>'
        f"<ul>{tree}</ul>{orphan_block}{_deleted_items(document.get('deleted', {}))}"
        "</body></html>"
    )
