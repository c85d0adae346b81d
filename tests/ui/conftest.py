"""The UIs in a real browser: headless Chromium driven by Selenium, against servers started here.

Each server runs in a process group of its own, on a free port, with its own home in a temporary folder,
and is stopped (its group only) when the tests that need it are done:
- `small_chain`: the whole chain (`vetted run`) on a small synthetic set, so a real version with a real card exists;
- `mlflow_ui`: `mlflow server` on that chain's SQLite store;
- `airflow_ui`: `airflow standalone` (API server, scheduler, DAG processor, triggerer) with our DAGs, few workers,
  DAGs paused at creation and no scheduled runs (`use_job_schedule` off): only the runs a test triggers run.
Chromium and its driver come from Debian (`apt-get install chromium chromium-driver`, what `.ci/run` does); where
they are missing, the tests skip and say so. A failed test leaves a screenshot and the page's HTML under
`$TMPDIR/vetted-ui-failures/`, named in the failure report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ui.harness import (
    BIN,
    CHAIN_TIMEOUT_S,
    ROOT,
    SMALL_RUN,
    AirflowUI,
    Chain,
    MlflowUI,
    Server,
    browser_binaries,
    clean_env,
    free_port,
    new_browser,
    save_page,
    write_lenient_policy,
)


@pytest.fixture
def browser(request) -> Iterator[Any]:
    """A headless Chromium; a failed test saves its screenshot (see pytest_runtest_makereport)."""
    driver = new_browser()
    request.node._vetted_browser = driver
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, save what the browser showed and name the files in the report."""
    outcome = yield
    report = outcome.get_result()
    driver = getattr(item, "_vetted_browser", None)
    if driver is None or report.passed or report.when != "call":
        return
    report.sections.append(("browser", save_page(driver, item.nodeid)))


@pytest.fixture(scope="session")
def small_chain(tmp_path_factory) -> Chain:
    """`vetted run` on the small synthetic set under a lenient policy: version 1, gate passed, champion."""

    browser_binaries()  # no browser, no point in training
    folder = tmp_path_factory.mktemp("ui-chain")
    home = folder / "home"
    policy = write_lenient_policy(folder / "lenient.yaml")
    args = [
        "--source",
        SMALL_RUN["source"],
        "--n-users",
        str(SMALL_RUN["n_users"]),
        "--n-items",
        str(SMALL_RUN["n_items"]),
        "--epochs",
        str(SMALL_RUN["epochs"]),
        "--max-steps",
        str(SMALL_RUN["max_steps"]),
        "--batch-size",
        str(SMALL_RUN["batch_size"]),
        "--no-slice-reports",
        "--policy",
        policy,
    ]
    log = folder / "chain.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "ml.cli", "run", *args],
            env=clean_env(home),
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=CHAIN_TIMEOUT_S,
        )
    assert done.returncode == 0, f"vetted run failed ({log}):\n{log.read_text(errors='replace')[-4000:]}"
    summaries = sorted((home / "runs").glob("*/summary.json"))
    assert summaries, f"vetted run wrote no summary.json under {home / 'runs'}"
    return Chain(home=home, summary=json.loads(summaries[-1].read_text()), log=log)


@pytest.fixture(scope="session")
def mlflow_ui(small_chain, tmp_path_factory) -> Iterator[MlflowUI]:
    """`mlflow server` over the small chain's tracking store (it serves the UI and the run artifacts)."""
    port = free_port()
    tracking = f"sqlite:///{small_chain.home / 'mlflow.db'}"
    log = tmp_path_factory.mktemp("ui-mlflow") / "mlflow.log"
    server = Server(
        "mlflow server",
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            tracking,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        clean_env(small_chain.home),
        log,
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_until("answers /health", lambda: httpx.get(f"{url}/health", timeout=5).status_code == 200, 300)
        yield MlflowUI(url=url, tracking_uri=tracking)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory) -> Iterator[AirflowUI]:
    """`airflow standalone` on free ports with our DAGs; every component's output in one log."""
    browser_binaries()
    folder = tmp_path_factory.mktemp("ui-airflow")
    home = folder / "home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(home)
    env.update(
        {
            "AIRFLOW_HOME": str(folder / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            # named as the Makefile's `airflow` target names it: each task is a process of its own, and a stage that
            # does not point MLflow at the home's store itself would otherwise read MLflow's default store
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            # 2 cores: few task slots, one API worker (the Makefile's `airflow` target does the same)
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            # a task's calls to the API server wait and retry longer than the defaults (5 s, 5 tries): on 2 busy cores
            # a run's first task was killed when its start call timed out
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
            "AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS": "10",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # paused at creation, and no cron runs: unpausing recsys_training would otherwise start last
            # Monday's full-size scheduled run beside the test's small one
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        }
    )
    server = Server("airflow standalone", [str(BIN / "airflow"), "standalone"], env, folder / "airflow.log").start()
    ui = AirflowUI(url=url, home=home, env=env, server=server)

    def healthy() -> bool:
        health = httpx.get(f"{url}/api/v2/monitor/health", timeout=10).json()
        return all(
            health.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        )

    def parsed() -> bool:
        return any(d["dag_id"] == "recsys_training" for d in ui.json("/dags?limit=100")["dags"])

    try:
        server.wait_until("every component is healthy", healthy, 600)
        server.wait_until("recsys_training is parsed", parsed, 300)
        yield ui
    finally:
        server.stop()
