"""When DP-SGD leaves the dense heads (history projection, item bias) fixed: the two noise rules of training."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from ml.config import RunConfig
from ml.privacy.accounting import plan_budget
from ml.training.dp_regime import (
    NOISY_DP_ITEM_STEP,
    NOISY_DP_LR_SCALE,
    NOISY_DP_STEP,
    apply_dp_regime,
    dense_heads_too_noisy,
)
from ml.training.model import BiEncoder
from ml.training.train import planned_steps


def _noise(n_users: int, batch_size: int, epsilon: float) -> tuple[float, float]:
    """The pipeline's DP-SGD noise multiplier and expected shoppers a step, at the default training budget and split."""
    cfg = RunConfig()
    steps, sample_rate = planned_steps(n_users, batch_size, cfg.epochs, cfg.max_steps)
    plan = plan_budget(
        epsilon, n_users**-1.1, sample_rate, steps, cfg.dp.transitions_share, cfg.dp.transitions_per_user
    )
    return plan.noise_multiplier, sample_rate * n_users


@pytest.mark.parametrize(
    ("n_users", "n_items", "batch_size", "epsilon", "frozen"),
    [
        (18_000, 1_200, 2_048, 8.0, False),  # the synthetic demo: the heads carry its popularity and category signal
        (18_000, 1_200, 2_048, 1.0, True),  # the same shop at epsilon 1: too much noise on every coordinate
        (2_717, 3_686, 256, 8.0, True),  # amazon2018: both rules
        (2_717, 3_686, 256, 16.0, True),  # amazon2018 at epsilon 16: quiet enough overall, not per item
        (2_717, 3_686, 256, 32.0, True),
        (261, 300, 256, 8.0, True),  # Coat
    ],
)
def test_the_dense_heads_train_only_where_the_noise_is_low_overall_and_per_item(
    n_users, n_items, batch_size, epsilon, frozen
):
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


def _model(n_items: int = 6) -> BiEncoder:
    bert = BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
        ),
        add_pooling_layer=False,
    )
    model = BiEncoder(bert, n_items=n_items, trainable_layers=0)
    model.set_lexical(torch.eye(n_items))
    return model


def _dense_trainable(model: BiEncoder) -> bool:
    return all(p.requires_grad for p in (*model.history_proj.parameters(), *model.item_bias.parameters()))


def test_a_loud_step_fixes_the_dense_heads_and_lowers_the_rate():
    model = _model()
    assert apply_dp_regime(model, 10.0, 100.0, 6, learning_rate=0.2) == pytest.approx(0.2 * NOISY_DP_LR_SCALE)
    assert not _dense_trainable(model)
    assert model.text_features and model.lexical.size == 6  # the text features stay


def test_a_quiet_step_trains_the_dense_heads_without_the_text_features():
    model = _model()
    assert apply_dp_regime(model, 0.5, 2_048.0, 6, learning_rate=0.2) == 0.2
    assert _dense_trainable(model)
    assert not model.text_features and not model.lexical.used
    assert not model.content_scale.log_scale.requires_grad


def test_without_dp_nothing_changes():
    model = _model()
    assert apply_dp_regime(model, None, 1.0, 6, learning_rate=1e-3) == 1e-3
    assert _dense_trainable(model) and model.text_features and model.lexical.size == 6
