"""The Games crowd benchmarks' own parts: seeded nested shopper subsets written outside the repository and read
back by the recbole source, the DP / twin ratio with its paired interval, and the curve's smallest crowd."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_data

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import games  # noqa: E402
import privacy_crowd  # noqa: E402

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "G.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tgame {i}\n" for i in range(8)))
    (folder / "G.valid.inter").write_text(HEADER + "u1\t0 1\t2\nu2\t3\t4\nu3\t5 6\t7\nu4\t0\t1\n")
    (folder / "G.test.inter").write_text(HEADER + "u1\t0 1 2\t3\nu2\t3 4\t5\nu3\t5 6 7\t0\nu4\t0 1\t2\n")
    return folder


def test_a_subset_keeps_the_chosen_shoppers_rows_and_the_whole_catalogue(tmp_path):
    from ml.data import recbole

    folder = _folder(tmp_path)
    out = games.write_subset(folder, ["u1", "u3"], tmp_path / "subset")
    assert (out / "G.valid.inter").read_text() == HEADER + "u1\t0 1\t2\nu3\t5 6\t7\n"
    assert (out / "G.test.inter").read_text() == HEADER + "u1\t0 1 2\t3\nu3\t5 6 7\t0\n"
    assert (out / "G.item").read_text() == (folder / "G.item").read_text()
    tables = recbole.load(out)
    assert sorted(tables.users["user_id"]) == ["u1", "u3"] and len(tables.items) == 8
    assert len(tables.events) == 8  # u1: 0 1 2 3, u3: 5 6 7 0


def test_subsets_of_one_seed_are_nested_and_seeds_differ(tmp_path):
    folder = _folder(tmp_path)
    assert games.shoppers(folder) == ["u1", "u2", "u3", "u4"]
    a, b = games.crowd_order(folder, 7), games.crowd_order(folder, 7)
    assert a == b and sorted(a) == ["u1", "u2", "u3", "u4"]
    orders = {tuple(games.crowd_order(folder, s)) for s in range(10)}
    assert len(orders) > 1


def test_a_subset_refuses_the_repository_and_unknown_shoppers(tmp_path):
    folder = _folder(tmp_path)
    with pytest.raises(ValueError, match="inside the repository"):
        games.write_subset(folder, ["u1"], ROOT / "benchmarks" / "results" / "subset")
    with pytest.raises(ValueError, match="not in"):
        games.write_subset(folder, ["u1", "nobody"], tmp_path / "subset")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .inter file"):
        games.shoppers(tmp_path / "empty")


def test_crowd_sizes_parse_all_and_reject_what_the_corpus_cannot_hold():
    assert games.parse_crowd("3000,all,100", 5000) == [100, 3000, 5000]
    for bad, message in (
        ("6000", "between 1 and"),
        ("0", "between 1 and"),
        ("many", "shopper counts"),
        ("", "shopper counts"),
    ):
        with pytest.raises(ValueError, match=message):
            games.parse_crowd(bad, 5000)


def test_the_twin_ratio_is_the_ndcg_ratio_with_a_paired_interval():
    rng = np.random.default_rng(0)
    users = [f"s{i % 300}" for i in range(600)]
    twin = rng.random(600)
    dp = twin * 0.9
    frame = lambda v: pd.DataFrame({"user_id": users, "ndcg.candidate": v})  # noqa: E731
    got = games.twin_ratio(frame(dp), frame(twin), seed=7)
    assert got["value"] == pytest.approx(0.9)
    # paired: every resample scales by the same 0.9, so the interval collapses onto it
    assert got["lower"] == pytest.approx(0.9) and got["upper"] == pytest.approx(0.9)
    noisy = games.twin_ratio(frame(np.clip(dp + rng.normal(0, 0.2, 600), 0, 1)), frame(twin), seed=7)
    assert noisy["lower"] < noisy["value"] < noisy["upper"]
    with pytest.raises(ValueError, match="different cases"):
        games.twin_ratio(frame(dp), pd.DataFrame({"user_id": users[::-1], "ndcg.candidate": twin}), seed=7)
    assert games.interval_text(got) == "0.900 [0.900, 0.900]" and games.interval_text(None) == "n/a"


def _point(n: int, seed: int, eps8: float, twin: float) -> dict:
    def setting(ndcg: float, auc: float, ratio: float | None) -> dict:
        out = {"ndcg_at_10": ndcg, "mia": {"auc": auc}}
        if ratio is not None:
            out["vs_twin"] = {"value": ratio}
        return out

    return {
        "shoppers": n,
        "seed": seed,
        "settings": {
            "eps1": setting(eps8 / 2, 0.5, eps8 / 2 / twin),
            "eps3": setting(eps8 / 1.5, 0.5, eps8 / 1.5 / twin),
            "eps8": setting(eps8, 0.51, eps8 / twin),
            "twin": setting(twin, 0.6, None),
        },
    }


def test_the_curve_averages_seeds_and_names_the_smallest_crowd_within_five_percent(tmp_path):
    points = [
        _point(3000, 7, 0.05, 0.10),
        _point(3000, 8, 0.07, 0.10),
        _point(10000, 7, 0.094, 0.10),
        _point(10000, 8, 0.097, 0.10),
        _point(25000, 7, 0.099, 0.10),
    ]
    rows = privacy_crowd.curve(points)
    assert [r["shoppers"] for r in rows] == [3000, 10000, 25000]
    assert rows[0]["eps8"]["vs_twin"] == pytest.approx(0.6) and rows[0]["twin"]["mia_auc"] == pytest.approx(0.6)
    assert privacy_crowd.smallest_crowd(rows) == 10000  # mean 0.955
    assert privacy_crowd.smallest_crowd(rows[:1]) is None
    assert rows[0]["eps8"]["vs_twin_range"] == pytest.approx([0.5, 0.7])
    text = privacy_crowd.markdown(
        {
            "curve": rows,
            "points": [],  # the per-point table is tested below
            "machine": {"date": "d", "cores": 2},
            "command": "c",
            "name": "n",
            "smallest_crowd": privacy_crowd.smallest_crowd(rows),
        }
    )
    assert "| 3000 (2 seeds) | 0.0300 (0.0250-0.0350) |" in text  # eps1: a mean over seeds with its range
    assert "| 25000 (1 seed) | 0.0495 |" in text  # one seed: no range to give
    assert "| 0.600 (0.500-0.700) |" in text  # eps8 / twin at 3000, with its range
    privacy_crowd.plot(rows, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_subset_of_the_games_corpus_reads_back_with_its_shoppers(tmp_path):
    from ml.data import recbole

    folder = shared_data("amazon2018-games")
    order = games.crowd_order(folder, 7)
    assert len(order) == 50546
    tables = recbole.load(games.write_subset(folder, order[:200], tmp_path / "subset"))
    assert len(tables.users) == 200 and len(tables.items) == 16859


def _full_point(n: int, eps8: float, twin: float) -> dict:
    def setting(ndcg: float, eps: float | None, ratio: float | None) -> dict:
        out = {
            "epsilon": eps,
            "ndcg_at_10": ndcg,
            "mia": {"auc": 0.5, "advantage": 0.02},
            "seconds_per_step": 1.0,
        }
        if ratio is not None:
            out["vs_twin"] = {"value": ratio, "lower": ratio - 0.01, "upper": ratio + 0.01}
        return out

    return {
        "shoppers": n,
        "seed": 7,
        "n_cases": n,
        "settings": {"eps8": setting(eps8, 7.99, eps8 / twin), "twin": setting(twin, None, None)},
    }


def test_the_crowd_markdown_states_the_smallest_crowd_or_that_none_reached_it():
    assert list(privacy_crowd.settings_for((1.0, 8.0))) == ["eps1", "eps8", "twin"]
    points = [_full_point(2000, 0.05, 0.10), _full_point(8000, 0.096, 0.10)]
    results = {"machine": {"date": "d", "cores": 2}, "command": "c", "name": "n", "points": points}
    results["curve"] = privacy_crowd.curve(points)
    results["smallest_crowd"] = privacy_crowd.smallest_crowd(results["curve"])
    text = privacy_crowd.markdown(results)
    assert "| 2000 | 7 | 2000 | eps8 | 7.99 | 0.0500 | 0.500 [0.490, 0.510] |" in text
    assert "**8000 shoppers**" in text
    results["points"], results["curve"] = points[:1], privacy_crowd.curve(points[:1])
    results["smallest_crowd"] = privacy_crowd.smallest_crowd(results["curve"])
    assert "**none of those measured** (2000)" in privacy_crowd.markdown(results)
    assert "not measured" not in privacy_crowd.markdown(results)
    results["crowd"] = [2000, 8000]  # a run stopped after its first point says what it lacks
    assert "Asked for but not measured (the run stopped first): 8000 shoppers." in privacy_crowd.markdown(results)


def test_the_quality_targets_table_averages_seeds_and_gives_the_verdict():
    import quality

    def seed(s: int, pp: float, tw: float) -> dict:
        def entry(v: float) -> dict:
            return {"value": v, "lower": v - 0.05, "upper": v + 0.05}

        return {
            "seed": s,
            "best_non_private_baseline": "cooccurrence",
            "best_non_private_baseline_ndcg": 0.06,
            "targets": {"price_of_privacy": entry(pp), "dp_vs_twin": entry(tw)},
        }

    text = "\n".join(quality.targets_table([seed(7, 1.2, 0.90), seed(8, 1.1, 0.94)]))
    assert "| 7 | cooccurrence 0.0600 | 1.200 [1.150, 1.250] | 0.900 [0.850, 0.950] |" in text
    assert "| mean | | 1.150 | 0.920 |" in text
    assert "| range over seeds | | 1.100-1.200 | 0.900-0.940 |" in text  # a figure comes with its spread
    assert "DP / best non-private 1.150 over 2 seed(s) meets 1.10" in text
    assert "DP / twin 0.920 over 2 seed(s) misses 0.95" in text
    assert quality.targets_table([{"seed": 7}]) == []


def test_a_later_run_keeps_the_points_it_does_not_measure_again(tmp_path):
    import json

    settings = ["eps8", "twin"]
    old = [{**_full_point(n, 0.05, 0.10), "shoppers": n} for n in (3000, 10000)]
    previous = tmp_path / "crowd.json"
    previous.write_text(json.dumps({"machine": {"date": "d0"}, "bounds": {"max_eval_cases": 5000}, "points": old}))
    kept = privacy_crowd.kept_points(previous, [10000, 25000], [7], {"max_eval_cases": 5000}, settings)
    assert [(p["shoppers"], p["measured"]) for p in kept] == [(3000, "d0")]
    assert privacy_crowd.kept_points(previous, [25000], [7], {"max_eval_cases": 0}, settings) == []  # other bounds
    assert privacy_crowd.kept_points(previous, [25000], [7], {"max_eval_cases": 5000}, ["eps1", "twin"]) == []
    assert privacy_crowd.kept_points(tmp_path / "absent.json", [25000], [7], {}, settings) == []


def test_a_later_quality_run_keeps_the_seeds_it_does_not_measure_again(tmp_path):
    import json

    import quality

    def entry(seed: int, seeds: list[int]) -> dict:
        return {"seed": seed, "candidate": f"detail of {seed}", "seeds": [{"seed": s} for s in seeds]}

    bounds = {"max_eval_cases": 10000}
    previous = tmp_path / "quality-games.json"
    old = {"machine": {"date": "d0"}, "command": "old", "split": "test", "bounds": bounds, "crowd": None}
    previous.write_text(json.dumps({**old, "datasets": {"games": entry(7, [7, 8])}}))

    kept = quality.kept_seeds(previous, "games", [8, 9], "test", bounds, None)
    # seed 8 is measured again: only seed 7 is kept, with its date and command
    assert [(s["seed"], s["measured"], s["command"]) for s in kept["seeds"]] == [(7, "d0", "old")]
    merged = quality.with_kept(entry(8, [8, 9]), kept)
    assert [s["seed"] for s in merged["seeds"]] == [7, 8, 9]
    assert merged["candidate"] == "detail of 7"  # the tables detail the smallest seed
    assert quality.with_kept(entry(8, [8]), None) == entry(8, [8])
    # another corpus, split, bounds or crowd, or nothing left to keep: nothing kept
    assert quality.kept_seeds(previous, "coat", [9], "test", bounds, None) is None
    assert quality.kept_seeds(previous, "games", [9], "dev", bounds, None) is None
    assert quality.kept_seeds(previous, "games", [9], "test", {"max_eval_cases": 0}, None) is None
    assert quality.kept_seeds(previous, "games", [9], "test", bounds, 3000) is None
    assert quality.kept_seeds(previous, "games", [7, 8], "test", bounds, None) is None
    assert quality.kept_seeds(tmp_path / "absent.json", "games", [9], "test", bounds, None) is None


def test_the_quality_seeds_table_gives_the_mean_and_the_range_over_seeds():
    import quality

    def summary(seed: int, ndcg: float) -> dict:
        figures = dict.fromkeys(
            ("candidate_ndcg", "candidate_ndcg_no_rerank", "best_baseline_ndcg", "no_dp_ndcg", "no_dp_ndcg_no_rerank"),
            ndcg,
        )
        ratios = dict.fromkeys(("ratio", "ratio_no_rerank", "no_dp_ratio", "no_dp_ratio_no_rerank"), 1.0)
        return {"seed": seed, "best_baseline": "cooccurrence", **figures, **ratios}

    text = "\n".join(quality.seeds_table([summary(7, 0.03), summary(8, 0.05)]))
    assert "| mean | 0.0400 | 0.0400 | 0.0400 | 1.000 |" in text
    assert "| range over seeds | 0.0300-0.0500 | 0.0300-0.0500 | 0.0300-0.0500 | 1.000-1.000 |" in text
