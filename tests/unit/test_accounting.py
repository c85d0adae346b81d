from __future__ import annotations

import math

import numpy as np
import pytest

from ml.privacy.accounting import (
    MAX_DENSE_ITEMS,
    PrivacyPlan,
    capped_pairs,
    composed_epsilon,
    default_delta,
    noisy_counts,
    plan_budget,
    privacy_metrics,
    privacy_record,
)

DELTA = 1e-5
Q, STEPS = 0.085, 60


def _counts(sequences, n_items, per_user, sigma, rng, noise=None):
    """The released transition counts as ml.privacy.transitions builds them: capped pairs, then noise."""
    return noisy_counts(
        capped_pairs(sequences, n_items, per_user, rng), n_items, per_user, sigma, rng if noise is None else noise
    )


def test_default_delta_is_below_one_over_n():
    assert default_delta(1000) == pytest.approx(10**-3.3)
    assert default_delta(3000) < 1 / 3000
    with pytest.raises(ValueError):
        default_delta(1)


def test_gaussian_mechanism_matches_its_rdp_by_hand():
    # the Gaussian mechanism at noise sigma has RDP alpha / (2 sigma^2); Opacus converts RDP to (eps, delta) with
    # eps = min_alpha rdp - (log delta + log alpha) / (alpha - 1) + log((alpha - 1) / alpha)
    sigma = 4.0
    alphas = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)), dtype=float)
    rdp = alphas / (2 * sigma**2)
    eps = rdp - (np.log(DELTA) + np.log(alphas)) / (alphas - 1) + np.log((alphas - 1) / alphas)
    assert composed_epsilon(None, Q, STEPS, sigma, DELTA) == pytest.approx(float(eps.min()), rel=1e-9)


def test_epsilon_decreases_with_more_noise():
    sgd = [composed_epsilon(z, Q, STEPS, None, DELTA) for z in (0.6, 0.8, 1.0, 1.5, 3.0)]
    assert all(a > b for a, b in zip(sgd, sgd[1:], strict=False))
    counts = [composed_epsilon(1.0, Q, STEPS, s, DELTA) for s in (0.5, 1.0, 2.0, 8.0)]
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False))
    assert counts[-1] > composed_epsilon(1.0, Q, STEPS, None, DELTA)


def test_composition_is_between_the_max_and_the_sum():
    both = composed_epsilon(1.0, Q, STEPS, 2.0, DELTA)
    alone = composed_epsilon(1.0, Q, STEPS, None, DELTA), composed_epsilon(None, Q, STEPS, 2.0, DELTA)
    assert max(alone) < both < sum(alone)


@pytest.mark.parametrize(("target", "share"), [(8.0, 0.3), (3.0, 0.0), (1.0, 0.5)])
def test_plan_meets_the_target(target, share):
    plan = plan_budget(target, DELTA, Q, STEPS, share, transitions_per_user=8)
    assert isinstance(plan, PrivacyPlan) and plan.accountant == "rdp"
    assert 0.98 * target <= plan.epsilon_total <= target
    assert plan.epsilon_total == pytest.approx(
        composed_epsilon(plan.noise_multiplier, Q, STEPS, plan.transitions_sigma, DELTA)
    )
    assert plan.epsilon_sgd <= plan.epsilon_total
    if share == 0:
        assert plan.transitions_sigma is None and plan.epsilon_transitions == 0.0
        assert len(plan.mechanisms()) == 1
    else:
        assert plan.epsilon_transitions == pytest.approx(share * target, rel=0.02)
        assert plan.epsilon_transitions <= share * target
        assert [m["epsilon_alone"] for m in plan.mechanisms()] == [plan.epsilon_sgd, plan.epsilon_transitions]


def test_smaller_budget_needs_more_noise():
    noise = [plan_budget(eps, DELTA, Q, STEPS, 0.3, 8).noise_multiplier for eps in (8.0, 3.0, 1.0)]
    assert noise[0] < noise[1] < noise[2]
    # spending part of the budget on the counts leaves DP-SGD less: more noise than without them
    assert plan_budget(3.0, DELTA, Q, STEPS, 0.0, 8).noise_multiplier < noise[1]


def test_plan_rejects_bad_input():
    with pytest.raises(ValueError, match="transitions_share"):
        plan_budget(8.0, DELTA, Q, STEPS, 1.0, 8)
    with pytest.raises(ValueError, match="delta"):
        plan_budget(8.0, 0.0, Q, STEPS, 0.3, 8)
    with pytest.raises(ValueError, match="sample_rate"):
        plan_budget(8.0, DELTA, 1.5, STEPS, 0.3, 8)


def test_counts_without_noise_by_hand():
    sequences = [[0, 1, 2, 1], [2, 0], [1, 1, 1], [2]]
    counts = _counts(sequences, n_items=3, per_user=10, sigma=None, rng=np.random.default_rng(0))
    # shopper 0: (0,1) (1,2) (2,1); shopper 1: (2,0); shopper 2: (1,1) twice but distinct once; shopper 3: none
    expected = np.array([[0, 1, 0], [0, 1, 1], [1, 1, 0]], dtype=np.float32)
    assert counts.dtype == np.float32
    np.testing.assert_array_equal(counts, expected)


def test_a_repeated_pair_counts_once_per_shopper():
    counts = _counts([[0, 1, 0, 1, 0, 1]], 2, per_user=10, sigma=None, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(counts, np.array([[0, 1], [1, 0]], dtype=np.float32))


def test_per_user_cap():
    rng = np.random.default_rng(0)
    long_user = list(range(50))  # 49 distinct pairs
    sequences = [long_user, [3, 4, 5], long_user[::-1]]
    counts = _counts(sequences, 50, per_user=5, sigma=None, rng=rng)
    assert counts.sum() == 5 + 2 + 5
    assert counts.max() <= 2  # each shopper adds at most 1 to a cell
    alone = _counts([long_user], 50, per_user=5, sigma=None, rng=np.random.default_rng(0))
    assert alone.sum() == 5 and set(np.unique(alone)) == {0.0, 1.0}
    rows, cols = np.nonzero(alone)
    assert np.all(cols == rows + 1)  # only the shopper's own transitions
    again = _counts([long_user], 50, per_user=5, sigma=None, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(alone, again)  # the sample depends on the generator only


def test_noise_on_every_cell_clipped_at_zero():
    sigma, per_user, n = 1.0, 4, 300
    counts = _counts([], n, per_user, sigma, np.random.default_rng(0))
    scale = sigma * math.sqrt(per_user)  # noise std = sigma x L2 sensitivity = 2
    assert counts.min() == 0.0
    assert (counts == 0).mean() == pytest.approx(0.5, abs=0.01)  # half of a centred normal is clipped
    positive = counts[counts > 0]
    assert positive.mean() == pytest.approx(scale * math.sqrt(2 / math.pi), rel=0.02)  # half-normal mean


def test_counts_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="transitions_share=0"):
        _counts([], MAX_DENSE_ITEMS + 1, 8, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sequence 1 holds item index 7"):
        _counts([[0, 1], [1, 7]], 5, 8, None, np.random.default_rng(0))


def test_capped_pairs_then_noisy_counts_are_the_transition_counts():
    sequences = [list(range(30)), [3, 4, 5, 3, 4], [9, 8]]
    pairs = capped_pairs(sequences, 30, 5, np.random.default_rng(3))
    assert [len(p) for p in pairs] == [5, 3, 1]  # the long shopper is capped; (3, 4) counts once
    assert pairs[1] == [(3, 4), (4, 5), (5, 3)]
    counts = noisy_counts(pairs, 30, 5, 0.8, np.random.default_rng(3))
    rng = np.random.default_rng(3)  # one generator through both steps, as ml.privacy.transitions draws
    both = noisy_counts(capped_pairs(sequences, 30, 5, rng), 30, 5, 0.8, rng)
    np.testing.assert_array_equal(both, _counts(sequences, 30, 5, 0.8, np.random.default_rng(3)))
    assert counts.shape == (30, 30)
    with pytest.raises(ValueError, match="shopper 0 adds 6 pairs, more than per_user=5"):
        noisy_counts([[(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]], 30, 5, None, np.random.default_rng(0))


def _sgd(noise_multiplier: float = 1.2, steps: int = STEPS) -> dict:
    return {
        "noise_multiplier": noise_multiplier,
        "max_grad_norm": 1.0,
        "sample_rate": Q,
        "steps": steps,
        "accountant": "rdp",
        "epsilon_sgd": composed_epsilon(noise_multiplier, Q, steps, None, DELTA),
        "delta": DELTA,
        "clipping": "ghost (per shopper)",
        "examples_per_user": 1,
        "secure_rng": False,
        "noise_source": "torch generator seeded with 7",
    }


def test_without_dp_the_record_says_so_and_logs_no_privacy_metric():
    record = privacy_record(
        None, None, n_users=10, secure=False, target_epsilon=8.0, pairs_per_user=8, with_transitions=False
    )
    assert record == {"dp": False, "unit": "none", "n_users": 10, "secure_rng": False}
    assert privacy_metrics(record) == {}


def test_the_record_composes_both_mechanisms_at_the_steps_taken():
    plan = plan_budget(8.0, DELTA, Q, STEPS, 0.3, 8)
    sgd = _sgd(plan.noise_multiplier, steps=STEPS // 2)  # an early stop spends less than planned
    record = privacy_record(
        plan, sgd, n_users=500, secure=False, target_epsilon=8.0, pairs_per_user=8, with_transitions=True
    )
    assert record["epsilon"] == pytest.approx(
        composed_epsilon(plan.noise_multiplier, Q, STEPS // 2, plan.transitions_sigma, DELTA)
    )
    assert sgd["epsilon_sgd"] < record["epsilon"] < 8.0 + 1e-6
    assert [m["epsilon_alone"] for m in record["mechanisms"]] == [sgd["epsilon_sgd"], plan.epsilon_transitions]
    assert "epsilon_sgd" not in record and record["steps"] == STEPS // 2
    assert privacy_metrics(record)["privacy.epsilon"] == record["epsilon"]
    alone = privacy_record(
        plan, sgd, n_users=500, secure=False, target_epsilon=8.0, pairs_per_user=8, with_transitions=False
    )
    assert len(alone["mechanisms"]) == 1
