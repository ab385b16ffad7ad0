"""The library's imports flow one way: down the layers of docs/architecture.md, with no cycle.

The layer table in docs/architecture.md is the rule. This test parses it and every module's
imports (with `ast`, importing nothing), and fails on a module the table misses, a table entry
naming no module, an import pointing up the layers, a cycle, or a deferred import left unexplained.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, Mapping

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hooks" / "lib" / "signgate"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
DEFERRED_MARK = "# Deferred imports:"


# --- reading the rule and the code ------------------------------------------------------------


def layer_table(text: str) -> dict[str, tuple[int, str]]:
    """module (dotted, relative to signgate) -> (rank, layer name), from the '## Layers' table."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    table: dict[str, tuple[int, str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].isdigit():
            continue
        rank, name = int(cells[0]), cells[1]
        for module in re.findall(r"`([\w.]+)`", cells[2]):
            assert module not in table, f"{module} is placed in two layers"
            table[module] = (rank, name)
    return table


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules(package: Path) -> dict[str, Path]:
    return {module_name(path, package): path for path in sorted(package.rglob("*.py"))}


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _in_function(node: ast.AST, parents: Mapping[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, deferred?) for every import of a signgate module in one file."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    here = name.split(".") if name != "__init__" else []
    package = here if _is_package(path) else here[:-1]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.removeprefix("signgate.") for alias in node.names if alias.name.startswith("signgate.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
            elif (node.module or "").split(".")[0] == "signgate":
                base = []
            else:
                continue
            module = (node.module or "").removeprefix("signgate").lstrip(".")
            prefix = ".".join(base + ([module] if module else []))
            for alias in node.names:
                sub = f"{prefix}.{alias.name}" if prefix else alias.name
                targets.append(sub if sub in known else (prefix or "__init__"))
        for target in targets:
            if target != name:
                yield target, node.lineno, _in_function(node, parents)


def layer_of(module: str, table: Mapping[str, tuple[int, str]]) -> tuple[int, str] | None:
    """The layer of a module: its own entry, or that of the nearest package listed."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        entry = table.get(".".join(parts[:end]))
        if entry is not None:
            return entry
    return None


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def upward(edges: list[tuple[str, str, int]], table: Mapping[str, tuple[int, str]]) -> list[str]:
    problems = []
    for source, target, line in edges:
        (low, low_name), (high, high_name) = layer_of(source, table), layer_of(target, table)  # type: ignore[misc]
        if high > low:
            problems.append(f"{source}:{line} imports {target}: {low_name} (rank {low}) must not import {high_name} (rank {high})")
    return problems


# --- the library ------------------------------------------------------------------------------


TABLE = layer_table(ARCHITECTURE.read_text())
MODULES = modules(PACKAGE)
EDGES = [
    (name, target, line, deferred)
    for name, path in MODULES.items()
    for target, line, deferred in imports(name, path, set(MODULES))
]


def test_every_module_sits_in_one_layer() -> None:
    missing = sorted(name for name in MODULES if layer_of(name, TABLE) is None)
    assert not missing, f"docs/architecture.md places no layer for: {', '.join(missing)}"
    stale = sorted(entry for entry in TABLE if entry not in MODULES)
    assert not stale, f"docs/architecture.md names modules that do not exist: {', '.join(stale)}"


def test_imports_point_down_the_layers() -> None:
    problems = upward([(source, target, line) for source, target, line, _ in EDGES], TABLE)
    assert not problems, "\n".join(problems)


def test_imports_have_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for source, target, _, _ in EDGES:
        graph.setdefault(source, set()).add(target)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_deferred_imports_say_why() -> None:
    unexplained = sorted({source for source, _, _, deferred in EDGES if deferred and DEFERRED_MARK not in MODULES[source].read_text()})
    assert not unexplained, f"imports inside functions without a '{DEFERRED_MARK}' comment in: {', '.join(unexplained)}"


# --- the checker itself catches what it must --------------------------------------------------


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    package = tmp_path / "signgate"
    (package / "verifiers").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "verifiers" / "__init__.py").write_text("")
    (package / "verifiers" / "a.py").write_text("from ..policy import rule\n")
    (package / "policy.py").write_text("def f():\n    from .verifiers import a\n")
    (package / "errors.py").write_text("import signgate.policy\n")
    found = modules(package)
    assert set(found) == {"__init__", "verifiers", "verifiers.a", "policy", "errors"}
    edges = [(name, target, line, deferred) for name, path in found.items() for target, line, deferred in imports(name, path, set(found))]
    assert ("verifiers.a", "policy", 1, False) in edges
    assert ("policy", "verifiers.a", 2, True) in edges
    graph: dict[str, set[str]] = {}
    for source, target, _, _ in edges:
        graph.setdefault(source, set()).add(target)
    assert find_cycle(graph) in (["policy", "verifiers.a", "policy"], ["verifiers.a", "policy", "verifiers.a"])
    table = layer_table("## Layers\n| 3 | policy | `policy` |\n| 2 | verifiers | `verifiers` |\n| 0 | primitives | `errors`, `__init__` |\n")
    assert layer_of("verifiers.a", table) == (2, "verifiers")
    problems = sorted(upward([(s, t, line) for s, t, line, _ in edges], table))
    assert [problem.split(":")[0] for problem in problems] == ["errors", "verifiers.a"]
    assert problems[1] == "verifiers.a:1 imports policy: verifiers (rank 2) must not import policy (rank 3)"
