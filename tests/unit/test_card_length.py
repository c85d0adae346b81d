"""A model card longer than MLflow's 5,000-character description column is cut at a line, with a pointer."""

from ml.registry.card import CARD_ARTIFACT, DESCRIPTION_LIMIT, fit_description


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
