from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.privacy.mia import AUDIT_SHARE, loss_attack, membership_inference_audit, split_audit_users


def test_perfect_separation():
    r = membership_inference_audit(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.3]))
    assert r == {"auc": 1.0, "advantage": 1.0, "tpr_at_1pct_fpr": 1.0, "n_members": 3, "n_nonmembers": 3}


def test_lower_means_member_for_losses():
    losses_members, losses_nonmembers = np.array([0.1, 0.2]), np.array([2.0, 3.0])
    assert membership_inference_audit(losses_members, losses_nonmembers, higher_means_member=False)["auc"] == 1.0
    assert membership_inference_audit(losses_members, losses_nonmembers)["auc"] == 0.0


def test_hand_worked_example():
    # member > non-member in 6 of 9 pairs: 0.8 beats all three, 0.6 beats 0.5 and 0.3, 0.4 beats 0.3
    # ranked: .8 M, .7 N, .6 M, .5 N, .4 M, .3 N -> TPR-FPR at the cuts: 1/3, 0, 1/3, 0, 1/3, 0
    r = membership_inference_audit(np.array([0.8, 0.4, 0.6]), np.array([0.5, 0.3, 0.7]))
    assert r["auc"] == pytest.approx(6 / 9)
    assert r["advantage"] == pytest.approx(1 / 3)
    assert r["tpr_at_1pct_fpr"] == pytest.approx(1 / 3)  # before the first false positive


def test_ties_are_coin_flips():
    r = membership_inference_audit(np.full(4, 0.5), np.full(4, 0.5))
    assert r["auc"] == pytest.approx(0.5)
    assert r["advantage"] == pytest.approx(0.0)


def test_identical_distributions_give_chance():
    rng = np.random.default_rng(1)
    r = membership_inference_audit(rng.normal(size=4000), rng.normal(size=4000))
    assert r["auc"] == pytest.approx(0.5, abs=0.02)
    assert r["advantage"] < 0.05
    assert r["tpr_at_1pct_fpr"] < 0.03


def test_shifted_distribution_has_known_auc():
    # AUC of N(d,1) vs N(0,1) is Phi(d / sqrt 2): d = 1 -> 0.7602
    rng = np.random.default_rng(2)
    r = membership_inference_audit(rng.normal(1.0, size=20000), rng.normal(size=20000))
    assert r["auc"] == pytest.approx(0.7602, abs=0.01)


def test_balanced_by_subsampling_with_fixed_seed():
    rng = np.random.default_rng(3)
    members, nonmembers = rng.normal(0.5, size=50), rng.normal(size=1000)
    first = membership_inference_audit(members, nonmembers)
    assert first["n_members"] == first["n_nonmembers"] == 50
    assert membership_inference_audit(members, nonmembers) == first
    assert membership_inference_audit(members, nonmembers, seed=9)["auc"] != first["auc"]


def test_bad_input():
    with pytest.raises(ValueError, match="empty"):
        membership_inference_audit(np.array([]), np.array([0.1]))
    with pytest.raises(ValueError, match="non-finite"):
        membership_inference_audit(np.array([0.1, np.nan]), np.array([0.1]))


def test_the_audit_holds_out_a_tenth_of_the_shoppers_the_same_way_each_time():
    users = np.array([f"u{i}" for i in range(200)])
    members, audit = split_audit_users(users, seed=3)
    assert len(audit) == int(200 * AUDIT_SHARE) and not members & audit and members | audit == set(users)
    assert split_audit_users(users[::-1].copy(), seed=3) == (members, audit)  # the order given does not matter
    assert split_audit_users(users[:10], seed=3)[1] == set()  # too few to hold any out


class _Memorizer:
    """Scores each trained shopper's own next item far above the rest, and nothing else."""

    def __init__(self, trained: set[str], rows: pd.DataFrame) -> None:
        self.index_of = {f"i{j}": j for j in range(5)}
        mine = rows[rows["user_id"].isin(trained)]
        self._target_of = {tuple(h): self.index_of[t] for h, t in zip(mine["history"], mine["item_id"], strict=True)}

    def history_vectors(self, histories: list[list[str]]) -> list[list[str]]:
        return histories

    def scores(self, histories: list[list[str]]) -> np.ndarray:
        out = np.zeros((len(histories), 5))
        for row, h in enumerate(histories):
            if tuple(h) in self._target_of:
                out[row, self._target_of[tuple(h)]] = 10.0
        return out


def test_the_loss_attack_finds_the_shoppers_a_model_memorized():
    rows = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(40)],
            "kind": "next_item",
            "history": [[f"h{i}"] for i in range(40)],
            "item_id": [f"i{i % 5}" for i in range(40)],
        }
    )
    members, nonmembers = {f"u{i}" for i in range(20)}, {f"u{i}" for i in range(20, 40)}
    result = loss_attack(_Memorizer(members, rows), rows, members, nonmembers, seed=0)
    assert result["auc"] == 1.0 and result["n_members"] == result["n_nonmembers"] == 20
    assert "loss threshold" in result["attack"]
