"""The import direction of the packages, read from the source (ast, nothing runs).

Imports point one way: the shared core at the bottom, the bridge and the tasks on
it (never on each other), the operator commands above both, the one CLI on top.
``sandbox/`` is dev-only: it may use everything but the CLI, and no production
module imports it except the CLI's registration of ``dev``.

Inside ``tasks/`` the rooms are ranked the same way (``TASK_ROOMS``): the errors at
the bottom, then the pure field mapping, the stores, the clients, the object
kinds, the run, and the worker (the Celery app, the task binding, the process)
on top, with ``tasks.celery`` above it for ``celery -A tasks``. Type-only
imports count too. Only the CLI imports the worker command, and no import
cycle joins two modules of ``tasks/``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Production packages by layer: a module may import its own package and the
# packages of lower layers only.
LAYERS = {"sync_core": 0, "bridge": 1, "tasks": 1, "operations": 2, "v1_sync_helper": 3}
SANDBOX = "sandbox"
# The one production import of the sandbox: the CLI registers `dev`.
SANDBOX_ENTRY = ("v1_sync_helper.cli", "sandbox.command")
PROJECT_PACKAGES = {*LAYERS, SANDBOX}
# The rooms of tasks/, bottom up: a module imports its own room and lower ones only.
TASK_ROOMS = {
    "errors": 0,
    "mapping": 1,
    "stores": 2,
    "clients": 3,
    "kinds": 4,
    "run": 5,
    "worker": 6,
    "celery": 7,
}
WORKER_COMMAND = "tasks.worker.command"
WORKER_COMMAND_IMPORTERS = frozenset({"v1_sync_helper.cli"})


def module_name(path: Path) -> str:
    """The dotted module name of a file below the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Every module an import statement of ``source`` names, with its line.

    Imports inside functions and ``TYPE_CHECKING`` blocks count too: they are
    dependencies all the same. Relative imports are resolved against ``module``.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            # `from pkg import module` names a module too.
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None when it may."""
    source_top = importer.split(".")[0]
    target_top = imported.split(".")[0]
    if target_top not in PROJECT_PACKAGES or target_top == source_top:
        return None
    if target_top == SANDBOX:
        entry_importer, entry_module = SANDBOX_ENTRY
        if importer == entry_importer and (
            imported == entry_module or imported.startswith(f"{entry_module}.")
        ):
            return None
        return "production code must not import the dev-only sandbox"
    if source_top == SANDBOX:
        if LAYERS[target_top] == max(LAYERS.values()):
            return "the sandbox must not import the CLI"
        return None
    if LAYERS[target_top] >= LAYERS[source_top]:
        return (
            f"{source_top} (layer {LAYERS[source_top]}) may only import lower layers, "
            f"not {target_top} (layer {LAYERS[target_top]})"
        )
    return None


def violations(paths: list[Path]) -> list[str]:
    """Every import of ``paths`` that points against the allowed direction."""
    found = []
    for path in paths:
        module = module_name(path)
        is_package = path.name == "__init__.py"
        for line, imported in imported_modules(path.read_text(), module, is_package):
            reason = violation(module, imported)
            if reason:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {imported}: {reason}")
    return sorted(set(found))


def project_modules() -> list[Path]:
    """Every Python file of the project's packages (tests and benchmarks excluded)."""
    paths = []
    for package in sorted(PROJECT_PACKAGES):
        paths.extend(sorted((ROOT / package).rglob("*.py")))
    return paths


def test_every_package_of_the_layout_exists() -> None:
    for package in PROJECT_PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), f"{package}/ is missing"


def test_imports_point_down_the_layers() -> None:
    assert violations(project_modules()) == []


def test_the_shared_core_imports_nothing_else_of_the_project() -> None:
    core = [path for path in project_modules() if module_name(path).startswith("sync_core")]
    assert core
    for path in core:
        module = module_name(path)
        for _line, imported in imported_modules(
            path.read_text(), module, path.name == "__init__.py"
        ):
            top = imported.split(".")[0]
            assert top not in PROJECT_PACKAGES - {"sync_core"}, f"{module} imports {imported}"


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("bridge.loop", "sync_core.settings", True),
        ("bridge.loop", "tasks.mapping.codec", False),
        ("tasks.run.sync", "bridge.changes", False),
        ("sync_core.settings", "tasks.worker.app", False),
        ("sync_core.settings", "operations.status", False),
        ("operations.status", "bridge.messages", True),
        ("operations.status", "v1_sync_helper.cli", False),
        ("tasks.run.sync", "sandbox.store", False),
        ("v1_sync_helper.cli", "sandbox.command", True),
        ("v1_sync_helper.cli", "sandbox.store", False),
        ("sandbox.stack", "operations.enqueue", True),
        ("sandbox.stack", "v1_sync_helper.cli", False),
        ("tasks.run.sync", "celery", True),
    ],
)
def test_the_rule_allows_and_refuses(importer: str, imported: str, allowed: bool) -> None:
    assert (violation(importer, imported) is None) is allowed


def test_relative_and_nested_imports_are_seen() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ..tasks import app\n"
        "def f():\n"
        "    import operations.status\n"
    )
    names = {name for _line, name in imported_modules(source, "bridge.loop", False)}
    assert {"tasks", "tasks.app", "operations.status"} <= names


# -- inside tasks/ --------------------------------------------------------------------


def task_room(module: str) -> str | None:
    """The room of a ``tasks`` module (``tasks.run.sync`` -> ``run``), None for ``tasks`` itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "tasks" and len(parts) > 1 else None


def room_violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` (in tasks/) may not import ``imported`` (in tasks/), or None."""
    source, target = task_room(importer), task_room(imported)
    if source is None or target is None or source == target:
        return None
    unranked = [room for room in (source, target) if room not in TASK_ROOMS]
    if unranked:
        return f"room {unranked[0]!r} has no rank in TASK_ROOMS"
    if TASK_ROOMS[target] > TASK_ROOMS[source]:
        ranks = f"{TASK_ROOMS[source]} < {TASK_ROOMS[target]}"
        return f"tasks/{source} imports the higher room tasks/{target} ({ranks})"
    return None


def task_modules() -> list[Path]:
    return [path for path in project_modules() if module_name(path).split(".")[0] == "tasks"]


def imports_of(path: Path) -> list[tuple[int, str]]:
    return list(imported_modules(path.read_text(), module_name(path), path.name == "__init__.py"))


def test_every_room_of_tasks_has_a_rank() -> None:
    rooms = {task_room(module_name(path)) for path in task_modules()} - {None}
    assert rooms == set(TASK_ROOMS)


def test_the_rooms_of_tasks_import_downwards_only() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: imports {imported}: {reason}"
        for path in task_modules()
        for line, imported in imports_of(path)
        if (reason := room_violation(module_name(path), imported))
    ]
    assert sorted(set(found)) == []


def test_kinds_and_mapping_never_import_the_celery_app() -> None:
    for path in task_modules():
        if task_room(module_name(path)) in {"kinds", "mapping"}:
            for _line, imported in imports_of(path):
                assert task_room(imported) != "worker", f"{module_name(path)} imports {imported}"


def test_only_the_cli_imports_the_worker_command() -> None:
    importers = {
        module_name(path)
        for path in project_modules()
        for _line, imported in imports_of(path)
        if imported == WORKER_COMMAND or imported.startswith(f"{WORKER_COMMAND}.")
    }
    assert importers <= WORKER_COMMAND_IMPORTERS
    assert importers, "the CLI registers the worker command"


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``paths`` it imports (``from m import name`` counts as ``m``)."""
    modules = {module_name(path): path for path in paths}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for _line, imported in imports_of(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != module:
                targets.add(imported)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


def test_no_import_cycle_inside_tasks() -> None:
    assert find_cycle(import_graph(task_modules())) is None


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("tasks.run.sync", "tasks.kinds.registry", True),
        ("tasks.kinds.members", "tasks.kinds.committees", True),
        ("tasks.kinds.projects", "tasks.run.runtime", False),
        ("tasks.run.sync", "tasks.worker.app", False),
        ("tasks.mapping.projects", "tasks.clients.v2", False),
        ("tasks.clients.v2", "tasks.stores.leases", True),
        ("tasks.worker.task", "tasks.run.sync", True),
        ("tasks.celery", "tasks.worker.app", True),
    ],
)
def test_the_room_rule_allows_and_refuses(importer: str, imported: str, allowed: bool) -> None:
    assert (room_violation(importer, imported) is None) is allowed


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
