"""Building blocks shared by the Group VAE (:mod:`cxvae.model`) and its critics
(:mod:`cxvae.regularisers`): the MLP and the noise drawn at observed positions only.

They live here, below both modules, so that neither imports the other's internals (``model``
imports ``regularisers`` for the critics; the critics need only these blocks).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

__all__ = ["MLP", "observed_noise", "uniform_pair_noise"]


class MLP(nn.Sequential):
    """``depth`` hidden layers of ``hidden`` ReLU units, then a linear output layer."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 32, depth: int = 3):
        layers, width = [], in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)


def observed_noise(mask: torch.Tensor, dim: int, kind: str = "normal", dtype=torch.float32,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Noise ``(B, K, dim)`` drawn for the observed positions of ``mask (B, K)`` only, in group
    order (zero at padding), so a seeded draw does not depend on how much padding a batch has.
    ``kind`` is ``'normal'`` (N(0, 1)) or ``'uniform'`` (U(0, 1))."""
    observed = mask.flatten().nonzero().squeeze(1)
    draw = torch.randn if kind == "normal" else torch.rand
    flat = draw(len(observed), dim, dtype=dtype, device=mask.device, generator=generator)
    out = torch.zeros(mask.numel(), dim, dtype=dtype, device=mask.device)
    out[observed] = flat
    return out.view(*mask.shape, dim)


def uniform_pair_noise(mask: torch.Tensor, dtype=torch.float32, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Three independent U(0, 1) fields ``(3, B, K)`` at the observed positions of ``mask (B, K)``
    (drawn one after the other), for :func:`cxvae.regularisers.pairs_from_uniforms`."""
    return torch.stack([observed_noise(mask, 1, "uniform", dtype, generator)[..., 0] for _ in range(3)])
