"""Where the DP mechanisms' randomness comes from: the operating system's CSPRNG, or a seeded generator.

The Gaussian noise on the transition counts and on DP-SGD's gradients, and DP-SGD's Poisson sample of
shoppers, are what the (epsilon, delta) guarantee rests on. A seeded generator (numpy's PCG64, torch's
Mersenne Twister) is reproducible from its seed, and its state can be recovered from enough of its output,
so the guarantee then holds only against an adversary who knows neither. Production therefore draws from
the operating system's CSPRNG (`os.urandom`, what `secrets` uses); the local profile keeps the seeded
generator: reproducible from the seed, and faster (benchmarks/results/secure-rng.md has the cost).

Opacus' own `secure_mode` needs the `torchcsprng` package, which is not installed with Opacus 1.6 (and whose
last release targets torch 1.8), so `ml.training.train` hands Opacus these draws instead: the same defence
against floating-point attacks (each noise value is the sum of four Gaussians, halved: the variance is
unchanged; Opacus' `_generate_noise`, after Mironov 2012 and Holohan et al. 2021) and a Poisson sample drawn
from the same source.
"""

from __future__ import annotations

import math
import os
from typing import Any, Protocol

import numpy as np

SECURE_SOURCE = "os.urandom"
# a secure noise value is the sum of this many standard Gaussians divided by sqrt of it (variance 1): the set
# of floats it can take no longer reveals the value it was added to (Opacus' secure_mode draws 2n = 4)
FLOAT_ATTACK_DRAWS = 4
_BLOCK = 1 << 20  # values drawn per call to the OS: bounded extra memory whatever the size asked for


def secure_rng_on(setting: bool | None, profile: str) -> bool:
    """Whether DP randomness comes from the CSPRNG: `setting` when given, else on in the prod profile and off
    in the local one (reproducible and faster while developing; production retrains with it on)."""
    if setting is not None:
        return bool(setting)
    return profile == "prod"


class NoiseSource(Protocol):
    """What the counted mechanisms draw from: `np.random.Generator` (seeded) or `SecureRandom`."""

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> Any: ...


def _uniform(n: int) -> np.ndarray:
    """n floats uniform in [0, 1) from the OS CSPRNG: the top 53 bits of a random 64-bit word each."""
    words = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _gaussians(n: int) -> np.ndarray:
    """n standard Gaussians (float64) from the OS CSPRNG, by Box-Muller (both outputs of each pair used)."""
    pairs = (n + 1) // 2
    u = _uniform(2 * pairs)
    radius = np.sqrt(-2.0 * np.log1p(-u[:pairs]))  # 1 - u is in (0, 1]: the log is finite
    angle = (2.0 * math.pi) * u[pairs:]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]


class SecureRandom:
    """Gaussian and uniform draws from `os.urandom`: not reproducible, by design.

    `standard_normal` has numpy's signature for what the mechanisms use, so a seeded `np.random.Generator` and
    this one are interchangeable; each value is FLOAT_ATTACK_DRAWS Gaussians summed and rescaled."""

    source = SECURE_SOURCE

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> Any:
        if size is None:
            return float(self.standard_normal(1)[0])
        shape = (size,) if isinstance(size, int) else tuple(size)
        n = int(np.prod(shape, dtype=np.int64))
        out = np.empty(n, dtype=dtype)
        for lo in range(0, n, _BLOCK):
            hi = min(n, lo + _BLOCK)
            acc = np.zeros(hi - lo)
            for _ in range(FLOAT_ATTACK_DRAWS):
                acc += _gaussians(hi - lo)
            out[lo:hi] = acc / math.sqrt(FLOAT_ATTACK_DRAWS)
        return out.reshape(shape)

    def random(self, size: int) -> np.ndarray:
        """`size` floats uniform in [0, 1)."""
        return _uniform(int(size))
