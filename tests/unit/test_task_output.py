"""A healthy task's log has no ERROR lines: Airflow logs everything a task writes to stderr as ERROR, so inside a
stage task library logging keeps its own level and printed text (progress bars, stray prints) is INFO."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from vetted_operators import library_output_to_log  # noqa: E402


def test_library_output_reaches_the_log_at_its_level_and_nothing_reaches_stderr(capfd, caplog):
    import mlflow  # noqa: F401 (attaches its own stderr handler to the `mlflow` logger)

    caplog.set_level(logging.INFO)
    with library_output_to_log():
        logging.getLogger("mlflow.tracking").info("Registered model 'vetted-recsys'")
        print("train: 50%|#####     | 3/6 [00:01<00:01]\rtrain: 100%|##########| 6/6", file=sys.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library's notice", UserWarning, stacklevel=1)
    assert capfd.readouterr().err == ""
    levels = {r.getMessage(): r.levelname for r in caplog.records}
    assert levels["Registered model 'vetted-recsys'"] == "INFO"
    assert levels["train: 100%|##########| 6/6"] == "INFO"
    assert any("a library's notice" in m and lvl == "WARNING" for m, lvl in levels.items())
    assert "ERROR" not in levels.values()
