"""Tests of the grouped data: the exam-scores generator, padding, batching, translation targets,
and the readable errors (DataError / ConfigError) for every kind of bad input."""
import math

import numpy as np
import pytest
import torch

from cxvae.config import (DECODERS, GROUP_ENCODERS, INSTANCE_ENCODERS, PRESETS, REGULARISERS, SCALES,
                          ConfigError, ModelConfig, make_run_config, model_preset, scale_preset)
from cxvae.data import (DataError, GroupBatchLoader, GroupedData, from_groups, generate_exam_scores,
                        translation_targets, true_translation)
from cxvae.model import GroupVAE


def _left_aligned(sizes, k_max):
    """The mask that a left-aligned layout of groups of ``sizes`` must have, built by hand."""
    mask = torch.zeros(len(sizes), k_max, dtype=torch.bool)
    for i, k in enumerate(sizes):
        mask[i, :k] = True
    return mask


# ---------------------------------------------------------------------------------------------
# The generator (paper section 3.1)
# ---------------------------------------------------------------------------------------------
def test_generator_shapes_and_dtypes():
    """x, mask, u, v have the documented shapes and dtypes and K_max is the largest group."""
    d = generate_exam_scores(50, seed=3)
    k_max = int(d.sizes.max())
    assert d.x.shape == (50, k_max, 1) and d.x.dtype == torch.float32
    assert d.mask.shape == (50, k_max) and d.mask.dtype == torch.bool
    assert d.u.shape == (50, 2) and d.v.shape == (50, k_max, 1)
    assert len(d) == d.n_groups == 50 and d.x_dim == 1
    assert d.n_observations == int(d.sizes.sum()) == d.flat_x().shape[0]
    assert torch.equal(d.group_ids, torch.arange(50))
    assert generate_exam_scores(5, seed=0, dtype=torch.float64).x.dtype == torch.float64


def test_group_sizes_follow_poisson_plus_eight():
    """K_i >= 8 always, and for large N mean(K_i) ~ 24 and var(K_i) ~ 16 (Poisson(16) + 8)."""
    sizes = generate_exam_scores(20_000, seed=1).sizes.double()
    assert int(sizes.min()) >= 8
    assert abs(float(sizes.mean()) - 24.0) < 0.15  # standard error 4/sqrt(20000) = 0.03
    assert abs(float(sizes.var()) - 16.0) < 0.8


def test_factors_are_standard_normal():
    """u_i and v_ik are N(0, 1): sample means ~ 0 and standard deviations ~ 1."""
    d = generate_exam_scores(5_000, seed=2)
    v = d.v[d.mask]
    for sample in (d.u[:, 0], d.u[:, 1], v.flatten()):
        assert abs(float(sample.mean())) < 0.05
        assert abs(float(sample.std()) - 1.0) < 0.05


def test_generator_is_deterministic_per_seed_and_differs_across_seeds():
    """The same seed gives identical data; another seed gives different data."""
    a, b, c = (generate_exam_scores(40, seed=s) for s in (7, 7, 8))
    for name in ("x", "mask", "u", "v"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.u, c.u)
    assert not torch.equal(a.sizes, c.sizes)


def test_generator_leaves_global_rng_untouched():
    """Sampling data does not advance torch's global random state."""
    state = torch.get_rng_state()
    generate_exam_scores(30, seed=5)
    assert torch.equal(state, torch.get_rng_state())


def test_observations_follow_the_exam_scores_formula():
    """x - (2 mu + (sigma^2 + 1) v) is pure noise with std ~ noise_std (0.1) and mean ~ 0."""
    d = generate_exam_scores(3_000, seed=4, dtype=torch.float64)
    mu, sigma = d.u[:, 0], d.u[:, 1]
    expected = 2.0 * mu[:, None] + (sigma[:, None] ** 2 + 1.0) * d.v[..., 0]  # (N, K_max)
    residual = (d.x[..., 0] - expected)[d.mask]
    assert abs(float(residual.std()) - 0.1) < 0.002
    assert abs(float(residual.mean())) < 0.002


def test_noise_free_generator_is_exactly_the_formula():
    """With noise_std=0 every observation equals 2 mu + (sigma^2 + 1) v exactly."""
    d = generate_exam_scores(20, seed=6, noise_std=0.0, dtype=torch.float64)
    for i in range(d.n_groups):
        mu, sigma = d.u[i].tolist()
        k = int(d.sizes[i])
        expected = 2 * mu + (sigma ** 2 + 1) * d.v[i, :k, 0]
        torch.testing.assert_close(d.x[i, :k, 0], expected, rtol=1e-12, atol=1e-12)


def test_padding_is_zero_and_mask_left_aligned():
    """Padded x and v are exactly 0 and mask[i, k] == (k < K_i)."""
    d = generate_exam_scores(200, seed=8)
    assert torch.equal(d.mask, _left_aligned(d.sizes.tolist(), d.x.shape[1]))
    assert bool((d.x[~d.mask] == 0).all()) and bool((d.v[~d.mask] == 0).all())
    assert bool((d.x[d.mask] != 0).all())  # real observations are (almost surely) non-zero


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_groups=0), "n_groups"), (dict(n_groups=4, min_size=0), "min_size"),
    (dict(n_groups=4, noise_std=-0.1), "noise_std"), (dict(n_groups=4, noise_std=math.nan), "noise_std"),
])
def test_generator_rejects_bad_arguments(kwargs, name):
    """Nonsense generator arguments raise DataError naming the argument."""
    with pytest.raises(DataError, match=name):
        generate_exam_scores(**kwargs)


# ---------------------------------------------------------------------------------------------
# subset, pad_to
# ---------------------------------------------------------------------------------------------
def test_subset_trims_to_the_largest_selected_group():
    """subset keeps the chosen groups intact and trims padding to their largest size."""
    d = generate_exam_scores(100, seed=9)
    order = torch.argsort(d.sizes)
    pick = order[:5]  # the five smallest groups
    s = d.subset(pick)
    k = int(d.sizes[pick].max())
    assert s.x.shape == (5, k, 1) and s.mask.shape == (5, k) and s.v.shape == (5, k, 1)
    assert k < d.x.shape[1]
    assert torch.equal(s.group_ids, pick)
    assert torch.equal(s.u, d.u[pick])
    for row, i in enumerate(pick.tolist()):
        ki = int(d.sizes[i])
        assert torch.equal(s.x[row, :ki], d.x[i, :ki])
        assert torch.equal(s.mask[row], _left_aligned([ki], k)[0])
    sl = d.subset(slice(10, 20))
    assert torch.equal(sl.group_ids, torch.arange(10, 20))
    assert sl.x.shape[1] == int(d.sizes[10:20].max())


def test_pad_to_adds_empty_positions_only():
    """pad_to appends zero, unmasked positions and keeps every real value and factor."""
    d = generate_exam_scores(10, seed=10)
    k = d.x.shape[1]
    p = d.pad_to(k + 7)
    assert p.x.shape == (10, k + 7, 1) and p.mask.shape == (10, k + 7) and p.v.shape == (10, k + 7, 1)
    assert torch.equal(p.x[:, :k], d.x) and torch.equal(p.mask[:, :k], d.mask)
    assert not bool(p.mask[:, k:].any()) and bool((p.x[:, k:] == 0).all())
    assert torch.equal(p.u, d.u) and torch.equal(p.sizes, d.sizes)
    assert torch.equal(d.pad_to(k).x, d.x)
    with pytest.raises(DataError, match="cannot pad"):
        d.pad_to(k - 1)


# ---------------------------------------------------------------------------------------------
# GroupBatchLoader
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
def test_loader_yields_every_group_exactly_once_and_intact(bucket, shuffle):
    """Over one epoch each group appears once, whole, with its own observations and size."""
    d = generate_exam_scores(300, seed=12)
    loader = GroupBatchLoader(d, 32, shuffle=shuffle, bucket=bucket, bucket_window=2, seed=1)
    seen = []
    for batch in loader:
        assert batch.n_groups <= 32
        assert batch.x.shape[1] == int(batch.sizes.max())  # trimmed to its own largest group
        for row, i in enumerate(batch.group_ids.tolist()):
            k = int(d.sizes[i])
            assert int(batch.sizes[row]) == k
            assert torch.equal(batch.x[row, :k], d.x[i, :k])
            assert torch.equal(batch.u[row], d.u[i])
        seen += batch.group_ids.tolist()
    assert sorted(seen) == list(range(300))
    assert len(loader) == math.ceil(300 / 32)


def test_loader_drop_last_and_reshuffles_each_epoch():
    """drop_last drops only the short batch; epochs differ in order yet are reproducible from the seed."""
    d = generate_exam_scores(100, seed=13)
    loader = GroupBatchLoader(d, 32, drop_last=True, seed=3)
    first = [b.group_ids.tolist() for b in loader]
    second = [b.group_ids.tolist() for b in loader]
    assert len(first) == len(loader) == 3 and all(len(b) == 32 for b in first)
    assert first != second
    again = GroupBatchLoader(d, 32, drop_last=True, seed=3)
    assert [b.group_ids.tolist() for b in again] == first
    with pytest.raises(DataError):
        GroupBatchLoader(d, 0)


def test_loader_pads_batches_to_a_multiple_of_k_multiple_and_keeps_the_groups():
    """k_multiple=8: the same batches of the same groups, each padded to a multiple of 8
    positions (or to the data's own width, when that is less), so few shapes occur."""
    d = generate_exam_scores(300, seed=14)
    plain = list(GroupBatchLoader(d, 32, seed=2))
    padded = list(GroupBatchLoader(d, 32, seed=2, k_multiple=8))
    assert [b.group_ids.tolist() for b in padded] == [b.group_ids.tolist() for b in plain]
    for p, b in zip(padded, plain):
        k = p.x.shape[1]
        assert k % 8 == 0 or k == d.x.shape[1]
        assert b.x.shape[1] <= k < b.x.shape[1] + 8
        assert torch.equal(p.x[:, :b.x.shape[1]], b.x) and not p.mask[:, b.x.shape[1]:].any()
    assert len({p.x.shape for p in padded}) < len({b.x.shape for b in plain})
    with pytest.raises(DataError, match="k_multiple"):
        GroupBatchLoader(d, 32, k_multiple=0)


def _padded_fraction(loader):
    """Share of the padded positions in all batches of one epoch."""
    cells = real = 0
    for batch in loader:
        cells += batch.mask.numel()
        real += int(batch.mask.sum())
    return 1.0 - real / cells


def test_bucketing_reduces_padding():
    """Bucketing groups of similar size cuts the padded fraction well below no bucketing."""
    d = generate_exam_scores(2_048, seed=14)
    plain = _padded_fraction(GroupBatchLoader(d, 32, bucket=False, seed=0))
    bucketed = _padded_fraction(GroupBatchLoader(d, 32, bucket=True, seed=0))
    assert plain > 0.2  # K ~ Poisson(16) + 8 gives lots of padding in random batches
    assert bucketed < 0.5 * plain


# ---------------------------------------------------------------------------------------------
# Translation (paper section 5.1)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 17, 500])
def test_translation_targets_never_map_a_group_to_itself(n):
    """target[i] != i, every target is a valid group, each group is the target of exactly one."""
    target = translation_targets(n, seed=n)
    assert target.shape == (n,) and target.dtype == torch.long
    assert bool((target != torch.arange(n)).all())
    assert sorted(target.tolist()) == list(range(n))
    assert torch.equal(target, translation_targets(n, seed=n))
    with pytest.raises(DataError):
        translation_targets(1)


def test_true_translation_is_the_formula():
    """x'_ik = 2 mu_j + (sigma_j^2 + 1) v_ik with j = target[i], zero at padded positions."""
    d = generate_exam_scores(25, seed=15, dtype=torch.float64)
    target = translation_targets(25, seed=2)
    out = true_translation(d, target)
    assert out.shape == d.x.shape
    for i in range(25):
        j = int(target[i])
        mu_j, sigma_j = d.u[j].tolist()
        for k in range(d.x.shape[1]):
            expected = 2 * mu_j + (sigma_j ** 2 + 1) * float(d.v[i, k, 0]) if d.mask[i, k] else 0.0
            assert math.isclose(float(out[i, k, 0]), expected, rel_tol=1e-12, abs_tol=1e-12)
    with pytest.raises(DataError, match="true factors"):
        true_translation(GroupedData(d.x, d.mask), target)


# ---------------------------------------------------------------------------------------------
# from_groups and the errors for bad data
# ---------------------------------------------------------------------------------------------
def test_from_groups_pads_ragged_groups():
    """Ragged 1-D groups become (N, K_max, 1) left-aligned with zero padding; 2-D keep x_dim."""
    d = from_groups([[1.0, 2.0, 3.0], [4.0], [5.0, 6.0]])
    assert d.x.shape == (3, 3, 1)
    assert torch.equal(d.mask, _left_aligned([3, 1, 2], 3))
    assert d.x[..., 0].tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0]]
    two = from_groups([np.ones((2, 2)), np.arange(6.0).reshape(3, 2)], dtype=torch.float64)
    assert two.x.shape == (2, 3, 2) and two.x.dtype == torch.float64
    assert two.x[1].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert two.u is None and two.v is None


@pytest.mark.parametrize("groups, words", [
    ([], "no groups"),
    ([[1.0, 2.0], []], "group 1 is empty"),
    ([[1.0, 2.0], np.ones((2, 2))], "same number of columns"),
    ([[1.0, math.nan]], "NaN or infinite"),
    ([[1.0], [math.inf, 2.0]], "NaN or infinite"),
    ([np.ones((2, 2, 2))], "must be 1-D (K,) or 2-D"),
])
def test_from_groups_bad_input_raises_data_error(groups, words):
    """Every malformed list of groups raises DataError with a message naming the problem."""
    with pytest.raises(DataError) as err:
        from_groups(groups)
    assert words in str(err.value)


@pytest.mark.parametrize("groups", [[[[1.0, 2.0], [3.0]]], [[[]]]], ids=["ragged-rows", "zero-columns"])
def test_from_groups_malformed_group_raises_data_error(groups):
    """A group with ragged rows or with no columns raises DataError rather than a raw error/silence."""
    with pytest.raises(DataError):
        from_groups(groups)


def test_validate_rejects_empty_groups():
    """A group with no observations raises DataError saying which group is empty."""
    mask = torch.tensor([[True, True], [False, False]])
    with pytest.raises(DataError, match=r"empty.*\[1\]"):
        GroupedData(torch.zeros(2, 2, 1), mask).validate()


def test_validate_rejects_non_left_aligned_mask():
    """A mask with a hole before an observation raises DataError about left alignment."""
    mask = torch.tensor([[True, True], [False, True]])
    with pytest.raises(DataError, match="left aligned"):
        GroupedData(torch.zeros(2, 2, 1), mask).validate()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_validate_rejects_non_finite_values(bad):
    """A NaN or infinite observation raises DataError, and so does the same value at a padded
    position (the models mask padding by multiplying with 0, and NaN x 0 is NaN)."""
    d = generate_exam_scores(8, seed=16)
    x = d.x.clone()
    x[3, 0, 0] = bad
    with pytest.raises(DataError, match="observation.* contain NaN or infinite"):
        GroupedData(x, d.mask).validate()
    padded = d.pad_to(d.x.shape[1] + 1)
    padded.validate()
    padded.x[0, -1, 0] = bad
    with pytest.raises(DataError, match="padded positions of x hold NaN or infinite"):
        padded.validate()


def test_check_batch_rejects_two_dimensional_x():
    """x of shape (N, K) instead of (N, K, x_dim) raises DataError quoting the expected shape."""
    model = GroupVAE(model_preset("cxvae"))
    with pytest.raises(DataError, match=r"\(n_groups, max_group_size, x_dim\)"):
        model.check_batch(GroupedData(torch.zeros(4, 5), torch.ones(4, 5, dtype=torch.bool)))


def test_check_batch_rejects_x_dim_mismatch():
    """Observations with x_dim=2 for a model built for x_dim=1 raise DataError naming both."""
    model = GroupVAE(model_preset("cxvae"))
    data = from_groups([np.ones((3, 2)), np.ones((4, 2))])
    with pytest.raises(DataError, match="x_dim=1; got 2"):
        model.check_batch(data)


@pytest.mark.parametrize("preset, regulariser", [("cxvae", "groupwise"), ("cxvae-nemeth", "nemeth")])
def test_check_batch_accepts_singletons_but_not_a_lone_group(preset, regulariser):
    """A group of one observation is data (the regulariser skips it); a single group, which the
    regulariser cannot pair with another, raises DataError naming the regulariser."""
    GroupVAE(model_preset(preset)).check_batch(from_groups([[1.0, 2.0, 3.0], [4.0], [5.0, 6.0]]))
    with pytest.raises(DataError) as err:
        GroupVAE(model_preset(preset)).check_batch(from_groups([[1.0, 2.0, 3.0]]))
    assert regulariser in str(err.value) and "at least 2 groups" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Configuration names
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, valid", [
    (lambda: model_preset("vae-of-doom"), PRESETS),
    (lambda: make_run_config("vae-of-doom"), PRESETS),
    (lambda: scale_preset("huge"), SCALES),
    (lambda: make_run_config("cxvae", scale="huge"), SCALES),
    (lambda: ModelConfig(group_encoder="sum"), GROUP_ENCODERS),
    (lambda: ModelConfig(instance_encoder="psychic"), INSTANCE_ENCODERS),
    (lambda: ModelConfig(regulariser="l2"), REGULARISERS),
    (lambda: model_preset("cxvae", decoder="cnn"), DECODERS),
])
def test_unknown_names_raise_config_error_listing_valid_names(make, valid):
    """An unknown preset, scale or component raises ConfigError that lists every valid name."""
    with pytest.raises(ConfigError) as err:
        make()
    for name in valid:
        assert name in str(err.value)
