"""Sparse item tables and training on sampled negatives: a score read at a few columns is the full score at those
items, the sampled loss corrects and masks its negatives, and training with them runs with and without DP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import sparse

from ml.config import ConfigError, RunConfig
from ml.training.batches import IGNORE
from ml.training.columns import Columns
from ml.training.dp_sgd import DPSettings
from ml.training.item_table import ItemTable
from ml.training.model import build_history_tensors
from ml.training.negatives import NegativeSampler, sampled_logits, sampled_targets, use_sampling
from tests.tiny_model import MAX_HISTORY, N_ITEMS, tiny_examples, tiny_model, train_tiny
from tests.unit.test_model import _grouped, _with_tables


def _table(n: int, density: float, seed: int) -> sparse.csr_matrix:
    return sparse.random(n, n, density=density, format="csr", dtype=np.float32, random_state=seed)


def test_an_item_table_reads_decayed_rows_as_the_dense_sum_does():
    dense_table = _table(30, 0.2, 1)
    table = ItemTable()
    table.load(dense_table, 30)
    rows = torch.tensor([[4, 9, 4, 0], [7, 0, 0, 0]])
    real = torch.tensor([[True, True, True, False], [True, False, False, False]])
    got = table.decayed_rows(rows, real, 0.5, 30)
    dense = dense_table.toarray()
    want = np.stack([dense[4] + 0.5 * dense[9] + 0.25 * dense[4], dense[7]])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7)
    per_row = torch.tensor([[0, 5, 29, 5], [3, 3, 8, 1]])
    shared = torch.tensor([2, 11, 17])
    both = Columns(per_row=per_row, shared=shared)
    want = torch.cat([got.gather(1, per_row), got[:, shared]], dim=1)
    torch.testing.assert_close(table.decayed_at(rows, real, 0.5, both), want)
    torch.testing.assert_close(table.decayed_at(rows, real, 0.5, Columns(shared=shared)), got[:, shared])
    extra = (torch.tensor([[5, 5], [8, 0]]), torch.tensor([[1.0, 0.5], [-2.0, 0.0]]))
    added = table.decayed_at(rows, real, 0.5, Columns(per_row=per_row), extra=extra) - got.gather(1, per_row)
    torch.testing.assert_close(added, torch.tensor([[0.0, 1.5, 0.0, 1.5], [0.0, 0.0, -2.0, 0.0]]))
    assert (table.to_scipy() != dense_table).nnz == 0


def test_an_unused_item_table_reads_zeros_and_a_wrong_shape_is_refused():
    table = ItemTable()
    rows, real = torch.tensor([[1, 2]]), torch.tensor([[True, True]])
    assert not table.used
    assert torch.equal(table.decayed_rows(rows, real, 0.6, 5), torch.zeros(1, 5))
    assert torch.equal(table.decayed_at(rows, real, 0.6, Columns(shared=torch.tensor([0, 3]))), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="must be 5 x 5"):
        table.load(_table(4, 0.5, 0), 5)


@pytest.mark.parametrize("trained_bias", [False, True])
def test_a_score_read_at_columns_is_the_full_score_at_those_items(tokenizer, trained_bias):
    model, texts = tiny_model(tokenizer)
    _with_tables(model, texts)
    with torch.no_grad():
        model.item_bias.weight.copy_(torch.randn_like(model.item_bias.weight))
        model.category_transition.weight.copy_(torch.randn_like(model.category_transition.weight))
    model.per_sample_bias = trained_bias
    examples = tiny_examples()
    own = {0: [(3, -0.5), (7, -1.0)], 1: [(2, -0.3)], 6: [(11, -0.7)]}
    examples.transition_own = [own.get(i, []) for i in range(len(examples))]
    for rows, per_user in (([(i,) for i in range(8)], 1), ([(0, 1), (4,), (6, 7)], 2)):
        batch = {k: v for k, v in _grouped(model, examples, rows, per_user).items() if k != "target"}
        target = _grouped(model, examples, rows, per_user)["target"]
        per_row = target.clamp(min=0).unsqueeze(-1)
        shared = torch.tensor([0, 2, 5, 11])
        with torch.no_grad():
            full = model(**batch)
            q = model.query_vectors({**batch, "input_ids": None})
            args = (batch["hist_idx"], batch["hist_mask"], batch["is_search"], batch["own_idx"], batch["own_val"])
            at = model.logits(q, *args, Columns(per_row=per_row, shared=shared))
        want = torch.cat([full.gather(-1, per_row), full[..., shared]], dim=-1)
        real = target != IGNORE
        torch.testing.assert_close(at[real], want[real], rtol=1e-5, atol=1e-5)


def test_sampled_logits_put_the_target_first_correct_the_negatives_and_mask_a_sampled_target():
    scores = torch.tensor([[2.0, 1.0, 0.5, 3.0], [1.0, 0.0, 0.0, 0.0]])
    negatives = torch.tensor([4, 7, 9])
    target = torch.tensor([7, IGNORE])
    out = sampled_logits(scores, target, negatives, n_items=31)
    shift = math.log(30 / 3)
    assert out[0, 0] == 2.0 and out[0, 1] == pytest.approx(1.0 + shift) and out[0, 3] == pytest.approx(3.0 + shift)
    assert out[0, 2] < -1e8  # item 7 is the target: its sampled copy is masked
    assert sampled_targets(target, IGNORE).tolist() == [0, IGNORE]


def test_the_sampler_draws_distinct_items_reproducibly_and_sampling_needs_a_larger_catalogue():
    a, b = NegativeSampler(1000, 50, seed=4), NegativeSampler(1000, 50, seed=4)
    first = a.draw()
    assert torch.equal(first, b.draw()) and len(first.unique()) == 50 and not torch.equal(first, a.draw())
    assert use_sampling(20_000, 4096) and not use_sampling(4096, 4096) and not use_sampling(20_000, 0)
    with pytest.raises(ValueError, match="count < n_items"):
        NegativeSampler(10, 10, seed=0)
    with pytest.raises(ConfigError, match="negatives must be 0"):
        RunConfig(negatives=-1)


@pytest.mark.parametrize("dp", [False, True])
def test_training_on_sampled_negatives_moves_the_heads_with_and_without_dp(tokenizer, dp):
    model, texts = tiny_model(tokenizer)
    _with_tables(model, texts)
    before = model.feature_weights.weight.detach().clone()
    dp_settings = DPSettings(noise_multiplier=0.5, delta=1e-3, max_grad_norm=1.0) if dp else None
    result = train_tiny(model, tokenizer, texts, max_steps=4, dp=dp_settings, examples_per_user=2, negatives=5)
    assert result.steps == 4 and np.isfinite(result.final_loss)
    assert not torch.equal(model.feature_weights.weight, before)
    assert model.item_bias.weight.abs().sum() > 0  # the bias trained, through its per-sample path under DP
    t = build_history_tensors([[1, 2]], MAX_HISTORY)
    with torch.no_grad():
        q = model.history_vector(t["hist_idx"], t["hist_pos"], t["hist_mask"])
        assert model.logits(q, t["hist_idx"], t["hist_mask"], torch.zeros(1)).shape == (1, N_ITEMS)
