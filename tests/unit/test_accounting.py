from __future__ import annotations

import math
import time
import tracemalloc

import numpy as np
import pytest

from ml.privacy.accounting import (
    SELECTION_DELTA_SHARE,
    PrivacyPlan,
    composed_epsilon,
    default_delta,
    plan_budget,
    privacy_metrics,
    privacy_record,
    selection_delta,
    selection_threshold,
    threshold_delta,
)
from ml.privacy.pair_counts import capped_pairs, release_counts

DELTA = 1e-5
Q, STEPS = 0.085, 60


def _dense(released) -> np.ndarray:
    """The released counts as a dense matrix (small catalogues in tests only)."""
    out = np.zeros((released.n_items, released.n_items), dtype=np.float32)
    out[released.rows, released.cols] = released.counts
    return out


def _counts(sequences, n_items, per_user, sigma, rng, noise=None, threshold=None):
    """The released transition counts as ml.privacy.transitions builds them: capped pairs, then noise."""
    pairs = capped_pairs(sequences, n_items, per_user, rng)
    return _dense(release_counts(pairs, n_items, per_user, sigma, rng if noise is None else noise, threshold))


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
    # with the counts, the accountant converts at the delta the threshold leaves, and the selection adds
    # log(1 / (1 - its delta)) (ml.privacy.accounting's docstring)
    rest = DELTA * (1 - SELECTION_DELTA_SHARE)
    eps = rdp - (np.log(rest) + np.log(alphas)) / (alphas - 1) + np.log((alphas - 1) / alphas)
    expected = float(eps.min()) - math.log1p(-DELTA * SELECTION_DELTA_SHARE)
    assert composed_epsilon(None, Q, STEPS, sigma, DELTA) == pytest.approx(expected, rel=1e-9)


def test_the_threshold_spends_the_selection_delta():
    sigma, per_user = 1.5, 8
    for spent in (1e-9, 5e-6, 0.01, 0.3):
        tau = selection_threshold(sigma, per_user, spent)
        assert threshold_delta(tau, sigma, per_user) == pytest.approx(spent, rel=1e-6)
    # by hand at one point: a singleton is released with p = 1 - Phi((tau - 1) / s); 1 - (1 - p)^8 is the delta
    tau = selection_threshold(sigma, per_user, 5e-6)
    s = sigma * math.sqrt(per_user)
    p = 0.5 * math.erfc((tau - 1) / (s * math.sqrt(2)))
    assert 1 - (1 - p) ** per_user == pytest.approx(5e-6, rel=1e-6)
    assert per_user * p == pytest.approx(5e-6, rel=1e-4)  # the union bound is a hair above
    # a smaller delta, more noise or more pairs a shopper raise the bar
    assert selection_threshold(sigma, per_user, 1e-7) > tau
    assert selection_threshold(2 * sigma, per_user, 5e-6) > tau
    assert selection_threshold(sigma / math.sqrt(2), 2 * per_user, 5e-6) > tau  # same s, more pairs
    assert 1 + 4 * s < tau < 1 + 6 * s
    with pytest.raises(ValueError, match="delta"):
        selection_threshold(sigma, per_user, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        selection_threshold(0.0, per_user, 1e-6)


def test_singleton_pairs_are_released_at_the_rate_the_threshold_allows():
    # 5,000 shoppers, 4 pairs each that no other shopper holds; a large delta_selection so that the rate shows
    sigma, per_user, spent, n_users = 1.0, 4, 0.2, 5000
    tau = selection_threshold(sigma, per_user, spent)
    pairs = [[(4 * u + k, 4 * u + k) for k in range(per_user)] for u in range(n_users)]
    released = release_counts(pairs, 4 * n_users, per_user, sigma, np.random.default_rng(11), threshold=tau)
    p = -math.expm1(math.log1p(-spent) / per_user)  # per pair: 0.054
    assert len(released.keys) / (per_user * n_users) == pytest.approx(p, abs=0.006)  # std 0.0016
    shoppers_seen = len(np.unique(released.rows // per_user))
    assert shoppers_seen / n_users == pytest.approx(spent, abs=0.025)  # std 0.0057
    assert np.all(released.counts > tau)


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
        assert plan.transitions_threshold is None and plan.selection_delta == 0.0
        assert len(plan.mechanisms()) == 1
    else:
        assert plan.epsilon_transitions == pytest.approx(share * target, rel=0.02)
        assert plan.epsilon_transitions <= share * target
        assert [m["epsilon_alone"] for m in plan.mechanisms()] == [plan.epsilon_sgd, plan.epsilon_transitions]
        assert plan.selection_delta == selection_delta(DELTA) == SELECTION_DELTA_SHARE * DELTA
        assert threshold_delta(plan.transitions_threshold, plan.transitions_sigma, 8) == pytest.approx(
            plan.selection_delta, rel=1e-6
        )
        counts = plan.mechanisms()[1]
        assert "Gaussian partition selection" in counts["mechanism"]
        assert counts["threshold"] == plan.transitions_threshold and counts["selection_delta"] == plan.selection_delta


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
    released = release_counts(capped_pairs(sequences, 3, 10, np.random.default_rng(0)), 3, 10, None, None)
    # shopper 0: (0,1) (1,2) (2,1); shopper 1: (2,0); shopper 2: (1,1) twice but distinct once; shopper 3: none
    expected = np.array([[0, 1, 0], [0, 1, 1], [1, 1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(_dense(released), expected)
    assert released.keys.tolist() == [1, 4, 5, 6, 7]  # only the pairs that occur, sorted by a * n_items + b
    assert released.threshold is None


def test_a_repeated_pair_counts_once_per_shopper():
    counts = _counts([[0, 1, 0, 1, 0, 1]], 2, per_user=10, sigma=None, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(counts, np.array([[0, 1], [1, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match="shopper 1 adds a pair twice"):
        release_counts([[(0, 1)], [(1, 0), (1, 0)]], 2, 10, None, None)


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


class _Recording:
    """A noise source that counts what it is asked for."""

    def __init__(self) -> None:
        self.drawn = 0

    def standard_normal(self, size=None, dtype=np.float64):
        self.drawn += int(size)
        return np.random.default_rng(5).standard_normal(size).astype(dtype)


def test_noise_only_on_the_pairs_that_occur():
    sigma, per_user = 1.0, 4
    scale = sigma * math.sqrt(per_user)  # noise std = sigma x L2 sensitivity = 2
    noise = _Recording()
    assert len(release_counts([], 100_000, per_user, sigma, noise, threshold=3.0).keys) == 0
    assert noise.drawn == 0  # no pair, no noise: nothing for the pairs nobody holds
    # 20,000 pairs held by 3 shoppers each, a threshold that keeps all: the noise on each count has std `scale`
    pairs = [[(k, k + 1)] for k in range(20_000) for _ in range(3)]
    released = release_counts(pairs, 20_001, per_user, sigma, noise, threshold=-1e9)
    assert noise.drawn == 20_000 and len(released.keys) == 20_000
    deviation = released.counts - 3.0
    assert abs(deviation.mean()) < 0.05 and deviation.std() == pytest.approx(scale, rel=0.02)


def test_counts_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="sequence 1 holds item index 7"):
        _counts([[0, 1], [1, 7]], 5, 8, None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="item index outside 0..4"):
        release_counts([[(0, 1)], [(1, 7)]], 5, 8, None, None)
    with pytest.raises(ValueError, match="release threshold"):
        release_counts([[(0, 1)]], 5, 8, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="noised counts only"):
        release_counts([[(0, 1)]], 5, 8, None, None, threshold=3.0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        release_counts([[(0, 1)]], 5, 8, -1.0, np.random.default_rng(0), threshold=3.0)


def test_capped_pairs_then_release_are_the_transition_counts():
    sequences = [list(range(30)), [3, 4, 5, 3, 4], [9, 8]]
    pairs = capped_pairs(sequences, 30, 5, np.random.default_rng(3))
    assert [len(p) for p in pairs] == [5, 3, 1]  # the long shopper is capped; (3, 4) counts once
    assert pairs[1] == [(3, 4), (4, 5), (5, 3)]
    counts = release_counts(pairs, 30, 5, 0.8, np.random.default_rng(3), threshold=-1e9)
    rng = np.random.default_rng(3)  # one generator through both steps, as ml.privacy.transitions draws
    both = release_counts(capped_pairs(sequences, 30, 5, rng), 30, 5, 0.8, rng, threshold=-1e9)
    np.testing.assert_array_equal(
        _dense(both), _counts(sequences, 30, 5, 0.8, np.random.default_rng(3), threshold=-1e9)
    )
    assert len(counts.keys) == len({p for ps in pairs for p in ps})
    with pytest.raises(ValueError, match="shopper 0 adds 6 pairs, more than per_user=5"):
        release_counts([[(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]], 30, 5, None, None)


def test_the_release_scales_with_the_pairs_not_the_catalogue():
    # 200,000 items (a dense float32 matrix: n_items ** 2 * 4 bytes), 50,000 shoppers with 8 pairs each, Zipf-ish
    n_items, per_user = 200_000, 8
    rng = np.random.default_rng(0)
    walks = (rng.zipf(1.3, size=(50_000, per_user + 1)) - 1) % n_items
    pairs = [list(dict.fromkeys(zip(w[:-1].tolist(), w[1:].tolist(), strict=True))) for w in walks]
    tau = selection_threshold(1.0, per_user, 5e-6)
    tracemalloc.start()
    start = time.perf_counter()
    released = release_counts(pairs, n_items, per_user, 1.0, rng, threshold=tau)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n_pairs = sum(map(len, pairs))
    assert seconds < 5.0  # a loose bound on a shared machine; the times are in benchmarks/results/sparse-release.md
    assert peak < 64 * n_pairs * 8  # a few arrays of the pairs' size, not n_items ** 2
    assert 0 < len(released.keys) < n_pairs and np.all(released.counts > tau)


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
    counts = record["mechanisms"][1]
    assert "Gaussian partition selection" in counts["name"]
    assert counts["threshold"] == plan.transitions_threshold and counts["selection_delta"] == DELTA / 2
    assert "epsilon_sgd" not in record and record["steps"] == STEPS // 2
    assert privacy_metrics(record)["privacy.epsilon"] == record["epsilon"]
    alone = privacy_record(
        plan, sgd, n_users=500, secure=False, target_epsilon=8.0, pairs_per_user=8, with_transitions=False
    )
    assert len(alone["mechanisms"]) == 1
