"""No import circles in ml/: none at module level, and none at all (function-level imports included) among the
configuration, the Feast store and the trainers, whose shared pieces live below them (ml.store_urls, ml.errors,
ml.training.sampling, ml.training.examples)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "ml").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"


def _imports(path: Path, in_functions: bool) -> set[str]:
    """Modules `path` imports (a `from m import x` names m and m.x); TYPE_CHECKING blocks never run."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and _type_checking(node):
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if in_functions:
                    visit(node.body)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                if isinstance(getattr(node, field, None), list):  # if, try, with, for, class bodies
                    visit(getattr(node, field))

    visit(ast.parse(path.read_text()).body)
    return found


def _cycles(in_functions: bool) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    modules = _modules()
    graph = {m: {d for d in _imports(p, in_functions) if d in modules and d != m} for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in graph:
        if v not in index:
            strong(v)
    return components


def test_no_module_level_import_cycle():
    assert _cycles(in_functions=False) == []


def test_config_store_and_trainers_import_each_other_in_no_direction_back():
    pairs = [{"ml.config", "ml.features.store"}, {"ml.training.train", "ml.training.distributed"}]
    for component in _cycles(in_functions=True):
        assert not any(pair <= component for pair in pairs), component


def test_the_checker_sees_a_cycle(tmp_path, monkeypatch):
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "a.py").write_text("from ml.b import x\n")
    (tmp_path / "ml" / "b.py").write_text("def f():\n    import ml.a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _cycles(in_functions=False) == []
    assert _cycles(in_functions=True) == [{"ml.a", "ml.b"}]
