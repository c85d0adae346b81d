"""DP-SGD's settings, the record of a DP-SGD run, and the OS CSPRNG as its noise source.

`DPSettings` is what Opacus needs for a run (`ml.training.train.train_bi_encoder`); `DPInfo` is what the run
reports for the privacy report and the composed epsilon; `use_secure_noise` makes a single-process optimizer
draw its Gaussian noise from `ml.privacy.noise.SecureRandom`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, cast

import torch

from ml.privacy.noise import SecureRandom

if TYPE_CHECKING:  # Opacus is imported only when DP is on (serving does not need it)
    from opacus.optimizers import DPOptimizer


@dataclass
class DPSettings:
    """What Opacus needs. The noise multiplier comes from the privacy plan (ml.privacy.accounting), which
    sizes it with Opacus' RDP accountant so that DP-SGD composed with any other mechanism meets the target."""

    noise_multiplier: float
    delta: float
    max_grad_norm: float
    # the Gaussian noise and the Poisson sample of shoppers from the OS CSPRNG (ml.privacy.noise): not reproducible
    # from the seed; off, Opacus draws from torch's generator seeded with the run's seed
    secure_rng: bool = False


class DPInfo(TypedDict):
    """The DP-SGD run as trained: what the privacy report and the composed epsilon read."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    accountant: str
    epsilon_sgd: float
    delta: float
    clipping: str
    examples_per_user: int
    secure_rng: bool
    noise_source: str


def use_secure_noise(optimizer: DPOptimizer) -> None:
    """Make a single-process Opacus optimizer draw its Gaussian noise from the OS CSPRNG.

    Opacus' `secure_mode` would do this with torchcsprng, which is not installed; this replaces the optimizer's
    `add_noise` (DPOptimizer and its ghost-clipping subclass, Opacus 1.6) by the same step with
    `ml.privacy.noise.SecureRandom`'s draws: same standard deviation, same bookkeeping of processed gradients,
    and, like `secure_mode`, each value a sum of Gaussians that resists floating-point attacks."""
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    source = SecureRandom()

    def add_noise() -> None:
        multiplier = getattr(optimizer, "_adjusted_noise_multiplier", optimizer.noise_multiplier)
        std = float(multiplier) * float(cast(float, optimizer.max_grad_norm))
        for p in optimizer.params:
            _check_processed_flag(p.summed_grad)
            noise = torch.from_numpy(source.standard_normal(tuple(p.summed_grad.shape)) * std)
            p.grad = (p.summed_grad + noise.to(p.summed_grad.device, p.summed_grad.dtype)).view_as(p)
            _mark_as_processed(p.summed_grad)

    setattr(optimizer, "add_noise", add_noise)  # noqa: B010 (an instance attribute overrides the method)
    optimizer.secure_mode = True
