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


def imports(path: Path, modules: dict[str, Path], *, typing_too: bool = False) -> set[str]:
    """The package modules `path` imports when it runs, at module level or inside functions (and, with
    `typing_too`, inside `if TYPE_CHECKING:` blocks)."""
    tree = ast.parse(path.read_text())
    skip = set() if typing_too else _type_checking_lines(tree)
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


def graph(*, typing_too: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    return {name: imports(path, modules, typing_too=typing_too) - {name} for name, path in modules.items()}


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


def test_no_import_cycle_in_the_package_even_for_the_type_checker() -> None:
    for typing_too in (False, True):
        edges = graph(typing_too=typing_too)
        assert "resnas._lifecycle" in edges and "resnas._study" in edges["resnas._lifecycle"]  # it sees edges
        assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


# Private attributes change without notice between releases: resnas uses only its own (self, cls, its modules)
# and, from the standard library, these (argparse's subparser type, os._exit, a base class's hook via super()).
_ALLOWED = {"argparse", "os", "super"}


def private_uses(path: Path) -> list[str]:
    """Private attributes of other packages used in `path`: `x._attr` where `x` is not resnas's own nor an
    allowed standard-library name, `self.x._attr`, and `self._attr` in a class with a base from another
    package that the class itself never assigns (so one it inherits)."""
    own = {p.stem for p in PACKAGE.rglob("*.py")} | {"resnas", "self", "cls"}
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if not _private(node):
            continue
        value = node.value  # type: ignore[attr-defined]
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            value = value.func  # super()._hook
        name = value.id if isinstance(value, ast.Name) else ""
        own_chain = isinstance(value, ast.Attribute) and _private(value) and isinstance(value.value, ast.Name) \
            and value.value.id == "self"  # self._run._x: resnas's own object
        if not own_chain and name not in own | _ALLOWED:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    local = {c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef)}
    for cls in (c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)):
        if all(isinstance(b, ast.Name) and b.id in local | {"object"} for b in cls.bases):
            continue  # only resnas's own classes above it
        assigned = {t.attr for n in ast.walk(cls) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if _private(t)}
        assigned |= {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}
        found += [f"{path.name}:{n.lineno}: {ast.unparse(n)}" for n in ast.walk(cls) if _private(n)
                  and isinstance(n.value, ast.Name) and n.value.id == "self"  # type: ignore[attr-defined]
                  and n.attr not in assigned]  # type: ignore[attr-defined]
    return found


def _private(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")


def test_the_scan_finds_private_attributes_of_other_packages(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import optuna\nfrom ray.tune import Searcher\n"
                      "def f(study, s):\n    study._storage.x(1)\n    t = study.trials[0]._trial_id\n"
                      "    Searcher._private\n    optuna.samplers._tpe\n    self._mine\n"
                      "class S(Searcher):\n    def __init__(self):\n        self._own = 1\n"
                      "    def f(self):\n        return self._own, self._ot_trials, self.optuna._storage\n")
    assert {u.split(": ")[1] for u in private_uses(source)} == {
        "study._storage", "study.trials[0]._trial_id", "Searcher._private", "optuna.samplers._tpe",
        "self._ot_trials", "self.optuna._storage"}


def test_no_private_attribute_of_another_package_is_used() -> None:
    uses = [u for path in sorted(PACKAGE.rglob("*.py")) for u in private_uses(path)]
    assert not uses, "\n".join(uses)


def test_backends_depend_on_the_core_never_the_reverse() -> None:
    edges = graph()
    core = {"resnas._lifecycle", "resnas._proposals", "resnas._candidate", "resnas._study", "resnas._trial",
            "resnas._runfolder", "resnas._config"}
    for module in core:
        assert not edges[module] & {"resnas._local", "resnas._ray", "resnas._search"}, module
    for backend in ("resnas._local", "resnas._ray"):
        assert "resnas._lifecycle" in edges[backend] and "resnas._search" not in edges[backend]
