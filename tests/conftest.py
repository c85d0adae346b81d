"""Test-wide settings: offline model loading, a private Airflow home, and the shared corpora's location.

Airflow reads its configuration when first imported, so its environment is set here, before any test
module imports it. Each test that runs the chain gets its own VETTED_HOME (the `vetted_home` fixture).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="vetted-airflow-")
os.environ.setdefault("AIRFLOW_HOME", _AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


@pytest.fixture(scope="session")
def tokenizer():
    """MiniLM's tokenizer from the offline weights (the tiny models of tests/tiny_model.py use it too)."""
    from transformers import AutoTokenizer

    from ml.training.encoder import model_dir

    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def shared_data(name: str) -> Path:
    """A corpus folder in ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the real corpora live beside the repository in CI, not in a user's clone")
    return path


@pytest.fixture
def vetted_home(tmp_path, monkeypatch):
    """A fresh VETTED_HOME with the demo key allowed and MLflow pointed inside it."""
    home = tmp_path / "home"
    monkeypatch.setenv("VETTED_HOME", str(home))
    monkeypatch.setenv("VETTED_DEMO", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VETTED_PSEUDONYM_KEY", raising=False)
    return home


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The private Airflow home's metadata database, migrated once per session (for dag.test())."""
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
