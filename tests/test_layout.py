"""The package's layout: no import cycle anywhere, and the data path's direction (backends depend on the core)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "resnas"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside `if TYPE_CHECKING:` blocks: imports there never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `path` imports when it runs, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from resnas import zoo` imports the module resnas.zoo; `from resnas._arch import Arch` resnas._arch.
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names)
    return {m for m in found if m in modules}


def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: imports(path, modules) - {name} for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_walk_finds_a_cycle_when_there_is_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


def test_the_walk_sees_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import resnas._a\n"
                      "def f():\n    from resnas._b import x\n    from resnas import c\n")
    assert imports(source, {"resnas._a": source, "resnas._b": source, "resnas.c": source}) == {"resnas._b",
                                                                                               "resnas.c"}


def test_no_import_cycle_in_the_package() -> None:
    edges = graph()
    assert "resnas._lifecycle" in edges and "resnas._study" in edges["resnas._lifecycle"]  # the walk sees edges
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_backends_depend_on_the_core_never_the_reverse() -> None:
    edges = graph()
    core = {"resnas._lifecycle", "resnas._study", "resnas._trial", "resnas._runfolder", "resnas._config"}
    for module in core:
        assert not edges[module] & {"resnas._local", "resnas._ray", "resnas._search"}, module
    for backend in ("resnas._local", "resnas._ray"):
        assert "resnas._lifecycle" in edges[backend] and "resnas._search" not in edges[backend]
