"""Airflow's UI in a browser: the trigger form of recsys_training, a small run through to the gate, the reviewer.

One `airflow standalone` serves the module. Its DAGs are paused at creation and it schedules no cron runs, so a
form submitted with "Unpause on trigger" off only queues its run (the defaults are a full-size run: it is
checked, then deleted). The small run is triggered from the same form with small values, a policy that lets a
6-step model pass and approval required; the reviewer then approves it on the Required Actions page.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.ui.harness import (
    CHAIN_TIMEOUT_S,
    SMALL_RUN,
    AirflowUI,
    new_browser,
    save_page,
    wait_for,
    write_lenient_policy,
)

pytestmark = [pytest.mark.ui, pytest.mark.slow]

DAG = "recsys_training"
BEFORE_GATE = ("prepare", "ingest", "features", "train", "evaluate", "register", "gate")


# ---------------------------------------------------------------------------------------------------
# the page's pieces (Airflow 3.3's React UI: Chakra components, Monaco for the JSON conf)


def open_trigger_form(driver, ui: AirflowUI) -> Any:
    """The DAG page's Trigger dialog, its Run Parameters expanded; returns the dialog element."""
    from selenium.webdriver.common.by import By

    driver.get(f"{ui.url}/dags/{DAG}")
    wait_for("the Trigger button", lambda: _clickable(driver, "button[aria-label='Trigger Dag']"), 120, 1).click()
    wait_for("the form's n_users field", lambda: driver.find_elements(By.NAME, "element_n_users"), 60, 1)
    return _dialog(driver)


def _clickable(driver, css: str) -> Any:
    from selenium.webdriver.common.by import By

    found = [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed() and e.is_enabled()]
    return found[0] if found else None


def _dialog(driver) -> Any:
    from selenium.webdriver.common.by import By

    shown = [d for d in driver.find_elements(By.CSS_SELECTOR, "[role=dialog]") if d.is_displayed()]
    assert shown, "no dialog is open"
    return shown[-1]


def _button(scope, text: str) -> Any:
    from selenium.webdriver.common.by import By

    found = [b for b in scope.find_elements(By.TAG_NAME, "button") if b.text.strip() == text and b.is_displayed()]
    assert found, f"no {text!r} button here"
    return found[-1]


def _checkbox_labelled(dialog, text: str) -> Any:
    """The checkbox input whose label reads `text` (Chakra hides the input; its label takes the click)."""
    from selenium.webdriver.common.by import By

    labels = [lb for lb in dialog.find_elements(By.CSS_SELECTOR, "label") if text in lb.text]
    assert labels, f"no checkbox labelled {text!r}"
    return labels[0], labels[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]")


def set_field(driver, name: str, value: str) -> None:
    """Replace a text or number field's value as a person would: select all, type."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    for _ in range(3):  # on a busy machine the page can drop a key: type again until the field holds the value
        field = driver.find_element(By.NAME, f"element_{name}")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", field)
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        for char in value:
            field.send_keys(char)
            time.sleep(0.02)
        field.send_keys(Keys.TAB)  # number fields settle (clamp, format) on blur
        time.sleep(0.5)
        if driver.find_element(By.NAME, f"element_{name}").get_attribute("value") == value:
            return
    pytest.fail(
        f"the form's {name} field holds "
        f"{driver.find_element(By.NAME, f'element_{name}').get_attribute('value')!r}, not {value!r}"
    )


def set_switch(driver, name: str, on: bool) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.NAME, f"element_{name}")
    if box.is_selected() != on:
        control = box.find_element(By.XPATH, "./ancestor::label[1]")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", control)
        control.click()
    assert driver.find_element(By.NAME, f"element_{name}").is_selected() == on, f"{name} did not switch"


def set_conf_json(driver, dialog, text: str) -> None:
    """Replace the Advanced Options' Configuration JSON (a Monaco editor) by typing `text` into it."""
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _button(dialog, "Advanced Options").click()

    def focused() -> bool | None:
        """Click into the editor; None while the opening section still moves and another element takes the click."""
        lines = _clickable(driver, ".monaco-editor .view-lines")
        if lines is None:
            return None
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", lines)
        try:
            lines.click()
        except ElementClickInterceptedException:
            return None
        return driver.execute_script("return !!document.activeElement.closest('.monaco-editor')") or None

    wait_for("the Configuration JSON editor to take the focus", focused, 60, 1)
    ActionChains(driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys(Keys.DELETE).perform()
    for char in text:  # one key at a time: Monaco drops keys sent faster than it handles them on a busy machine
        ActionChains(driver).send_keys(char).perform()
        time.sleep(0.05)
    shown = driver.find_element(By.CSS_SELECTOR, ".monaco-editor .view-lines").text
    assert "".join(shown.split()) == "".join(text.split()), f"the editor holds {shown!r}, not {text!r}"


def new_run(ui: AirflowUI, before: set[str], timeout: float = 60) -> dict[str, Any]:
    """The one DAG run created since `before` (the set of run ids seen earlier)."""

    def created():
        fresh = [r for r in ui.runs() if r["dag_run_id"] not in before]
        return fresh[0] if len(fresh) == 1 else None

    return wait_for("a new recsys_training run", created, timeout)


# ---------------------------------------------------------------------------------------------------
def test_the_trigger_forms_defaults_are_valid_and_submit(browser, airflow_ui):
    from selenium.webdriver.common.by import By

    from ml.config import RunConfig

    ui = airflow_ui
    params = ui.json(f"/dags/{DAG}/details")["params"]
    before = {r["dag_run_id"] for r in ui.runs()}
    paused = ui.api("PATCH", f"/dags/{DAG}", json={"is_paused": True})  # so that the full-size run never starts
    assert paused.status_code == 200, paused.text
    dialog = open_trigger_form(browser, ui)

    # every Param has a field, prefilled with its default, and every field has its description beside it
    for name, spec in params.items():
        fields = browser.find_elements(By.NAME, f"element_{name}")
        assert fields, f"the form has no field for {name}"
        assert spec.get("description"), f"Param {name} has no description"
        assert spec["description"][:40] in dialog.text, f"{name}'s description is not shown"
    assert browser.find_element(By.NAME, "element_n_users").get_attribute("value") == str(params["n_users"]["value"])

    # the defaults are a full-size run: queue it without unpausing the DAG, so it never starts
    label, unpause = _checkbox_labelled(dialog, "Unpause")
    if unpause.is_selected():
        label.click()
    assert not unpause.is_selected()
    _button(dialog, "Trigger").click()
    run = new_run(ui, before)
    try:
        assert "Failed to Trigger" not in browser.find_element(By.TAG_NAME, "body").text
        conf = run["conf"]
        assert set(conf) == set(params), f"the form sent {sorted(conf)}, the DAG has {sorted(params)}"
        assert conf == {name: spec["value"] for name, spec in params.items()}, "the form did not send the defaults"
        # the run's first task builds its configuration from exactly these values: they must be valid there too
        config = RunConfig.from_dict({**conf, "ingest_date": "2026-01-05", "run_name": run["dag_run_id"]})
        assert config.source == "synthetic" and config.policy == "" and config.path == ""
    finally:
        ui.api("DELETE", f"/dags/{DAG}/dagRuns/{run['dag_run_id']}")


def test_an_invalid_value_is_refused_with_a_clear_message(browser, airflow_ui):
    from selenium.webdriver.common.by import By

    ui = airflow_ui
    before = {r["dag_run_id"] for r in ui.runs()}
    dialog = open_trigger_form(browser, ui)
    set_conf_json(browser, dialog, '{"n_users": 10}')
    _button(dialog, "Trigger").click()

    def message() -> str:
        text = browser.find_element(By.TAG_NAME, "body").text
        return text if "n_users" in text and "minimum" in text else ""

    shown = wait_for("a message naming n_users and its minimum", message, 60, 1)
    assert "10 is less than the minimum of 50" in shown
    assert {r["dag_run_id"] for r in ui.runs()} == before, "an invalid run was created"


# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_at_review(airflow_ui, tmp_path_factory) -> dict[str, Any]:
    """A small run triggered from the form (DAG unpaused on trigger), followed until the reviewer is asked."""
    ui = airflow_ui
    policy = write_lenient_policy(tmp_path_factory.mktemp("ui-policy") / "lenient.yaml")
    before = {r["dag_run_id"] for r in ui.runs()}
    driver = new_browser()
    try:
        dialog = open_trigger_form(driver, ui)
        for name in ("n_users", "n_items", "epochs", "max_steps", "batch_size"):
            set_field(driver, name, str(SMALL_RUN[name]))
        set_field(driver, "policy", policy)
        set_switch(driver, "slice_reports", False)
        set_switch(driver, "require_approval", True)
        if ui.json(f"/dags/{DAG}")["is_paused"]:  # the form offers "Unpause on trigger" only for a paused DAG
            label, unpause = _checkbox_labelled(dialog, "Unpause")
            if not unpause.is_selected():
                label.click()
            assert unpause.is_selected()
        _button(dialog, "Trigger").click()
        run = new_run(ui, before)
    except BaseException:
        print(save_page(driver, "run_at_review"))
        raise
    finally:
        driver.quit()
    conf = run["conf"]
    assert {k: conf[k] for k in ("n_users", "n_items", "epochs", "max_steps", "batch_size", "slice_reports")} == {
        k: SMALL_RUN[k] for k in ("n_users", "n_items", "epochs", "max_steps", "batch_size", "slice_reports")
    }
    assert conf["policy"] == policy and conf["require_approval"] is True

    run_id = run["dag_run_id"]

    def at_review() -> dict[str, str | None] | None:
        states = ui.task_states(run_id)
        broken = {t: s for t, s in states.items() if s in ("failed", "upstream_failed")}
        if broken:
            logs = "\n".join(f"--- {t}:\n{ui.task_log(run_id, t)}" for t, s in broken.items() if s == "failed")
            pytest.fail(f"run {run_id} failed before the review: {broken} (log {ui.server.log})\n{logs}")
        return states if states.get("review") == "awaiting_input" else None

    states = wait_for(f"run {run_id} reaching the review step", at_review, CHAIN_TIMEOUT_S, 10)
    return {"run_id": run_id, "states": states, "policy": policy}


def test_a_small_run_triggered_from_the_form_goes_through_to_the_gate(airflow_ui, run_at_review):
    states = run_at_review["states"]
    assert {t: states[t] for t in BEFORE_GATE} == dict.fromkeys(BEFORE_GATE, "success")
    assert states["review"] == "awaiting_input"
    assert states["promote"] == "skipped" and states["keep_champion"] == "skipped"


def test_the_reviewer_approves_the_pending_version_on_the_required_actions_page(browser, airflow_ui, run_at_review):
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    ui, run_id = airflow_ui, run_at_review["run_id"]
    browser.get(f"{ui.url}/required_actions?response_received=false")

    # the pending request is listed by its subject; it links to the review form
    def request_link():
        links = [a for a in browser.find_elements(By.TAG_NAME, "a") if "approval is needed" in a.text]
        return links[0] if links else None

    wait_for("the pending review on the Required Actions page", request_link, 120, 2).click()
    note = "card read in the browser test"

    def review_form():
        text = browser.find_element(By.TAG_NAME, "body").text
        return "quality_vs_baseline" in text and _clickable(browser, "textarea, input[name='element_note']")

    wait_for("the review form with the gate's table", review_form, 120, 2)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "gate passed" in body.lower() and "v1" in body, "the reviewer does not see what the gate decided"
    note_field = browser.find_elements(By.NAME, "element_note") or browser.find_elements(By.TAG_NAME, "textarea")
    note_field[0].send_keys(note)
    _button(browser, "Approve").click()

    def finished() -> dict[str, str | None] | None:
        states = ui.task_states(run_id)
        if states.get("record_rejection") == "success" or states.get("promote_approved") == "failed":
            pytest.fail(f"the approval did not go through: {states}")
        return states if states.get("promote_approved") == "success" else None

    states = wait_for("record_approval and promote_approved after the approval", finished, 600, 5)
    assert states["record_approval"] == "success" and states["record_rejection"] == "skipped"

    tracking = f"sqlite:///{ui.home / 'mlflow.db'}"
    client = MlflowClient(tracking, registry_uri=tracking)
    champion = client.get_model_version_by_alias("vetted-recsys", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["gate.status"] == "approved"
    assert champion.tags["gate.review_note"] == note
