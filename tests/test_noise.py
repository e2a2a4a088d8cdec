"""Tests of the counter-based training noise (:mod:`cxvae.noise`): Threefry against Random123's
known answers, the distributions of the numbers, and that seed s's noise depends on nothing but
(seed, step, position): not on the other seeds, the padding or the device."""
import pytest
import torch
from scipy import stats

from cxvae.data import generate_exam_scores
from cxvae.noise import TRAIN, VALID, step_noise, threefry2x32, to_normal, to_uniform, word

M = 0xFFFFFFFF


def _word(value):
    return torch.tensor(word(value), dtype=torch.int32)


@pytest.mark.parametrize("counter, key, expected", [
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((M, M), (M, M), (0x1CB996FC, 0xBB002BE7)),
    ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_gives_random123s_known_answers(counter, key, expected):
    """Threefry-2x32-20 known-answer vectors of Random123 (kat_vectors), as JAX tests them too."""
    out = threefry2x32(tuple(map(_word, key)), tuple(map(_word, counter)))
    assert tuple(int(w) & M for w in out) == expected


def test_uniforms_and_normals_have_their_distributions():
    """200,000 numbers from consecutive counters: Kolmogorov-Smirnov against U(0, 1) and N(0, 1)
    (p > 0.001), the uniforms strictly inside (0, 1), the normals bounded by the 24-bit floor."""
    bits = threefry2x32((_word(3), _word(5)), (_word(0), torch.arange(200_000, dtype=torch.int32)))
    u, z = to_uniform(bits[0]), to_normal(*bits)
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert float(z.abs().max()) < 5.8


def test_streams_of_seeds_steps_phases_and_purposes_are_uncorrelated():
    """Numbers at the same positions for neighbouring seeds, steps or phases, and the v noise
    against the u noise and the pairs of one draw: all correlations within 5 standard errors of 0."""
    mask = torch.ones(256, 64, dtype=torch.bool)
    base = step_noise([7], 3, mask, 2, 1, pairs=True)
    others = [step_noise([8], 3, mask, 2, 1, pairs=True)["v"], step_noise([7], 4, mask, 2, 1, pairs=True)["v"],
              step_noise([7], 3, mask, 2, 1, pairs=True, phase=VALID)["v"], base["pairs"][:, 0, ..., None],
              base["u"][:, :, None, :1].expand(-1, -1, 64, -1)]
    n = mask.numel()
    for other in others:
        r = torch.corrcoef(torch.stack([base["v"].flatten(), other.flatten()]))[0, 1]
        assert abs(float(r)) < 5 / n ** 0.5
    u = base["u"][0]
    assert abs(float(torch.corrcoef(u.T)[0, 1])) < 5 / 256 ** 0.5


def test_a_seeds_noise_is_the_same_in_any_stack_and_under_any_padding():
    """Seed 11's noise alone, inside a stack (in any position), and for the same groups padded to
    a longer K: identical at observed positions, and zero at padding."""
    data = generate_exam_scores(32, seed=0)
    alone = step_noise([11], 5, data.mask, 2, 1, pairs=True)
    stacked = step_noise([3, 11, 2 ** 32 - 1], 5, data.mask, 2, 1, pairs=True)
    padded_mask = torch.cat([data.mask, torch.zeros(32, 9, dtype=torch.bool)], dim=1)
    padded = step_noise([11], 5, padded_mask, 2, 1, pairs=True)
    k = data.mask.shape[1]
    for key in alone:
        assert torch.equal(stacked[key][1], alone[key][0]), key
    assert torch.equal(padded["u"], alone["u"])
    assert torch.equal(padded["v"][:, :, :k], alone["v"]) and torch.equal(padded["pairs"][..., :k], alone["pairs"])
    assert torch.count_nonzero(alone["v"][0][~data.mask]) == 0
    assert torch.count_nonzero(alone["pairs"][0][:, ~data.mask]) == 0
    assert torch.count_nonzero(padded["v"][:, :, k:]) == 0 and torch.count_nonzero(padded["pairs"][..., k:]) == 0


def test_step_noise_rejects_what_it_cannot_number():
    mask = torch.ones(4, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"seeds in \[0, 2\^32\); got \[-1\]"):
        step_noise([-1], 0, mask, 2, 1, pairs=False)
    with pytest.raises(ValueError, match="one or more seeds"):
        step_noise([], 0, mask, 2, 1, pairs=False)
    with pytest.raises(ValueError, match="a step in"):
        step_noise([0], 1 << 32, mask, 2, 1, pairs=False)
    with pytest.raises(ValueError, match="65535 observations"):
        step_noise([0], 0, torch.ones(1, 65_536, dtype=torch.bool), 2, 1, pairs=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_gpu_draws_the_same_noise_as_the_cpu():
    """The same words bit for bit; the normals to the rounding of log and cos."""
    data = generate_exam_scores(64, seed=1)
    cpu = step_noise([0, 5], 9, data.mask, 2, 1, pairs=True, phase=TRAIN)
    gpu = step_noise([0, 5], 9, data.mask.cuda(), 2, 1, pairs=True, phase=TRAIN)
    assert torch.equal(gpu["pairs"].cpu(), cpu["pairs"])
    for key in ("u", "v"):
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], rtol=1e-6, atol=1e-6)


def test_a_step_given_as_a_device_word_draws_what_the_integer_step_draws():
    """Inside a CUDA graph the step is read from a tensor; it must draw the same numbers."""
    mask = generate_exam_scores(8, seed=0).mask
    as_int = step_noise([4], 3_000_000_000, mask, 2, 1, pairs=True)
    as_tensor = step_noise([4], torch.tensor(word(3_000_000_000), dtype=torch.int32), mask, 2, 1, pairs=True)
    for key in as_int:
        assert torch.equal(as_int[key], as_tensor[key]), key
