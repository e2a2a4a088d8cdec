"""recon_sampled_mse: reconstruction from codes drawn from the posterior (one more metric, added
after the committed studies were made), its known answers, and how older study folders take it."""
import numpy as np
import pandas as pd
import pytest
import torch

from cxvae import runner, store
from cxvae.cli import main
from cxvae.config import model_preset
from cxvae.data import generate_exam_scores
from cxvae.evaluation import ModelScorer, TrueFactorScorer
from cxvae.metrics import METRICS, evaluate, masked_mse, sampled_masked_mse
from cxvae.model import GroupVAE
from cxvae.oracle import ExamScoresOracle

from studies import run_row, write_study

TINY = dict(data=dict(n_train=256, n_valid=64, n_holdout=96), train=dict(epochs=1, batch_size=64),
            eval=dict(iwae_samples=4, probe_steps=20, probe_max_train=128))


@pytest.fixture(scope="module")
def data():
    return generate_exam_scores(200, seed=3)


def test_point_codes_give_the_posterior_mean_reconstruction(data):
    """Known answer: the true factors are points, so every draw is the noiseless reconstruction and
    the metric equals recon_mse."""
    scores = evaluate(TrueFactorScorer(), data, data, recon_draws=3)
    assert scores["recon_sampled_mse"] == pytest.approx(scores["recon_mse"], rel=1e-12)


def test_the_mean_of_the_draws_reconstructs_at_least_as_well_as_each_draw(data):
    """Convexity, exactly: the average of the draws' MSEs is at least the MSE of their average."""
    draws = ExamScoresOracle().sampled_reconstructions(data, 6, seed=1)
    x, mask = data.x.double(), data.mask
    assert sampled_masked_mse(draws, x, mask) >= masked_mse(draws.mean(0), x, mask)


def test_the_oracles_draws_average_to_its_exact_posterior_mean(data):
    """Independent computation: the oracle's posterior mean of b mu + a v_k is computed in closed
    form (through the sigma mixture); the mean of 4,000 posterior draws must agree within Monte
    Carlo error (4 standard errors of the mean of the draws, observation by observation)."""
    oracle = ExamScoresOracle()
    draws = oracle.sampled_reconstructions(data, 4000, seed=0)
    mean, se = draws.mean(0), draws.std(0) / 4000 ** 0.5
    exact = oracle.reconstruction(data)
    observed = data.mask.bool()
    z = ((mean - exact).abs() / se.clamp_min(1e-12))[observed]
    assert float(z.max()) < 5.0 and float(z.mean()) < 1.2
    assert torch.all(draws[:, ~observed] == 0)  # padding stays 0


def test_the_oracle_beats_a_learned_model_and_draws_cost_it_the_noise(data):
    """The oracle's sampled reconstruction is about the noise variance plus its posterior width
    (above its posterior-mean reconstruction); an untrained model is far worse."""
    oracle = ExamScoresOracle(noise_std=0.1)
    o = sampled_masked_mse(oracle.sampled_reconstructions(data, 8), data.x.double(), data.mask)
    assert masked_mse(oracle.reconstruction(data), data.x.double(), data.mask) < o < 2.5 * 0.1 ** 2
    torch.manual_seed(0)
    model = GroupVAE(model_preset("cxvae"))
    assert ModelScorer(model).sampled_reconstructions(data, 2).shape == (2, *data.x.shape)
    m = sampled_masked_mse(ModelScorer(model).sampled_reconstructions(data, 4).double(), data.x.double(), data.mask)
    assert m > 10 * o


class _ZeroVariance(torch.nn.Module):
    """An encoder with the same means and no width: a draw from it is its mean."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, *args):
        mean, var = self.encoder(*args)
        return mean, torch.zeros_like(var)


def test_a_model_without_posterior_width_draws_its_posterior_mean_and_draws_repeat(data):
    """Known answer: with both encoders' variances zero, every draw decodes the posterior-mean
    codes, so the draws equal ModelScorer.reconstruction; with the variances, a scorer's draws are
    seeded (the same twice), differ from draw to draw, and leave the global RNG alone."""
    torch.manual_seed(1)
    model = GroupVAE(model_preset("cxvae"))
    scorer = ModelScorer(model, batch_size=64)
    state = torch.get_rng_state()
    draws = scorer.sampled_reconstructions(data, 3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(draws, scorer.sampled_reconstructions(data, 3))
    assert not torch.allclose(draws[0], draws[1])
    model.group_encoder = _ZeroVariance(model.group_encoder)
    model.instance_encoder = _ZeroVariance(model.instance_encoder)
    pointwise = ModelScorer(model, batch_size=64)
    torch.testing.assert_close(pointwise.sampled_reconstructions(data, 2)[1], pointwise.reconstruction(data))


def test_an_older_study_folder_takes_the_new_column_when_a_sweep_appends(tmp_path):
    """A folder written before recon_sampled_mse existed is read as it is (the column counts as not
    scored), and a sweep's next row adds the column at the end: empty in the rows already there,
    whose fields stay byte for byte."""
    old_columns = [c for c in run_row("cxvae", 0) if c != "recon_sampled_mse"]
    folder = write_study(tmp_path / "old", [{k: v for k, v in run_row("cxvae", s).items() if k != "recon_sampled_mse"}
                                            for s in (0, 1)], **TINY)
    before = (folder / "runs.csv").read_text()
    assert list(pd.read_csv(folder / "runs.csv").columns) == old_columns
    study = store.read_study(folder)
    summary = runner.summarise(study["runs"])
    assert "recon_sampled_mse" not in set(summary.metric) and "recon_mse" in set(summary.metric)
    assert "recon_sampled_mse" not in runner.main_sweep_summary(folder)
    runner.sweep(["cxvae"], [2], scale="smoke", device="cpu", out=folder, progress=False, overrides=TINY)
    text = (folder / "runs.csv").read_text()
    lines, old_lines = text.splitlines(), before.splitlines()
    assert lines[0] == old_lines[0] + ",recon_sampled_mse"
    assert lines[1:3] == [line + "," for line in old_lines[1:]]
    table = store.read_study(folder)["runs"]
    assert table.recon_sampled_mse.isna().tolist() == [True, True, False]


def test_rescore_adds_the_column_for_the_kept_models_and_the_oracle(tmp_path, capsys):
    """cxvae rescore --metrics recon_sampled_mse on a folder without the column: placed after
    recon_mse, the score a fresh sweep gives for each kept model and the oracle, NaN where the
    model was not kept; a second rescore changes nothing."""
    out = tmp_path / "study"
    fresh = runner.sweep(["cxvae"], [0, 1], scale="smoke", device="cpu", out=out, progress=False, overrides=TINY)
    runner.run_oracle(scale="smoke", out=out, overrides=TINY)
    oracle_fresh = pd.read_csv(out / "oracle.csv").recon_sampled_mse.iloc[0]
    for name in ("runs.csv", "oracle.csv"):
        pd.read_csv(out / name).drop(columns="recon_sampled_mse").to_csv(out / name, index=False)
    (out / "models" / "cxvae-1.pt").unlink()
    assert main(["rescore", str(out), "--quiet", "--metrics", "recon_sampled_mse"]) == 0
    assert "recon_sampled_mse rescored for 1 of 2 runs" in capsys.readouterr().out
    table = pd.read_csv(out / "runs.csv")
    assert list(table.columns).index("recon_sampled_mse") == list(table.columns).index("recon_mse") + 1
    np.testing.assert_allclose(table.recon_sampled_mse[0], fresh.recon_sampled_mse[0], rtol=1e-6)
    assert np.isnan(table.recon_sampled_mse[1])
    assert pd.read_csv(out / "oracle.csv").recon_sampled_mse.iloc[0] == pytest.approx(oracle_fresh, rel=1e-9)
    before = (out / "runs.csv").read_text()
    runner.rescore(out, ["recon_sampled_mse"], progress=False)
    assert (out / "runs.csv").read_text() == before


def test_the_metric_is_registered_lower_is_better():
    assert METRICS["recon_sampled_mse"] == "lower"
    assert list(METRICS).index("recon_sampled_mse") == list(METRICS).index("recon_mse") + 1


def test_encoding_with_the_group_posterior_given_is_encoding_from_scratch(data):
    """Draws share the group encoder's output: with the same noise, passing ``group_posterior``
    gives exactly the codes of a full encode."""
    torch.manual_seed(2)
    model = GroupVAE(model_preset("cxvae"))
    batch = data.subset(slice(0, 16))
    noise = model.draw_noise(batch.mask, seed=5, with_critic=False)
    with torch.no_grad():
        full = model.encode(batch.x, batch.mask, noise=noise)
        reused = model.encode(batch.x, batch.mask, noise=noise, group_posterior=(full["u_mean"], full["u_var"]))
    for key in full:
        assert torch.equal(full[key], reused[key]), key
