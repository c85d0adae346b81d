"""The model card shows each interval, the bar and what each baseline learns, the price of privacy, and which
rule decided each fairness check."""

from __future__ import annotations

from ml.registry.card import model_card


def _ci(value: float, lower: float, upper: float) -> dict:
    return {"value": value, "lower": lower, "upper": upper, "confidence": 0.95}


def _card(gate_rule: str = "no_worse_than_alternatives", **evaluation_extra: object) -> str:
    metrics = {"ndcg_at_10": 0.1074, "recall_at_10": 0.2, "mrr": 0.09}
    evaluation = {
        "k": 10,
        "n_cases": 4533,
        "mia": {"auc": 0.5},
        "drift": {"share_drifted": 0.0},
        "candidate": {
            "metrics": metrics,
            "beyond": {"coverage": 0.3},
            "provider": {"ratio": 0.9},
            "user_fairness": {
                "activity": {
                    "by_group": {"light": {"ndcg": 0.09, "n": 2000}, "heavy": {"ndcg": 0.12, "n": 2533}},
                    "ratio": {"ndcg": 0.75},
                }
            },
        },
        "baselines": {
            "cooccurrence": {"metrics": {**metrics, "ndcg_at_10": 0.1027}, "beyond": {}, "learns": "non_private"},
            "dp_cooccurrence": {"metrics": {**metrics, "ndcg_at_10": 0.0950}, "beyond": {}, "learns": "private"},
            "bm25": {"metrics": {**metrics, "ndcg_at_10": 0.0760}, "beyond": {}, "learns": "public"},
        },
        "best_baseline": "dp_cooccurrence",
        "best_non_private_baseline": "cooccurrence",
        "uncertainty": {
            "method": {"confidence": 0.95, "n_resamples": 1000, "n_shoppers": 4000, "n_cases": 4533, "seed": 7},
            "ndcg": {
                "candidate": _ci(0.1074, 0.0991, 0.1160),
                "dp_cooccurrence": _ci(0.0950, 0.0870, 0.1030),
                "cooccurrence": _ci(0.1027, 0.0950, 0.1110),
                "bm25": _ci(0.0760, 0.0700, 0.0820),
            },
            "candidate_minus": {"dp_cooccurrence": _ci(0.0124, 0.0061, 0.0190)},
            "price_of_privacy": {"baseline": "cooccurrence", **_ci(1.046, 0.99, 1.10)},
            "user_ndcg_ratio": {
                "candidate": {"activity": _ci(0.75, 0.70, 0.80)},
                "dp_cooccurrence": {"activity": _ci(0.73, 0.68, 0.78)},
            },
        },
    }
    return model_card(
        name="m",
        version="2",
        config={
            "source": "amazon2018",
            "trainable_layers": 1,
            "batch_size": 256,
            "learning_rate": 1e-4,
            "temperature": 0.05,
        },
        features={
            "window": {"train_start": "a", "split_time": "b", "holdout_end": "c"},
            "n_train_examples": 1,
            "n_train_search_examples": 0,
        },
        ingest={"read": {}, "accepted": {}, "quarantined": {}},
        train={
            "privacy": {"dp": True, "epsilon": 8.0, "delta": 1e-4, "mechanisms": []},
            "n_users": 3000,
            "audit_users": [],
            "steps": 1,
            "epochs": 1.0,
            "device": "cpu",
            "seconds": 1.0,
        },
        evaluation={**evaluation, **evaluation_extra},
        pii_findings=0,
        smoke=None,
        gate={
            "status": "passed",
            "policy_label": "p@1",
            "summary_markdown": "",
            "alternatives": [{"attribute": "activity", "rule": gate_rule, "status": "pass"}],
        },
        champion=None,
        links={},
    )


def test_the_card_shows_intervals_the_bar_and_the_price_of_privacy() -> None:
    card = _card()
    assert "| **candidate** | private: DP | 0.1074 [0.0991, 0.1160] |" in card
    assert (
        "| dp_cooccurrence (**bar**: best shippable) | private: DP, the candidate's budget | "
        "0.0950 [0.0870, 0.1030] | 0.0124 [0.0061, 0.0190] |"
    ) in card
    assert "| cooccurrence (best non-private) | non-private: raw shopper counts |" in card
    assert "**Price of privacy**: candidate / cooccurrence (best non-private) = 1.046 [0.990, 1.100]" in card
    assert "post-processing of an output already released under the candidate's epsilon and delta" in card
    assert "1000 resamples of the 4000 shoppers" in card


def test_the_card_says_which_rule_passed_a_fairness_check() -> None:
    assert (
        "| activity | 0.750 [0.700, 0.800] | 0.730 [0.680, 0.780] | n/a | **fallback: no less fair than the "
        "alternatives** (pass) |"
    ) in _card()
    assert "| threshold (pass) |" in _card("threshold")
