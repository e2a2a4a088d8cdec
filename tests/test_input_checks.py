"""Bad input from a user's own data fails early with a DataError that says what is wrong, never
a shape error from deep inside torch or a silent wrong answer."""
import dataclasses
import io

import pytest
import torch

from cxvae.config import ConfigError, make_run_config
from cxvae.data import DataError, GroupBatchLoader, GroupedData, from_groups
from cxvae.evaluation import ModelScorer
from cxvae.model import GroupVAE, load_model
from cxvae.train import save_checkpoint, train


def _groups(n: int, size: int = 3, x_dim: int = 1, seed: int = 0) -> GroupedData:
    gen = torch.Generator().manual_seed(seed)
    return from_groups([torch.randn(size + i % 3, x_dim, generator=gen) for i in range(n)])


def _cfg(preset: str = "cxvae", **train):
    cfg = make_run_config(preset, scale="smoke")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, **train))


def _nan_padded(data: GroupedData) -> GroupedData:
    return GroupedData(data.x.masked_fill(~data.mask[..., None], float("nan")), data.mask)


def test_a_regulariser_never_trains_on_a_batch_of_one_group():
    """One group in the data, or a batch size of 1, is refused; a trailing batch of one group
    joins the batch before it (17 groups in batches of 16 make one batch of 17)."""
    with pytest.raises(DataError, match="at least 2 groups, got 1"):
        train(_cfg(), splits=dict(train=_groups(1)), progress=False)
    with pytest.raises(ConfigError, match="batch size of at least 2"):
        train(_cfg(batch_size=1), splits=dict(train=_groups(8)), progress=False)
    data = _groups(17)
    loader = GroupBatchLoader(data, 16, seed=0, min_batch=2)
    assert [b.n_groups for b in loader] == [17] and len(loader) == 1
    plain = GroupBatchLoader(data, 16, seed=0)
    assert sorted(b.n_groups for b in plain) == [1, 16] and len(plain) == 2
    with pytest.raises(DataError, match="min_batch must be between 1 and batch_size=1"):
        GroupBatchLoader(data, 1, min_batch=2)
    ml_vae = train(_cfg("ml-vae", batch_size=1), splits=dict(train=_groups(3)), progress=False)
    assert len(ml_vae.history) == 1  # no regulariser: batches of one group are fine


def test_a_trailing_batch_of_one_group_trains_with_the_one_before():
    result = train(_cfg(batch_size=16), splits=dict(train=_groups(17)), progress=False)
    assert result.history.step.iloc[-1] == 1  # one step of 17 groups, not 16 and then 1
    assert torch.isfinite(torch.tensor(result.history.train_neg_elbo.to_numpy())).all()


@pytest.mark.parametrize("drop_last", [False, True])
def test_min_batch_changes_nothing_unless_the_last_batch_is_too_small(drop_last):
    """Over three epochs, the batches of min_batch=2 equal those of min_batch=1 whenever the last
    batch holds at least 2 groups, for group counts around multiples of the batch size."""
    for n_groups in (15, 16, 18, 31, 32, 34, 50):
        data = _groups(n_groups)
        one, two = (GroupBatchLoader(data, 16, seed=3, drop_last=drop_last, min_batch=m) for m in (1, 2))
        assert len(one) == len(two)
        for _ in range(3):
            assert [b.tolist() for b in one.batch_indices()] == [b.tolist() for b in two.batch_indices()]


def test_the_observations_must_be_finite_floats_padding_included():
    data = _groups(4)
    with pytest.raises(DataError, match="padded positions of x hold NaN"):
        _nan_padded(data).validate()
    with pytest.raises(DataError, match="floating point"):
        GroupedData(data.x.long(), data.mask).validate()
    with pytest.raises(DataError, match="dtype must be floating point"):
        from_groups([[0.4, 1.7, -0.6]], dtype=torch.int64)
    float64 = from_groups([g[:k].double() for g, k in zip(data.x, data.sizes)], dtype=torch.float64)
    with pytest.raises(DataError, match="float32 but the observations are torch.float64"):
        train(_cfg(), splits=dict(train=float64), progress=False)


def test_train_checks_the_splits_it_is_given():
    with pytest.raises(DataError, match="a dict with a 'train' entry"):
        train(_cfg(), splits=_groups(8), progress=False)
    with pytest.raises(DataError, match=r"keys \['valid'\]"):
        train(_cfg(), splits=dict(valid=_groups(8)), progress=False)
    with pytest.raises(DataError, match=r"splits\['train'\] must be a GroupedData"):
        train(_cfg(), splits=dict(train=[[1.0, 2.0]]), progress=False)
    with pytest.raises(DataError, match="the 'valid' split: the model expects observations with x_dim=1; got 2"):
        train(_cfg(), splits=dict(train=_groups(8), valid=_groups(4, x_dim=2)), progress=False)
    with pytest.raises(DataError, match="the 'valid' split: padded positions"):
        train(_cfg(), splits=dict(train=_groups(8), valid=_nan_padded(_groups(4))), progress=False)


def test_the_scorer_checks_the_data_but_not_the_regularisers_needs():
    scorer = ModelScorer(GroupVAE(make_run_config("cxvae").model))
    with pytest.raises(DataError, match="x_dim=1; got 3"):
        scorer.codes(_groups(5, x_dim=3))
    with pytest.raises(DataError, match="padded positions"):
        scorer.nll_per_observation(_nan_padded(_groups(5)))
    with pytest.raises(DataError, match=r"target must be 5 integer group indices"):
        scorer.translation(_groups(5), torch.tensor([0, 1]))
    with pytest.raises(DataError, match=r"target must be 5 integer group indices"):
        scorer.translation(_groups(5), torch.tensor([0.9, 1.9, 0.2, 0.0, 1.0]))
    with pytest.raises(DataError, match=r"must lie in \[0, 5\); got 0 to 5"):
        scorer.translation(_groups(5), torch.tensor([0, 1, 2, 3, 5]))
    single = from_groups([[0.5], [1.0]])  # groups of one observation can be encoded, not trained on
    u, v = scorer.codes(single)
    assert u.shape == (2, 2) and v.shape == (2, 1, 1)


def test_load_model_says_when_a_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for name in ("notes.txt", "dict.pt", "tensor.pt"):
        with pytest.raises(DataError, match="is not a cxvae checkpoint"):
            load_model(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_model(tmp_path / "missing.pt")
    cfg = _cfg("ml-vae")
    save_checkpoint(tmp_path / "model.pt", GroupVAE(cfg.model), cfg)
    model, config = load_model(tmp_path / "model.pt")
    assert config["preset"] == "ml-vae" and not model.training
    model, _ = load_model(io.BytesIO((tmp_path / "model.pt").read_bytes()))  # file-like objects, as torch.load
    assert not model.training
    other = _cfg("cxvae")  # a real checkpoint whose weights do not fit its config
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save(dict(blob, config_json=other.to_json()), tmp_path / "mismatch.pt")
    with pytest.raises(DataError, match="do not fit the model its config describes"):
        load_model(tmp_path / "mismatch.pt")
