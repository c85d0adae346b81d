"""The bi-encoder's scoring: it starts as the zero-shot encoder, its learned text scale folds into the
temperature without changing a score, the closest-history-item feature, and DP training of the small heads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ml.evaluation.baselines import ZeroShot
from ml.item_tables import lexical_neighbours
from ml.training.dp_sgd import DPSettings
from ml.training.examples import Examples
from ml.training.heads import ContentScale, _content_scale_grad_sample
from ml.training.model import BiEncoder, build_history_tensors
from ml.training.recommender import Recommender, RecommenderSettings
from tests.tiny_model import MAX_HISTORY, N_ITEMS, tiny_examples, tiny_model, train_tiny


def _logits(model: BiEncoder, histories: list[list[int]]) -> torch.Tensor:
    t = build_history_tensors(histories, model.max_history)
    with torch.no_grad():
        q = model.history_vector(t["hist_idx"], t["hist_pos"], t["hist_mask"])
        return model.logits(q, t["hist_idx"], t["hist_mask"], torch.zeros(len(histories)))


HISTORIES = [[3], [0, 5, 9], [1, 2, 3, 4, 5, 6], [11, 11, 7]]


def test_the_untrained_model_ranks_exactly_as_the_zero_shot_encoder(tokenizer):
    model, _ = tiny_model(tokenizer)
    ids = [f"i{j}" for j in range(N_ITEMS)]
    zero_shot = ZeroShot(item_ids=ids, vectors=model.item_table.numpy())
    as_ids = [[ids[j] for j in h] for h in HISTORIES]
    ours = torch.argsort(_logits(model, HISTORIES), dim=1, descending=True)[:, :N_ITEMS].tolist()
    assert [[ids[j] for j in row] for row in ours] == zero_shot.recommend(as_ids, N_ITEMS)


def test_folding_the_content_scale_into_the_temperature_keeps_every_score(tokenizer):
    model, texts = tiny_model(tokenizer)
    _with_tables(model, texts)
    with torch.no_grad():
        model.content_scale.log_scale.fill_(-1.5)
    before = _logits(model, HISTORIES)
    temperature = model.fold_content_scale()
    assert temperature == pytest.approx(0.05 * np.exp(1.5), rel=1e-5)
    assert model.content_scale.log_scale.item() == 0.0
    torch.testing.assert_close(_logits(model, HISTORIES), before, rtol=1e-5, atol=1e-4)


def test_closest_similarity_is_the_best_cosine_to_any_real_history_item(tokenizer):
    model, _ = tiny_model(tokenizer)
    t = build_history_tensors([[2, 7], []], MAX_HISTORY)  # the empty row is padded with item 0
    got = model.closest_similarity(t["hist_idx"], t["hist_mask"] > 0)
    table = model.item_table
    expected = torch.maximum(table @ table[2], table @ table[7])
    torch.testing.assert_close(got[0], expected)
    assert got[0, 2].item() == pytest.approx(1.0, abs=1e-5)  # an item is closest to itself
    assert torch.equal(got[1], torch.zeros(N_ITEMS))  # no history: no similarity, not item 0's
    feats = model.history_features(t["hist_idx"], t["hist_mask"])
    assert feats.shape == (2, N_ITEMS, BiEncoder.N_FEATURES)
    torch.testing.assert_close(feats[..., 5], got)
    assert torch.equal(feats[..., 6], torch.zeros(2, N_ITEMS))  # no lexical table installed: the feature is off


def test_content_scale_per_sample_gradient_matches_autograd():
    layer = ContentScale()
    with torch.no_grad():
        layer.log_scale.fill_(0.3)
    scores = torch.randn(3, 5)
    upstream = torch.randn(3, 5)  # d loss / d output, one row per sample
    per_sample = _content_scale_grad_sample(layer, [scores], upstream)[layer.log_scale]
    for b in range(3):
        layer.zero_grad()
        (layer(scores[b : b + 1]) * upstream[b : b + 1]).sum().backward()
        assert per_sample[b].item() == pytest.approx(layer.log_scale.grad.item(), rel=1e-5)


def test_dp_training_with_frozen_dense_heads_moves_only_the_small_heads(tokenizer):
    model, texts = tiny_model(tokenizer)
    model.freeze_dense_heads()
    proj, bias = model.history_proj.weight.detach().clone(), model.item_bias.weight.detach().clone()
    result = train_tiny(
        model, tokenizer, texts, max_steps=4, dp=DPSettings(noise_multiplier=1.0, delta=1e-3, max_grad_norm=1.0)
    )
    assert result.dp is not None and result.steps == 4
    assert torch.equal(model.history_proj.weight, proj) and torch.equal(model.item_bias.weight, bias)
    assert model.feature_weights.weight.abs().sum() > 0  # started at zero
    assert model.content_scale.log_scale.item() != 0.0
    assert not any(p.requires_grad for p in (*model.history_proj.parameters(), *model.item_bias.parameters()))


def _with_tables(model: BiEncoder, texts: list[str]) -> BiEncoder:
    """Every feature in use: transitions, a lexical table and non-zero weights, a learned content scale."""
    rng = np.random.default_rng(5)
    model.set_transitions(torch.from_numpy(np.log1p(rng.poisson(0.3, (N_ITEMS, N_ITEMS))).astype(np.float32)))
    model.set_lexical(lexical_neighbours([t.split(" size")[0] for t in texts], texts))
    with torch.no_grad():
        model.feature_weights.weight.copy_(torch.tensor([0.4, -1.0, 0.2, 0.3, 0.8, 2.5, 1.5]))
        model.content_scale.log_scale.fill_(-0.7)
    return model


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{j}" for j in range(N_ITEMS)],
            "title": [f"t{j}" for j in range(N_ITEMS)],
            "brand": [f"b{j % 4}" for j in range(N_ITEMS)],
            "category": [f"c{j % 3}" for j in range(N_ITEMS)],
        }
    )


def test_a_saved_model_scores_as_before_with_its_item_tables(tokenizer, tmp_path):
    model, texts = tiny_model(tokenizer)
    _with_tables(model, texts)
    temperature = model.fold_content_scale()
    rec = Recommender(model, tokenizer, _items(), RecommenderSettings(temperature, MAX_HISTORY, 8, 16))
    histories = [["i1", "i5"], ["i7", "i7", "i3", "i0", "i2"]]
    loaded = Recommender.load(rec.save(tmp_path / "model"))
    assert loaded.model.lexical.size == N_ITEMS  # sized from the saved table
    assert loaded.model.lexical.nnz == model.lexical.nnz and loaded.model.transitions.nnz == model.transitions.nnz
    np.testing.assert_allclose(loaded.history_scores(histories), rec.history_scores(histories), rtol=1e-5, atol=1e-4)


def test_serving_scores_are_the_models_with_every_feature(tokenizer):
    from ml.serving.scorer import Scorer

    model, texts = tiny_model(tokenizer)
    _with_tables(model, texts)
    temperature = model.fold_content_scale()
    rec = Recommender(model, tokenizer, _items(), RecommenderSettings(temperature, MAX_HISTORY, 8, 16))
    scorer = Scorer(rec)
    histories = [[1, 5], [7, 7, 3, 0, 2]]
    full = rec.history_scores([[f"i{j}" for j in h] for h in histories])
    np.testing.assert_allclose(scorer.scores(histories), full, rtol=1e-6, atol=1e-6)
    for (rows, scores), want in zip(scorer.top_many(histories, 5), full, strict=True):
        assert rows.tolist() == np.argsort(-want, kind="stable")[:5].tolist()
        np.testing.assert_allclose(scores, want[rows], rtol=1e-5, atol=1e-5)


def test_parameter_groups_give_heads_content_scale_and_projection_their_own_rates(tokenizer):
    from ml.training.train import HEAD_LR_FACTOR, SCALAR_LR_FACTOR, parameter_groups

    model, _ = tiny_model(tokenizer)
    by_name = {g["name"]: g for g in parameter_groups(model, 0.2)}
    assert set(by_name) == {"heads", "scalars", "projection"}  # the encoder is frozen
    assert by_name["heads"]["lr"] == pytest.approx(0.2 * HEAD_LR_FACTOR)
    assert by_name["scalars"]["lr"] == pytest.approx(0.2 * SCALAR_LR_FACTOR)
    assert [id(p) for p in by_name["scalars"]["params"]] == [id(model.content_scale.log_scale)]
    assert id(model.item_bias.weight) in {id(p) for p in by_name["heads"]["params"]}
    model.freeze_dense_heads()
    groups = {g["name"]: g for g in parameter_groups(model, 0.2)}
    assert set(groups) == {"heads", "scalars"}  # no projection left
    assert id(model.item_bias.weight) not in {id(p) for p in groups["heads"]["params"]}


def test_dropped_text_features_score_nothing_and_save_as_zero_weights(tokenizer):
    model, texts = tiny_model(tokenizer)
    _with_tables(model, texts)
    model.drop_text_features()
    t = build_history_tensors(HISTORIES, MAX_HISTORY)
    feats = model.history_features(t["hist_idx"], t["hist_mask"])
    assert torch.equal(feats[..., 5:], torch.zeros_like(feats[..., 5:]))
    assert not model.content_scale.log_scale.requires_grad
    before = _logits(model, HISTORIES)
    model.zero_dropped_weights()
    assert model.text_features and torch.equal(model.feature_weights.weight[5:], torch.zeros(2))
    torch.testing.assert_close(_logits(model, HISTORIES), before)  # the flag is no longer needed


def _grouped(model: BiEncoder, examples: Examples, rows: list[tuple[int, ...]], per_user: int) -> dict:
    from ml.training.batches import make_collate

    cache = torch.zeros(len(examples), model.dim)
    return make_collate(examples, None, MAX_HISTORY, 8, cache, per_user)(rows)


def test_a_grouped_batch_scores_each_slot_as_its_own_example_and_pads_with_ignored_targets(tokenizer):
    model, texts = tiny_model(tokenizer)
    _with_tables(model, texts)
    with torch.no_grad():  # the dense heads and the category table too, away from their start
        model.history_proj.weight.add_(0.1 * torch.randn_like(model.history_proj.weight))
        model.item_bias.weight.copy_(torch.randn_like(model.item_bias.weight))
        model.category_transition.weight.copy_(torch.randn_like(model.category_transition.weight))
    examples = tiny_examples()
    rows = [(0, 1), (4,), (6, 7)]  # shoppers with 2, 1 and 2 examples in 2 slots
    flat = _grouped(model, examples, [(i,) for r in rows for i in r], per_user=1)
    grouped = _grouped(model, examples, rows, per_user=2)
    assert grouped["hist_idx"].shape == (3, 2, MAX_HISTORY)
    assert grouped["target"].tolist() == [
        [examples.targets[0], examples.targets[1]],
        [examples.targets[4], -100],
        [examples.targets[6], examples.targets[7]],
    ]
    with torch.no_grad():
        want = model(**{k: v for k, v in flat.items() if k != "target"})
        got = model(**{k: v for k, v in grouped.items() if k != "target"})
    assert got.shape == (3, 2, N_ITEMS)
    real = grouped["target"] != -100
    torch.testing.assert_close(got[real], want)


def test_per_user_dataset_draws_distinct_examples_of_one_shopper_up_to_the_limit():
    from ml.training.sampling import PerUserDataset

    examples = Examples(["a", "a", "a", "b"], [[1], [2], [3], [4]], [None] * 4, [5, 6, 7, 8])
    dataset = PerUserDataset(examples, seed=0, per_user=2)
    for _ in range(20):
        a, b = dataset[0], dataset[1]
        assert len(a) == 2 and len(set(a)) == 2 and set(a) <= {0, 1, 2}
        assert b == (3,)
    assert len(PerUserDataset(examples, seed=0, per_user=5)[0]) == 3
    with pytest.raises(ValueError, match="at least 1"):
        PerUserDataset(examples, seed=0, per_user=0)


def test_under_ghost_clipping_a_grouped_row_is_one_shopper_whose_mean_loss_gradient_is_clipped_once(tokenizer):
    """What DP-SGD sums before its noise: for each shopper, the gradient of the mean loss over its slots,
    clipped to max_grad_norm as a whole (not per example), compared with autograd on a copy of the model."""
    import copy

    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader

    from ml.training.batches import per_user_loss

    model, texts = tiny_model(tokenizer)
    _with_tables(model, texts)
    model.freeze_dense_heads()
    reference = copy.deepcopy(model)
    examples = tiny_examples()
    rows = [(0, 1), (4,), (6, 7), (10, 11)]
    batch = _grouped(model, examples, rows, per_user=2)
    target = batch.pop("target")
    clip = 0.05  # small enough that every shopper's gradient is clipped
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    module, optimizer, criterion, _ = PrivacyEngine(accountant="rdp").make_private(
        module=model,
        optimizer=optimizer,
        criterion=torch.nn.CrossEntropyLoss(),
        data_loader=DataLoader(range(4)),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        poisson_sampling=False,
        grad_sample_mode="ghost",
    )
    logits = module(**batch)
    criterion(logits.flatten(0, 1), target.flatten(), shape=logits.shape).backward()
    trained = [(n, p) for n, p in reference.named_parameters() if p.requires_grad]
    want = {n: torch.zeros_like(p) for n, p in trained}
    norms = []
    for r in range(len(rows)):
        one = {k: v[r : r + 1] for k, v in batch.items()}
        grads = torch.autograd.grad(per_user_loss(reference(**one), target[r : r + 1]).sum(), [p for _, p in trained])
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        norms.append(float(norm))
        for (n, _), g in zip(trained, grads, strict=True):
            want[n] += g * min(1.0, clip / float(norm))
    assert min(norms) > clip
    got = dict(model.named_parameters())
    for n, _ in trained:
        torch.testing.assert_close(got[n].grad, want[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dp", [True, False])
def test_training_with_several_examples_per_shopper_learns_with_and_without_dp(tokenizer, dp):
    model, texts = tiny_model(tokenizer)
    model.freeze_dense_heads()
    settings = DPSettings(noise_multiplier=0.5, delta=1e-3, max_grad_norm=1.0) if dp else None
    result = train_tiny(model, tokenizer, texts, max_steps=3, dp=settings, examples_per_user=2)
    assert result.steps == 3 and (result.dp is not None) == dp
    assert np.isfinite(result.final_loss)
    assert model.feature_weights.weight.abs().sum() > 0  # started at zero


def test_with_trained_encoder_layers_a_step_takes_one_example_per_shopper_and_says_so(tokenizer, caplog):
    model, texts = tiny_model(tokenizer)
    for p in model.bert.encoder.layer[-1].parameters():
        p.requires_grad = True
    with caplog.at_level("WARNING", logger="ml.training.train"):
        result = train_tiny(
            model,
            tokenizer,
            texts,
            max_steps=2,
            dp=DPSettings(noise_multiplier=0.5, delta=1e-3, max_grad_norm=1.0),
            examples_per_user=4,
        )
    assert result.dp is not None and result.dp["examples_per_user"] == 1
    assert "needs a frozen encoder" in caplog.text


def test_a_shoppers_own_transition_entries_are_added_to_its_feature_in_flat_and_grouped_batches(tokenizer):
    model, texts = tiny_model(tokenizer)
    _with_tables(model, texts)
    examples = tiny_examples()
    own = {0: [(3, -0.5), (3, -0.25), (7, -1.0)], 1: [(2, -0.3)], 6: [(11, -0.7)]}  # a repeated item adds up
    examples.transition_own = [own.get(i, []) for i in range(len(examples))]
    rows = [(0, 1), (4,), (6, 7)]
    flat = _grouped(model, examples, [(i,) for r in rows for i in r], per_user=1)
    grouped = _grouped(model, examples, rows, per_user=2)
    with torch.no_grad():
        plain = model.history_features(flat["hist_idx"], flat["hist_mask"])
        taken = model.history_features(flat["hist_idx"], flat["hist_mask"], flat["own_idx"], flat["own_val"])
        want = model(**{k: v for k, v in flat.items() if k != "target"})
        got = model(**{k: v for k, v in grouped.items() if k != "target"})
    expected = plain[..., 4].clone()
    for row, i in enumerate(i for r in rows for i in r):
        for item, value in own.get(i, []):
            expected[row, item] += value
    torch.testing.assert_close(taken[..., 4], expected)  # the transition feature only
    torch.testing.assert_close(taken[..., :4], plain[..., :4])
    torch.testing.assert_close(taken[..., 5:], plain[..., 5:])
    torch.testing.assert_close(got[grouped["target"] != -100], want)
    assert not torch.allclose(want, _logits(model, [examples.histories[i] for r in rows for i in r]))


@pytest.mark.parametrize("secure", [False, True])
def test_dp_training_is_reproducible_from_the_seed_only_with_secure_rng_off(tokenizer, secure):
    trained = []
    for _ in range(2):
        model, texts = tiny_model(tokenizer)
        model.freeze_dense_heads()
        result = train_tiny(
            model,
            tokenizer,
            texts,
            max_steps=3,
            dp=DPSettings(noise_multiplier=1.0, delta=1e-3, max_grad_norm=1.0, secure_rng=secure),
        )
        assert result.dp is not None and result.dp["secure_rng"] is secure and result.steps == 3
        trained.append(model.feature_weights.weight.detach().clone())
    assert torch.equal(trained[0], trained[1]) is not secure


def test_a_model_saved_before_plural_stemming_is_served_without_it(tokenizer, tmp_path):
    """New models reduce plurals on search's lexical side; one whose saved settings predate the setting was
    measured without it, and loads without it."""
    import json

    model, _ = tiny_model(tokenizer)
    rec = Recommender(model, tokenizer, _items(), RecommenderSettings(1.0, MAX_HISTORY, 8, 16))
    folder = rec.save(tmp_path / "model", export_onnx=False)
    assert Recommender.load(folder, query_encoder="torch").settings.search.stem_plurals is True
    stored = json.loads((folder / "recommender.json").read_text())
    del stored["search"]["stem_plurals"]
    (folder / "recommender.json").write_text(json.dumps(stored))
    assert Recommender.load(folder, query_encoder="torch").settings.search.stem_plurals is False
