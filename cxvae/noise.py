"""Counter-based random numbers: the training noise of many seeds in one vectorised call.

A stack of S seeds (:class:`cxvae.train.SeedStack`) needs S independent random streams. With one
``torch.Generator`` per seed, every step made S separate small draws; on a GPU those ~12 x S kernel
launches took about half of a step of 100 seeds. A *counter-based* generator instead computes
each number as a fixed function of ``(seed, step, position, stream)``: the block cipher
Threefry-2x32 with 20 rounds (Salmon et al., 2011, "Parallel random numbers: as easy as 1, 2, 3";
the generator behind JAX's PRNG), written here in int32 tensor ops that wrap modulo 2^32. Every
seed's noise for a step is then one broadcast call, and seed s's numbers depend on nothing else:
not on the seeds trained beside it, the padding of the batch, the device, or the thread count.

Layout of the 64-bit key and 64-bit counter of the two 32-bit words at one position::

    key     = (seed, phase << 16 | stream)
    counter = (step, group << 16 | observation)      observation 0xFFFF: the group's own numbers

so seeds and steps below 2^32, and batches of up to 2^16 groups of up to 2^16 - 1 observations.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, Sequence, Tuple

import torch

__all__ = ["threefry2x32", "to_uniform", "to_normal", "seed_words", "step_noise", "word", "TRAIN", "VALID"]

TRAIN, VALID = 0, 1  # phases: the training steps, the validation passes
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)  # Threefry-2x32 (Random123)
_PARITY = 0x1BD11BDA
_MAX_GROUPS, _GROUP_POSITION = 1 << 16, 0xFFFF  # the group's numbers sit after any observation


def word(value: int) -> int:
    """An unsigned 32-bit value as the int32 with the same bits."""
    value = int(value) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def threefry2x32(key: Tuple[torch.Tensor, torch.Tensor],
                 counter: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32-20 of ``counter`` under ``key``: two int32 tensors of random bits.

    ``key`` and ``counter`` are pairs of int32 tensors (uint32 bits) that broadcast together; the
    outputs have the broadcast shape. Checked against Random123's known-answer vectors.
    """
    k0, k1 = key
    schedule = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = torch.broadcast_tensors(counter[0] + k0, counter[1] + k1)
    x0, x1 = x0.clone(), x1.clone()  # updated in place below
    for r in range(20):
        x0 += x1
        s = _ROTATIONS[r % 8]
        high = x1 << s  # rotate x1 left by s, in place (>> is arithmetic on int32, hence the mask)
        x1 >>= 32 - s
        x1 &= (1 << s) - 1
        x1 |= high
        x1 ^= x0
        if r % 4 == 3:  # key injection every 4 rounds
            i = r // 4 + 1
            x0 += schedule[i % 3]
            x1 += schedule[(i + 1) % 3] + i
    return x0, x1


def to_uniform(bits: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Uniforms on the grid (2j + 1) / 2^24 inside (0, 1), from the top 23 bits of int32 ``bits``
    (same shape; exact in float32)."""
    top = (bits >> 9) & 0x7FFFFF
    return (2 * top + 1).to(dtype) * 2.0 ** -24


def to_normal(bits0: torch.Tensor, bits1: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Standard normals from two int32 bit tensors by the Box-Muller transform (same shape).

    Built from the uniforms of :func:`to_uniform`, so |z| < 5.8: the tails beyond have
    probability 8e-9."""
    radius = torch.sqrt(-2.0 * torch.log(to_uniform(bits0, dtype)))
    return radius * torch.cos(2 * math.pi * to_uniform(bits1, dtype))


def seed_words(seeds: Sequence[int], device=None) -> torch.Tensor:
    """The int32 key words ``(S,)`` of integer ``seeds`` in [0, 2^32), for :func:`step_noise`
    (checked here, on the host, so that a step never waits for the device)."""
    seeds = [int(s) for s in seeds]
    if not seeds or any(not 0 <= s < 1 << 32 for s in seeds):
        raise ValueError(f"the noise needs one or more seeds in [0, 2^32); got {seeds}")
    return torch.tensor([word(s) for s in seeds], dtype=torch.int32, device=device)


@functools.lru_cache(maxsize=None)
def _stream_words(phase: int, n_streams: int, device: torch.device) -> torch.Tensor:
    """The second key word of each stream, ``(n_streams,)``; made once per device."""
    return torch.tensor([word(phase << 16 | stream) for stream in range(n_streams)], dtype=torch.int32, device=device)


def _words(seeds: torch.Tensor, phase: int, n_streams: int, step, positions: torch.Tensor) -> torch.Tensor:
    """Two :func:`threefry2x32` words per stream for every seed and position, in order:
    ``seeds (S,)`` int32, ``positions (*P)`` int32 -> ``(S, 2 n_streams, *P)``."""
    extra = (1,) * positions.dim()
    key = (seeds.view(-1, 1, *extra), _stream_words(phase, n_streams, positions.device).view(1, n_streams, *extra))
    counter = step if torch.is_tensor(step) else torch.full((), word(step), dtype=torch.int32, device=positions.device)
    return torch.stack(threefry2x32(key, (counter, positions)), dim=2).flatten(1, 2)


def step_noise(seeds, step, mask: torch.Tensor, u_dim: int, v_dim: int, pairs: bool,
               phase: int = TRAIN, dtype=torch.float32) -> Dict[str, torch.Tensor]:
    """All the randomness of one training step of the Group VAE, for each of ``seeds``.

    Args:
        seeds: S integer seeds in [0, 2^32) (one stream each), or their :func:`seed_words`.
        step: the step number in [0, 2^32) (the training step, or the batch of a validation pass),
            or its :func:`word` in a 0-d int32 tensor on the mask's device (read inside a CUDA graph).
        mask: ``(B, K)`` or ``(S, B, K)`` observed positions (the same batch layout for every seed).
        u_dim, v_dim: sizes of the group and instance codes.
        pairs: also draw the three uniform fields of the regulariser's pairs.
        phase: :data:`TRAIN` or :data:`VALID` (separate streams).
    Returns:
        ``u (S, B, u_dim)`` and ``v (S, B, K, v_dim)`` standard normals and, if ``pairs``,
        ``pairs (S, 3, B, K)`` uniforms in (0, 1) (for
        :func:`~cxvae.regularisers.pairs_from_uniforms`); zero at padded positions. The number
        at observation k of group b depends only on (seed, phase, step, b, k) and its place in the draw;
        a group's u only on (seed, phase, step, b).
    """
    n_groups, k_max = mask.shape[-2:]
    if n_groups > _MAX_GROUPS or k_max > _GROUP_POSITION:
        raise ValueError(f"the noise numbers at most {_MAX_GROUPS} groups of {_GROUP_POSITION} observations "
                         f"per batch; got a batch of {n_groups} groups of up to {k_max}")
    if not torch.is_tensor(step) and not 0 <= step < 1 << 32:
        raise ValueError(f"the noise needs a step in [0, 2^32); got {step}")
    if not (torch.is_tensor(seeds) and seeds.dtype == torch.int32):
        seeds = seed_words(seeds, mask.device)
    device = mask.device
    observations = torch.cat([torch.arange(k_max, dtype=torch.int32, device=device),
                              torch.full((1,), _GROUP_POSITION, dtype=torch.int32, device=device)])
    positions = (torch.arange(n_groups, dtype=torch.int32, device=device)[:, None] << 16) | observations  # (B, K + 1)
    # one call for everything: at an observation, v_d from words 2d and 2d + 1 and the pairs'
    # uniforms from the three words after them; at the group's position, u_d from words 2d, 2d + 1
    n_words = max(2 * v_dim + (3 if pairs else 0), 2 * u_dim)
    words = _words(seeds, phase, (n_words + 1) // 2, step, positions)  # (S, words, B, K + 1)
    at_group, at_obs = words[..., k_max], words[..., :k_max]
    u = to_normal(at_group[:, 0:2 * u_dim:2], at_group[:, 1:2 * u_dim:2], dtype)  # (S, u_dim, B)
    v = to_normal(at_obs[:, 0:2 * v_dim:2], at_obs[:, 1:2 * v_dim:2], dtype)  # (S, v_dim, B, K)
    observed = mask.expand(len(seeds), n_groups, k_max).to(dtype)
    noise = dict(u=u.transpose(1, 2), v=v.permute(0, 2, 3, 1) * observed[..., None])
    if pairs:
        noise["pairs"] = to_uniform(at_obs[:, 2 * v_dim:2 * v_dim + 3], dtype) * observed[:, None]
    return noise
