"""The model's scalar heads as modules whose per-sample gradients Opacus computes cheaply (DP-SGD).

`FeatureWeights` weighs the history features and `ContentScale` scales the text similarity
(`ml.training.model.BiEncoder`); each registers its own per-sample gradient with Opacus, which otherwise
would build per-sample matrices the size of the catalogue.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureWeights(nn.Module):
    """A weighted sum over the last axis: [B, N, F] -> [B, N].

    As an nn.Linear over [B, N, F], Opacus' ghost clipping would build a [B, N, N] matrix per step (N =
    the catalogue); the per-sample gradient is only [B, F], so this module registers that instead.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight


def _feature_weights_grad_sample(
    layer: FeatureWeights, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    # [B, ..., F] features and [B, ...] backprops: one gradient per leading row (per shopper when grouped)
    return {layer.weight: torch.einsum("b...f,b...->bf", activations[0], backprops)}


class ContentScale(nn.Module):
    """exp(log_scale) * scores: a learned multiplier on the text similarity, 1 at the start.

    The temperature sets how much the zero-shot similarity counts against the behavioural features; a fixed
    one forced the feature weights to make up for it (a negative shared-brand weight: same-brand items are
    already close in text). The log parameterization keeps the scale positive and its step sizes relative.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores * self.log_scale.exp()


def _content_scale_grad_sample(
    layer: ContentScale, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    per_sample = (activations[0] * backprops).flatten(1).sum(dim=1, keepdim=True) * layer.log_scale.exp()
    return {layer.log_scale: per_sample}


def _register_with_opacus() -> None:
    try:
        from opacus.grad_sample import register_grad_sampler
    except ImportError:  # serving does not need Opacus
        return
    register_grad_sampler(FeatureWeights)(_feature_weights_grad_sample)
    register_grad_sampler(ContentScale)(_content_scale_grad_sample)


_register_with_opacus()
