"""The shape of the code, read from its imports (ast, nothing is imported or run): the core
(scripts/stack/) imports nothing outside itself and only the standard library, the checks only the
core, doctor's Host is a leaf, and no module of the product imports itself back through others."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit
PRODUCT = ("scripts", "bench", "smoke", "docker")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for top in PRODUCT
        for p in sorted((ROOT / top).rglob("*.py"))
        if "results" not in p.parts
    }


def imports(path: Path, known: set[str]) -> set[str]:
    """Every module this file imports, at any depth of the file (function-level imports too),
    `from package import module` resolved to the module when it is one of `known`."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Import loops among the product's own modules (a package's __init__ importing its own
    modules does not count: that is how a package hands names on)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(g.get(node, ())):
            if dep not in g or node == dep.rsplit(".", 1)[0]:
                continue
            if state.get(dep) == "open":
                found.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for name in sorted(g):
        if name not in state:
            visit(name, [name])
    return found


def test_no_module_of_the_product_imports_itself_back():
    loops = cycles(graph())
    assert not loops, "import circles: " + "; ".join(" -> ".join(c) for c in loops)


def test_the_core_imports_only_itself_and_the_standard_library():
    g = graph()
    core = {m: deps for m, deps in g.items() if m.startswith("scripts.stack")}
    assert {"scripts.stack.settings", "scripts.stack.layout", "scripts.stack.compose"} <= set(core)
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = {
        m: sorted(d for d in deps if not d.startswith("scripts.stack") and d.split(".")[0]
                  not in stdlib)
        for m, deps in core.items()
    }  # fmt: skip
    assert not {m: d for m, d in bad.items() if d}, bad


def test_checks_read_only_the_core_and_doctors_host_is_a_leaf():
    g = graph()
    for m, deps in g.items():
        ours = {d for d in deps if d.startswith("scripts")}
        if m.startswith("scripts.checks"):
            assert all(d.startswith(("scripts.stack", "scripts.checks")) for d in ours), (m, ours)
    assert not {d for d in g["scripts.doctor.host"] if d.startswith("scripts.doctor")}


def test_the_checker_sees_a_planted_circle(tmp_path):
    """The cycle finder itself: a loop of three and a package's own __init__ (not a loop)."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "p": {"p.x"}, "p.x": {"p"}}
    assert cycles(g) == [["a", "b", "c", "a"]]
