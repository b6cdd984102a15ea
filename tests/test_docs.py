"""The documentation holds together: the README stays a newcomer's page, every
document is found from it, links and named files exist, and the tables that
mirror the code (settings, layout, field sources) list what the code has.

Pure file reads and imports of modules that read no settings: no servers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync_core.settings import BridgeSettings, FlowerSettings, WorkerSettings
from tasks.mapping import committees, members, projects
from tasks.mapping.values import FieldSource

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
BENCH_README = ROOT / "bench" / "README.md"
CONFIGURATION = DOCS / "configuration.md"
FIELD_MAPPING = DOCS / "field-mapping.md"

# Issue 21: the README is a newcomer's page; the rest lives in docs/.
README_MAX_LINES = 200
# The CI hook greps the README for these two lines, verbatim.
TWO_COMMANDS = (
    "make run    # the whole pipeline on an embedded local stack, loaded with sample V1 data",
    "make test   # the full test suite, against real nats-server and valkey processes",
)
# Folders whose files the documents name as paths, e.g. `tasks/run/upsert.py`.
REPO_FOLDERS = (
    "sync_core",
    "bridge",
    "tasks",
    "operations",
    "v1_sync_helper",
    "sandbox",
    "tests",
    "bench",
    "charts",
    "docs",
)
PACKAGES = ("sync_core", "bridge", "tasks", "operations", "v1_sync_helper", "sandbox")
NAMED_PATH = re.compile(rf"`((?:{'|'.join(REPO_FOLDERS)})/[A-Za-z0-9_./*-]*)`")
# Dotted names such as `tasks.mapping.members.map_member`; not `bridge.…`, which the
# documents also use for the chart's values (`bridge.replicas`).
DOTTED_PACKAGES = tuple(package for package in PACKAGES if package != "bridge")
DOTTED_NAME = re.compile(rf"`((?:{'|'.join(DOTTED_PACKAGES)})(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CONFIG_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.MULTILINE)
# A prose line this long appearing in two documents is a repeat, not a coincidence.
REPEAT_MIN_CHARS = 60


def documents() -> list[Path]:
    """Every Markdown document of the project: the README, docs/ and the benchmarks."""
    return [README, *sorted(DOCS.glob("*.md")), BENCH_README]


def prose_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` outside code fences, whitespace-normalised."""
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            yield " ".join(line.split())


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of ``text`` (lower case, punctuation dropped)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"^#{1,6} (.+)$", line)
        if in_code or not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES
    for command in TWO_COMMANDS:
        assert command in lines


def test_every_document_is_found_from_the_readme() -> None:
    linked = {
        (README.parent / target.split("#")[0]).resolve()
        for target in MARKDOWN_LINK.findall(README.read_text())
        if "://" not in target
    }
    found_elsewhere = [*DOCS.glob("*.md"), BENCH_README]
    unlinked = [str(doc.relative_to(ROOT)) for doc in found_elsewhere if doc not in linked]
    assert unlinked == []


@pytest.mark.parametrize("doc", documents(), ids=lambda doc: str(doc.relative_to(ROOT)))
def test_relative_links_reach_a_file_and_heading(doc: Path) -> None:
    broken = []
    for target in MARKDOWN_LINK.findall(doc.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (doc.parent / path_part).resolve() if path_part else doc
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in heading_anchors(linked.read_text()):
            broken.append(f"{target}: no such heading")
    assert broken == []


@pytest.mark.parametrize("doc", documents(), ids=lambda doc: str(doc.relative_to(ROOT)))
def test_named_files_and_modules_exist(doc: Path) -> None:
    text = doc.read_text()
    missing = [
        path
        for path in NAMED_PATH.findall(text)
        if not (any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists())
    ]
    missing += [name for name in DOTTED_NAME.findall(text) if not dotted_name_exists(name)]
    assert missing == []


def dotted_name_exists(name: str) -> bool:
    """Whether ``a.b.c`` is a module of the project, or a name defined at the top of one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        module = next(
            (f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None
        )
        if module is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        definition = rf"^(?:def|class|async def) {rest[0]}\b|^{rest[0]}\b.*="
        return len(rest) == 1 and re.search(definition, module.read_text(), re.M) is not None
    return False


def test_no_prose_line_is_repeated_across_documents() -> None:
    first_seen: dict[str, Path] = {}
    repeats = []
    for doc in documents():
        for line in set(prose_lines(doc.read_text())):
            if len(line) < REPEAT_MIN_CHARS or line.startswith("|"):
                continue
            if line in first_seen:
                repeats.append(f"{first_seen[line].name} and {doc.name}: {line}")
            else:
                first_seen[line] = doc
    assert repeats == []


def test_configuration_lists_exactly_the_settings() -> None:
    settings = {
        name.upper()
        for cls in (BridgeSettings, WorkerSettings, FlowerSettings)
        for name in cls.model_fields
    }
    listed = set(CONFIG_ROW.findall(CONFIGURATION.read_text()))
    assert sorted(settings - listed) == []
    assert sorted(listed - settings) == []


def test_readme_layout_names_every_package_and_room() -> None:
    text = README.read_text()
    expected = [f"**{package}/**" for package in PACKAGES]
    rooms = ROOT / "tasks"
    expected += [
        f"`tasks/{entry.name}/`"
        for entry in sorted(rooms.iterdir())
        if (entry / "__init__.py").is_file()
    ]
    expected += [
        f"`tasks/{entry.name}`"
        for entry in sorted(rooms.glob("*.py"))
        if entry.name != "__init__.py"
    ]
    assert [name for name in expected if name not in text] == []


def field_sources(value: Any) -> Iterator[FieldSource]:
    """Every ``FieldSource`` in ``value``, looking inside dicts and tuples."""
    if isinstance(value, FieldSource):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from field_sources(item)
    elif isinstance(value, tuple):
        for item in value:
            yield from field_sources(item)


@pytest.mark.parametrize("module", [projects, committees, members], ids=lambda m: m.__name__)
def test_field_mapping_names_every_v1_column(module: Any) -> None:
    text = FIELD_MAPPING.read_text()
    columns = {
        column
        for value in vars(module).values()
        for source in field_sources(value)
        for column in (source.documented, source.real)
    }
    assert columns, f"{module.__name__} has no field sources"
    assert sorted(column for column in columns if f"`{column}`" not in text) == []
