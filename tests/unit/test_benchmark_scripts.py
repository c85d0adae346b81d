"""Every benchmark script still imports against the code it measures: a script whose import broke (a name it takes
from `benchmarks/common.py` or `ml/` was renamed or removed) is found here, not when someone re-runs it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py"))


def test_the_benchmarks_folder_holds_scripts():
    assert len(SCRIPTS) > 10, f"found only {[p.name for p in SCRIPTS]} in {BENCHMARKS}"


def load_script(script: Path, monkeypatch) -> ModuleType:
    """The benchmark script as a module (its `main` does not run)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their siblings (`common`, `serving_world`)
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_script_imports(script, monkeypatch):
    """Loaded as a module (its `main` does not run): every top-level import must resolve."""
    module = load_script(script, monkeypatch)
    assert module.__doc__, f"{script.name} has no docstring saying what it measures and how to run it"


def test_a_partial_gate_run_keeps_the_other_corpus(tmp_path, monkeypatch):
    """`gate_real.py --only coat` tables coat anew and keeps amazon2018-industrial's last result, dated, in the
    corpora's order (it wrote coat alone before, dropping the other corpus's figures)."""
    import json

    gate_real = load_script(BENCHMARKS / "gate_real.py", monkeypatch)
    previous = tmp_path / "gate-real.json"
    previous.write_text(
        json.dumps(
            {
                "machine": {"date": "2026-01-01T00:00:00+00:00"},
                "results": [{"corpus": "amazon2018-industrial", "status": "passed"}, {"corpus": "coat", "status": "x"}],
            }
        )
    )
    fresh = [{"corpus": "coat", "status": "failed", "measured": "2026-02-01T00:00:00+00:00"}]
    kept = gate_real.kept_results(fresh, previous)
    assert [r["corpus"] for r in kept] == ["amazon2018-industrial", "coat"]
    assert kept[0] == {"corpus": "amazon2018-industrial", "status": "passed", "measured": "2026-01-01T00:00:00+00:00"}
    assert kept[1]["status"] == "failed"
    assert gate_real.kept_results(fresh, tmp_path / "absent.json") == fresh


def test_a_scale_run_of_some_sizes_keeps_the_others_smallest_first(monkeypatch):
    """`pipeline.py --only scale --scale-items 100000` measures 100k again and keeps the 20k and 200k runs."""
    pipeline = load_script(BENCHMARKS / "pipeline.py", monkeypatch)
    previous = {"synthetic-200k": {"n": 3}, "synthetic-20k": {"n": 1}, "synthetic-100k": {"n": 2}}
    kept = pipeline.kept_scale(previous, [100_000])
    assert kept == {"synthetic-200k": {"n": 3}, "synthetic-20k": {"n": 1}}
    merged = pipeline.by_size({**kept, pipeline.scale_name(100_000): {"n": 4}})
    assert list(merged) == ["synthetic-20k", "synthetic-100k", "synthetic-200k"]
