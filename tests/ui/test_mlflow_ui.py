"""MLflow's model version page in a browser: the card renders, tags and alias show, the card's links open.

The version comes from the whole chain run small (`small_chain`); `mlflow server` serves its store. The card is
the version's description: MLflow renders it as Markdown, and its report links must be links inside the MLflow UI
(`#/experiments/<id>/runs/<run>/artifactPath/reports/<file>.html`) that open the run's artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.ui.harness import wait_for

pytestmark = [pytest.mark.ui, pytest.mark.slow]


def _version_page(driver, mlflow_ui, name: str, version: str) -> Any:
    """Open the version page; return the rendered description once it is there."""
    from selenium.webdriver.common.by import By

    driver.get(f"{mlflow_ui.url}/#/models/{name}/versions/{version}")
    return wait_for(
        "the rendered model card",
        lambda: [
            e
            for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid=note-editor-preview-content]")
            if "model card" in e.text.lower()  # the heading: "Gate passed: <name> v<n> (model card)"
        ],
        120,
        1,
    )[0]


def _text_after(body: str, label: str, lines: int = 4) -> str:
    rows = body.splitlines()
    at = next((i for i, row in enumerate(rows) if row.strip() == label), None)
    assert at is not None, f"no {label!r} on the page"
    return "\n".join(rows[at + 1 : at + 1 + lines])


def test_the_version_page_shows_the_card_tags_and_alias(browser, small_chain, mlflow_ui):
    from selenium.webdriver.common.by import By

    name, version = small_chain.summary["model_name"], str(small_chain.summary["model_version"])
    card = _version_page(browser, mlflow_ui, name, version)

    # the card is rendered Markdown, not its source: a heading, the gate's table, no literal markup
    assert card.find_element(By.TAG_NAME, "h1").text == f"Gate passed: {name} v{version} (model card)"  # verdict first
    assert "Gate: PASSED" in card.text
    table = card.find_element(By.TAG_NAME, "table")
    assert "quality_vs_baseline" in table.text
    assert "**" not in card.text and "](" not in card.text

    body = browser.find_element(By.TAG_NAME, "body").text
    assert "champion" in _text_after(body, "Aliases"), "the champion alias is not shown on the version"
    # the tags table: the gate's status and policy, each beside its value
    rows = {
        r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
        for r in browser.find_elements(By.CSS_SELECTOR, "table tr")
        if len(r.find_elements(By.TAG_NAME, "td")) >= 2
    }
    assert rows.get("gate.status") == "passed", f"gate.status not shown as passed: {rows.get('gate.status')!r}"
    assert rows.get("gate.policy", "").startswith("lenient@"), "gate.policy is not shown"


def test_the_cards_links_open_the_run_and_its_reports(browser, small_chain, mlflow_ui):
    from selenium.webdriver.common.by import By

    summary = small_chain.summary
    name, version = summary["model_name"], str(summary["model_version"])
    reports = {label: Path(path).name for label, path in summary["reports"].items() if isinstance(path, str)}
    assert reports, "the chain wrote no reports"
    card = _version_page(browser, mlflow_ui, name, version)
    links = {a.text: a.get_dom_attribute("href") for a in card.find_elements(By.TAG_NAME, "a")}
    assert links, (
        "the rendered card has no links at all (its Reports section is missing from the description: "
        "cut to the registry's length limit?)"
    )

    run_links = [
        href
        for href in links.values()
        if href and href.startswith("#/experiments/") and "/runs/" in href and "artifactPath" not in href
    ]
    assert run_links, f"no link to the MLflow run among {links}"
    for label, filename in reports.items():
        hrefs = [
            href
            for text, href in links.items()
            if f"reports/{filename}" in text or (href or "").split("?")[0].endswith(f"reports/{filename}")
        ]
        assert hrefs, f"the card has no link to the {label} report ({filename}); links: {links}"
        href = hrefs[0]
        assert href.startswith("#/experiments/") and f"/artifactPath/reports/{filename}" in href, (
            f"the {label} report's link {href!r} is not a link inside the MLflow UI to the run's artifact"
        )
