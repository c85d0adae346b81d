"""When DP-SGD leaves the dense heads (history projection, item bias) fixed: the two noise rules of training."""

from __future__ import annotations

import pytest

from ml.config import RunConfig
from ml.pipeline.stages import NOISY_DP_ITEM_STEP, NOISY_DP_STEP, dense_heads_too_noisy
from ml.privacy.accounting import plan_budget
from ml.training.train import planned_steps


def _noise(n_users: int, batch_size: int, epsilon: float) -> tuple[float, float]:
    """The pipeline's DP-SGD noise multiplier and expected shoppers a step, at the default training budget and split."""
    cfg = RunConfig()
    steps, sample_rate = planned_steps(n_users, batch_size, cfg.epochs, cfg.max_steps)
    plan = plan_budget(epsilon, n_users**-1.1, sample_rate, steps, cfg.dp.transitions_share, cfg.dp.transitions_per_user)
    return plan.noise_multiplier, sample_rate * n_users


@pytest.mark.parametrize(("n_users", "n_items", "batch_size", "epsilon", "frozen"), [
    (18_000, 1_200, 2_048, 8.0, False),  # the synthetic demo: the heads carry its popularity and category signal
    (18_000, 1_200, 2_048, 1.0, True),  # the same shop at epsilon 1: too much noise on every coordinate
    (2_717, 3_686, 256, 8.0, True),  # amazon2018: both rules
    (2_717, 3_686, 256, 16.0, True),  # amazon2018 at epsilon 16: quiet enough overall, not per item
    (2_717, 3_686, 256, 32.0, True),
    (261, 300, 256, 8.0, True),  # Coat
])
def test_the_dense_heads_train_only_where_the_noise_is_low_overall_and_per_item(n_users, n_items, batch_size,
                                                                                 epsilon, frozen):
    noise, per_step = _noise(n_users, batch_size, epsilon)
    assert dense_heads_too_noisy(noise, per_step, n_items) is frozen


def test_each_rule_alone_freezes_the_heads():
    # 0.0005 per coordinate (quiet), 50 per item with 100,000 items (loud), 0.5 with 1,000 (quiet)
    assert dense_heads_too_noisy(0.5, 1_000, n_items=100_000)
    assert not dense_heads_too_noisy(0.5, 1_000, n_items=1_000)
    # 0.05 per coordinate (loud), 0.1 per item with 2 items (quiet)
    assert dense_heads_too_noisy(5.0, 100, n_items=2)
    # exactly at a threshold the heads still train
    assert not dense_heads_too_noisy(NOISY_DP_STEP * 1_000, 1_000, n_items=1)
    assert not dense_heads_too_noisy(1.0, 1.0 / NOISY_DP_STEP, n_items=int(NOISY_DP_ITEM_STEP / NOISY_DP_STEP))


def test_a_step_without_shoppers_is_refused():
    with pytest.raises(ValueError, match="shoppers_per_step"):
        dense_heads_too_noisy(1.0, 0.0, n_items=10)
