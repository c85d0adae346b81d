"""A model card longer than MLflow's 5,000-character description column is cut at a line, with a pointer."""

import pytest

from ml.registry.card import (
    CARD_ARTIFACT,
    DESCRIPTION_LIMIT,
    artifact_page,
    fit_description,
    headline,
    is_headline,
    run_page,
)


def test_a_card_that_fits_is_kept_whole():
    card = "# Model card\n\n## Gate decision\npassed\n"
    assert fit_description(card) == card


def test_a_long_card_is_cut_at_a_line_and_points_to_the_full_card():
    head = "# Model card: m v1\n\n## Gate decision\n- quality passed\n\n## Reports\n"
    card = head + "".join(f"- [slice {i}](/runs/r/reports/slice_{i:04d}.html)\n" for i in range(400))
    assert len(card) > DESCRIPTION_LIMIT
    short = fit_description(card)
    assert len(short) <= DESCRIPTION_LIMIT
    assert short.startswith(head) and CARD_ARTIFACT in short and f"{len(card):,} characters" in short
    body = short[: short.index("\n*Shortened")]
    assert card.startswith(body) and body.endswith("\n")  # whole lines only


def test_the_note_links_the_full_card_when_given_its_ui_fragment():
    card = "# Gate passed: m v1 (model card)\n\n" + "".join(f"- line {i:04d} " + "x" * 60 + "\n" for i in range(200))
    link = artifact_page("1", "abc", CARD_ARTIFACT)
    short = fit_description(card, full_card=link)
    assert len(short) <= DESCRIPTION_LIMIT and f"[{CARD_ARTIFACT}]({link})" in short


def test_ui_fragments_are_relative_to_the_tracking_server():
    assert run_page("3", "r1") == "#/experiments/3/runs/r1"
    assert artifact_page("3", "r1", "reports/slices/ranking_age_band_65+.html") == (
        "#/experiments/3/runs/r1/artifactPath/reports/slices/ranking_age_band_65%2B.html"
    )
    for bad in ("/tmp/home/runs/x/reports/drift.html", "../other/drift.html", ""):
        with pytest.raises(ValueError, match="relative to the run's artifact root"):
            artifact_page("3", "r1", bad)


def test_the_first_line_says_the_decision_within_the_registry_list_s_32_characters():
    for status, words in (
        ("failed", "FAILED"),
        ("rejected", "REJECTED"),
        ("pending", "not run"),
        ("pending_approval", "awaiting"),
    ):
        line = headline(status, "vetted-recsys", "12")
        assert words in line[:32] and is_headline(line), line
    assert not is_headline("# Model card: vetted-recsys v1") and not is_headline("Gate not run yet.")
