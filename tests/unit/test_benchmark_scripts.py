"""Every benchmark script still imports against the code it measures: a script whose import broke (a name it takes
from `benchmarks/common.py` or `ml/` was renamed or removed) is found here, not when someone re-runs it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py"))


def test_the_benchmarks_folder_holds_scripts():
    assert len(SCRIPTS) > 10, f"found only {[p.name for p in SCRIPTS]} in {BENCHMARKS}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_script_imports(script, monkeypatch):
    """Loaded as a module (its `main` does not run): every top-level import must resolve."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their siblings (`common`, `serving_world`)
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert module.__doc__, f"{script.name} has no docstring saying what it measures and how to run it"
