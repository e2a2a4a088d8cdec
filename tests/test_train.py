"""Tests of training at smoke scale: determinism, a falling loss, the guards against divergence
and bad data, checkpoints that load without pickle, data splits and device resolution."""
import json

import pandas as pd
import numpy as np
import pytest
import torch

from cxvae.config import ConfigError

from cxvae.config import RunConfig, make_run_config
from cxvae.data import DataError, GroupedData
from cxvae.model import GroupVAE, load_model
from cxvae.train import (TrainingDiverged, evaluate_neg_elbo, make_splits, resolve_device, save_run, train)


def _smoke(seed=0, **train_overrides):
    """The smoke-scale CxVAE run of the issue: 2 epochs on the CPU."""
    return make_run_config("cxvae", seed=seed, scale="smoke", device="cpu", train={"epochs": 2, **train_overrides})


@pytest.fixture(scope="module")
def splits():
    """The smoke-scale data splits, made once."""
    return make_splits(_smoke().data)


@pytest.fixture(scope="module")
def runs(splits):
    """Two runs with seed 0 and one with seed 1 (shared by the tests below)."""
    return {name: train(_smoke(seed), splits=splits, progress=False)
            for name, seed in (("a", 0), ("b", 0), ("other", 1))}


def _states_equal(m1, m2):
    s1, s2 = m1.state_dict(), m2.state_dict()
    return s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_training_is_deterministic_for_a_seed(runs):
    """Two runs with the same seed give the same history (but wall time) and identical weights."""
    columns = [c for c in runs["a"].history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(runs["a"].history[columns], runs["b"].history[columns], check_exact=True)
    assert _states_equal(runs["a"].model, runs["b"].model)


def test_training_differs_across_seeds(runs):
    """Another seed gives different weights and a different validation curve."""
    assert not _states_equal(runs["a"].model, runs["other"].model)
    assert not runs["a"].history.valid_neg_elbo.equals(runs["other"].history.valid_neg_elbo)


def test_history_records_each_epoch_and_the_loss_falls(runs):
    """One finite row per epoch; the validation -ELBO of the last epoch is below the first's."""
    h = runs["a"].history
    assert list(h.epoch) == [1, 2]
    assert {"train_neg_elbo", "train_mi", "valid_neg_elbo", "step", "seconds"} <= set(h.columns)
    assert bool(h[["train_neg_elbo", "valid_neg_elbo", "train_mi"]].notna().all().all())
    assert h.valid_neg_elbo.iloc[-1] < h.valid_neg_elbo.iloc[0]
    assert not runs["a"].model.training  # returned in eval mode


def test_checkpoint_round_trip(runs, tmp_path):
    """save_run + load_model restore identical outputs; model.pt loads with weights_only=True (no pickle)."""
    result = runs["a"]
    out = save_run(tmp_path / "run", result)
    for name in ("config.json", "model.pt", "history.csv"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "history.csv", "model.pt"]  # no temporary left
    assert RunConfig.from_dict(json.loads((out / "config.json").read_text())) == result.config
    pd.testing.assert_frame_equal(pd.read_csv(out / "history.csv"), result.history, check_dtype=False)

    blob = torch.load(out / "model.pt", weights_only=True)
    assert set(blob) == {"config_json", "state_dict"}
    model, config = load_model(out / "model.pt")
    assert isinstance(model, GroupVAE) and not model.training
    assert config == result.config.to_dict()
    assert _states_equal(model, result.model)

    data = make_splits(result.config.data)["holdout"].subset(slice(0, 32))
    with torch.no_grad():
        before = result.model.encode(data.x, data.mask, sample=False)
        after = model.encode(data.x, data.mask, sample=False)
        for key in before:
            assert torch.equal(before[key], after[key]), key
        assert all(torch.equal(a, b) for a, b in zip(result.model.decode(before["u"], before["v"]),
                                                         model.decode(before["u"], before["v"])))


def test_huge_learning_rate_raises_training_diverged(splits):
    """lr = 1e6 makes the loss NaN and train raises TrainingDiverged saying what to try."""
    with pytest.raises(TrainingDiverged) as err:
        train(_smoke(lr=1e6, epochs=1), splits=splits, progress=False)
    message = str(err.value)
    assert "diverged in epoch 1" in message and "smaller learning rate" in message


def test_nan_in_the_training_data_raises_data_error(splits):
    """A NaN observation in the training split is refused before training with a DataError."""
    bad = dict(splits)
    x = splits["train"].x.clone()
    x[5, 0, 0] = float("nan")
    bad["train"] = GroupedData(x, splits["train"].mask)
    with pytest.raises(DataError, match="NaN or infinite"):
        train(_smoke(epochs=1), splits=bad, progress=False)


def test_singleton_groups_train_with_a_regulariser(splits):
    """A training group of one observation trains with the group-wise regulariser, which skips it
    (counted in the history); a training split of one group, which it cannot pair, is refused."""
    bad = dict(splits)
    mask = splits["train"].mask.clone()
    mask[3, 1:] = False
    x = splits["train"].x * mask[..., None]
    bad["train"] = GroupedData(x, mask)
    history = train(_smoke(epochs=1), splits=bad, progress=False).history
    assert history.skipped_groups.tolist() == [1] and np.isfinite(history.train_neg_elbo).all()
    with pytest.raises(DataError, match="groupwise"):
        train(_smoke(epochs=1), splits=dict(train=splits["train"].subset(slice(0, 1))), progress=False)


def test_splits_are_disjoint_slices_of_one_sample(splits):
    """train/valid/holdout have the configured sizes, distinct groups and group sizes >= 8."""
    cfg = _smoke().data
    assert [len(splits[k]) for k in ("train", "valid", "holdout")] == [cfg.n_train, cfg.n_valid, cfg.n_holdout]
    ids = torch.cat([splits[k].group_ids for k in ("train", "valid", "holdout")])
    assert torch.equal(ids, torch.arange(len(ids)))
    u = torch.cat([splits[k].u for k in ("train", "valid", "holdout")])
    assert len(torch.unique(u, dim=0)) == len(u)
    for part in splits.values():
        assert int(part.sizes.min()) >= 8
        assert part.x.shape[1] == int(part.sizes.max())  # trimmed to its own largest group


def test_evaluate_neg_elbo_is_repeatable_and_leaves_rng_and_mode(runs, splits):
    """evaluate_neg_elbo gives the same number twice, keeps the global RNG and the train/eval mode."""
    model = runs["a"].model
    model.train()
    state = torch.get_rng_state()
    first = evaluate_neg_elbo(model, splits["valid"], seed=3)
    second = evaluate_neg_elbo(model, splits["valid"], seed=3)
    assert first == second and first == first  # equal and not NaN
    assert torch.equal(state, torch.get_rng_state())
    assert model.training
    model.eval()


def test_resolve_device():
    """'cpu' and 'auto' resolve; nonsense names raise ValueError listing the valid ones."""
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    for name in ("gpu", "tpu", "CPU", "cudax", "cuda:", "cuda:a", None, 0):
        with pytest.raises(ValueError, match="auto, cpu, cuda"):
            resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_resolve_device_refuses_cuda_without_cuda(name):
    """Asking for CUDA on a machine without it raises an error that suggests --device cpu."""
    with pytest.raises(ConfigError, match="CUDA is not available.*--device cpu"):
        resolve_device(name)


def test_save_run_never_leaves_half_a_config(runs, tmp_path, monkeypatch):
    """config.json is written beside and renamed: a write that fails keeps the file that was there
    and leaves no temporary file."""
    from cxvae import train as train_module

    out = save_run(tmp_path / "run", runs["a"])
    before = (out / "config.json").read_text()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(train_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_run(out, runs["a"])
    assert (out / "config.json").read_text() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
