"""Data-parallel training: the launcher's choices, the shared Poisson sample, and two gloo ranks on CPU."""

import math

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from ml.privacy.accounting import composed_epsilon
from ml.training.distributed import check_ranks_agree, run_ranks, train_data_parallel, world_size_for
from ml.training.dp_sgd import DPSettings
from ml.training.encoder import model_dir
from ml.training.examples import Examples
from ml.training.model import BiEncoder
from ml.training.sampling import PoissonShards, ShuffleShards
from ml.training.train import parameter_groups

N_ITEMS = 12
N_SHOPPERS = 48


@pytest.mark.parametrize(
    ("devices", "requested", "expected"),
    [
        (0, 0, 1),
        (1, 0, 1),
        (4, 0, 4),  # auto: every GPU when there are several, else one process
        (0, 1, 1),
        (4, 1, 1),
        (4, 2, 2),
        (2, 2, 2),
    ],
)
def test_world_size_for(devices, requested, expected):
    assert world_size_for(devices, requested) == expected


@pytest.mark.parametrize(("devices", "requested"), [(0, 2), (1, 2), (2, 3)])
def test_world_size_above_the_gpu_count_is_refused(devices, requested):
    with pytest.raises(ValueError, match=f"world_size={requested} needs {requested} GPUs, but {devices} are visible"):
        world_size_for(devices, requested)


def test_negative_world_size_is_refused():
    with pytest.raises(ValueError, match="world_size must be >= 0"):
        world_size_for(2, -1)


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has the GPUs the error is about")
def test_nccl_launch_without_enough_gpus_fails_before_spawning():
    with pytest.raises(ValueError, match="world_size=2 needs 2 GPUs"):
        run_ranks(torch.nn.Linear(1, 1), None, None, [], world_size=2, backend="nccl")


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        run_ranks(torch.nn.Linear(1, 1), None, None, [], world_size=2, backend="mpi")


def _shares(cls, world_size, **kwargs):
    return [list(cls(rank=r, world_size=world_size, **kwargs)) for r in range(world_size)]


def test_ranks_share_out_the_single_process_poisson_sample():
    """The union of the ranks' shares is the global sample one process draws with the same seed, every rank
    takes the same number of steps, and a step that draws nobody is skipped by all."""
    n, per_epoch = 10, 20  # sample rate 0.05: most steps draw nobody
    (whole,) = _shares(PoissonShards, 1, n=n, batches_per_epoch=per_epoch, seed=3)
    r0, r1 = _shares(PoissonShards, 2, n=n, batches_per_epoch=per_epoch, seed=3)
    assert len(r0) == len(r1) == len(whole) < per_epoch
    for full, a, b in zip(whole, r0, r1, strict=True):
        assert full and sorted(a + b) == sorted(full) and not set(a) & set(b)
        assert abs(len(a) - len(b)) <= 1


def test_shuffled_batches_are_split_between_ranks():
    (whole,) = _shares(ShuffleShards, 1, n=10, batch_size=4, seed=0)
    r0, r1 = _shares(ShuffleShards, 2, n=10, batch_size=4, seed=0)
    assert [len(b) for b in whole] == [4, 4, 2]
    assert [sorted(a + b) for a, b in zip(r0, r1, strict=True)] == [sorted(b) for b in whole]


def test_diverged_ranks_are_caught():
    same = {"w": torch.ones(3)}
    check_ranks_agree([same, {"w": torch.ones(3)}])
    with pytest.raises(RuntimeError, match="rank 1 diverged from rank 0 on w"):
        check_ranks_agree([same, {"w": torch.tensor([1.0, 1.0, 1.5])}])


@pytest.fixture(scope="module")
def tiny():
    """A one-layer 16-wide BERT with MiniLM's tokenizer, frozen (the default): only the heads train."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        ),
        add_pooling_layer=False,
    )
    category = torch.arange(N_ITEMS) % 3
    brand = torch.arange(N_ITEMS) % 4
    model = BiEncoder(
        bert, n_items=N_ITEMS, trainable_layers=0, max_history=4, item_category=category, item_brand=brand
    )
    texts = [f"item {i} colour {['red', 'blue', 'green'][i % 3]}" for i in range(N_ITEMS)]
    users, histories, queries, targets = [], [], [], []
    for u in range(N_SHOPPERS):
        for k in range(2):
            last = (u + k) % N_ITEMS
            users.append(f"u{u}")
            histories.append([(last + 5) % N_ITEMS, last])
            queries.append(f"colour {['red', 'blue', 'green'][u % 3]}" if k == 1 and u % 2 else None)
            targets.append((last + 1) % N_ITEMS)
    return model, tokenizer, Examples(users, histories, queries, targets), texts


def _kwargs(dp):
    return dict(
        epochs=1,
        max_steps=5,
        batch_size=8,
        learning_rate=0.2 if dp else 0.01,
        max_history=4,
        max_query_tokens=8,
        max_item_tokens=8,
        seed=11,
        dp=dp,
    )


@pytest.mark.slow
def test_two_gloo_ranks_train_privately_in_step(tiny):
    """Two CPU ranks with DP on: the same parameters on both, the single-process accountant's epsilon for
    the global sample rate and step count, and weights that moved."""
    model, tokenizer, examples, texts = tiny
    dp = DPSettings(noise_multiplier=1.0, delta=1e-3, max_grad_norm=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    out = run_ranks(model, tokenizer, examples, texts, world_size=2, backend="gloo", **_kwargs(dp))

    first, second = out.rank_params
    assert first.keys() == before.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    changed = [n for n in first if not torch.allclose(first[n], before[n])]
    assert {"item_bias.weight", "history_proj.weight", "feature_weights.weight"} <= set(changed)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)  # a copy trained

    result = out.result
    sample_rate = 1 / math.ceil(N_SHOPPERS / 8)  # global: 8 expected shoppers a step out of 48
    assert result.world_size == 2 and result.steps == 5
    assert result.dp is not None and result.dp["sample_rate"] == pytest.approx(sample_rate)
    assert result.dp["noise_multiplier"] == 1.0
    assert result.dp["epsilon_sgd"] == pytest.approx(composed_epsilon(1.0, sample_rate, 5, None, 1e-3), rel=1e-9)
    assert torch.equal(out.state["item_bias.weight"], first["item_bias.weight"])


@pytest.mark.slow
def test_noise_is_added_once_per_global_step_with_the_planned_multiplier(tiny):
    """One step with large noise: the update of each coordinate is lr * (sum of clipped gradients + noise) / E
    with E the global expected batch (8). Noise drawn on both ranks would give a std of sigma * sqrt(2)."""
    model, tokenizer, examples, texts = tiny
    sigma, clip, lr = 5.0, 1.0, 0.2
    dp = DPSettings(noise_multiplier=sigma, delta=1e-3, max_grad_norm=clip)
    out = run_ranks(
        model,
        tokenizer,
        examples,
        texts,
        world_size=2,
        backend="gloo",
        **{**_kwargs(dp), "max_steps": 1, "learning_rate": lr},
    )
    lr_of = {id(p): g["lr"] for g in parameter_groups(model, lr) for p in g["params"]}
    # SGD's first step (momentum buffer = gradient): p_after = p_before - lr * grad
    scaled = torch.cat(
        [
            ((p.detach() - out.rank_params[0][n]) / lr_of[id(p)]).flatten() * 8 / clip
            for n, p in model.named_parameters()
            if p.requires_grad
        ]
    )
    assert scaled.numel() > 250
    # the clipped gradients (norm <= 8 * clip in all) move the std by about 1%; its estimate's error is ~4%
    assert float(scaled.std()) == pytest.approx(sigma, rel=0.12)


@pytest.mark.slow
def test_train_data_parallel_without_dp_updates_the_model_in_place(tiny):
    model, tokenizer, examples, texts = tiny
    model = BiEncoder(
        model.bert,
        n_items=N_ITEMS,
        trainable_layers=0,
        max_history=4,
        item_category=model.item_category,
        item_brand=model.item_brand,
    )
    seen = []
    result = train_data_parallel(
        model,
        tokenizer,
        examples,
        texts,
        world_size=2,
        backend="gloo",
        on_epoch=lambda epoch, metrics: seen.append((epoch, metrics["steps"])),
        **_kwargs(None),
    )
    assert result.world_size == 2 and result.dp is None and result.steps == 5
    assert seen == [(1, 5)]  # rank 0's epoch metrics, replayed in the caller's process
    assert model.item_bias.weight.abs().sum() > 0  # starts at zero: trained and loaded back
    assert model.item_table.abs().sum() > 0
