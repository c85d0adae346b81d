"""Where DP randomness comes from: the OS CSPRNG in the prod profile (not reproducible from the seed, by design),
a seeded generator in the local one (reproducible)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.config import DPConfig, RunConfig
from ml.privacy import noise as noise_mod
from ml.privacy.noise import SECURE_SOURCE, SecureRandom, secure_rng_on
from ml.privacy.pair_counts import capped_pairs, release_counts

PAIRS = [[(0, 1), (1, 2)], [(2, 3)], [(0, 1)]]
KEEP_ALL = -1e9  # a release threshold every noised count clears: the tests here read the noise


def _counts(sequences, n_items, per_user, sigma, rng, noise=None):
    """The released transition counts as ml.privacy.transitions builds them: capped pairs, then noise."""
    pairs = capped_pairs(sequences, n_items, per_user, rng)
    released = release_counts(pairs, n_items, per_user, sigma, rng if noise is None else noise, threshold=KEEP_ALL)
    return released.keys, released.counts


@pytest.mark.parametrize(
    ("setting", "profile", "want"),
    [
        (None, "prod", True),
        (None, "local", False),
        (False, "prod", False),
        (True, "local", True),
    ],
)
def test_secure_rng_is_on_in_prod_and_off_locally_unless_set(setting, profile, want):
    assert secure_rng_on(setting, profile) is want


def test_the_run_parameter_reaches_the_dp_config_flat_or_nested():
    assert RunConfig().dp.secure_rng is None
    assert RunConfig.from_dict({"dp_secure_rng": True}).dp.secure_rng is True
    assert RunConfig.from_dict({"dp": {"secure_rng": False}}).dp.secure_rng is False
    assert DPConfig(secure_rng=True).secure_rng


def test_secure_draws_come_from_the_os_not_from_numpys_generator(monkeypatch):
    calls: list[int] = []
    real = noise_mod.os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(noise_mod.os, "urandom", counting)
    monkeypatch.setattr(np.random, "default_rng", lambda *a, **k: pytest.fail("numpy's generator was used"))
    released = release_counts(PAIRS, 5, 2, 1.0, SecureRandom(), threshold=KEEP_ALL)
    # 64 bits per uniform, 4 Gaussians a value, one value for each of the 3 distinct pairs
    assert calls and sum(calls) >= 8 * 3 * noise_mod.FLOAT_ATTACK_DRAWS
    assert released.keys.tolist() == [1, 7, 13] and released.counts.dtype == np.float64
    assert SecureRandom.source == SECURE_SOURCE


def test_secure_noise_is_standard_normal():
    z = SecureRandom().standard_normal((400, 500))
    assert z.shape == (400, 500)
    assert abs(z.mean()) < 0.01 and z.std() == pytest.approx(1.0, abs=0.01)  # 200,000 draws: 5 sigma is 0.011
    assert abs(float(np.mean(z**3))) < 0.03 and float(np.mean(z**4)) == pytest.approx(3.0, abs=0.1)
    assert isinstance(SecureRandom().standard_normal(), float)
    assert SecureRandom().standard_normal(7, dtype=np.float32).dtype == np.float32


def test_secure_counts_are_not_reproducible_seeded_ones_are():
    seqs = [[0, 1, 2, 3], [3, 2, 1], [4, 0]]
    seeded = [_counts(seqs, 5, 2, 1.0, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(seeded[0][1], seeded[1][1])
    secure = [_counts(seqs, 5, 2, 1.0, np.random.default_rng(7), noise=SecureRandom()) for _ in range(2)]
    assert np.array_equal(secure[0][0], seeded[0][0])  # the same pairs, kept by the threshold ...
    assert not np.array_equal(secure[0][1], secure[1][1])  # ... with other noise each time
    assert not np.array_equal(secure[0][1], seeded[0][1])


def test_secure_poisson_batches_sample_each_shopper_at_the_planned_rate():
    from ml.training.sampling import SecurePoissonBatches

    sampler = SecurePoissonBatches(n=2000, batches_per_epoch=10)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10
    sizes = [len(b) for b in batches]
    assert all(0 <= i < 2000 for b in batches for i in b)
    assert 150 < np.mean(sizes) < 250  # expected 200 a batch, std about 13
    assert len({tuple(b) for b in batches}) == 10  # fresh draws each batch


def test_secure_noise_replaces_opacus_noise_with_the_same_scale():
    from opacus import PrivacyEngine

    from ml.training.dp_sgd import use_secure_noise

    torch.manual_seed(0)
    model = torch.nn.Linear(200, 50)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(8, 200)), batch_size=8)
    with pytest.warns(UserWarning, match="Secure RNG"):
        engine = PrivacyEngine(accountant="rdp")
    model, optimizer, data = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        data_loader=data,
        noise_multiplier=2.0,
        max_grad_norm=0.5,
        poisson_sampling=False,
    )
    use_secure_noise(optimizer)
    (x,) = next(iter(data))
    model(x).sum().backward()  # zero inputs: the weight gradients are zero, all that moves is noise
    state = torch.random.get_rng_state()
    before = model._module.weight.detach().clone()
    optimizer.step()
    assert torch.equal(torch.random.get_rng_state(), state)  # torch's seeded generator was not drawn from
    moved = (model._module.weight.detach() - before) * 8  # lr 1, mean over the expected batch of 8
    assert float(moved.std()) == pytest.approx(2.0 * 0.5, rel=0.05)
