"""The Airflow task links open the MLflow UI's own pages, on its model-training view."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from vetted_links import reports_link, version_link  # noqa: E402


def test_the_version_link_opens_the_version_page_on_the_model_training_view():
    assert version_link("http://mlflow.internal:5000", "vetted-recsys", "7") == (
        "http://mlflow.internal:5000/#/models/vetted-recsys/versions/7?workflowType=machine_learning"
    )
    assert "/#/models/shop%20models%2Fa/versions/" in version_link("http://m", "shop models/a", "1")


def test_the_reports_link_opens_the_run_s_reports_folder_in_the_artifact_view():
    assert reports_link("http://m:5000", "3", "abc123") == (
        "http://m:5000/#/experiments/3/runs/abc123/artifactPath/reports?workflowType=machine_learning"
    )
