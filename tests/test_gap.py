"""cxvae.gap: the decomposition's plug-in parts against the exact computations they replace."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from cxvae.config import make_run_config
from cxvae.data import generate_exam_scores
from cxvae.evaluation import ModelScorer, PluginScorer, iwae_log_marginal, reflected_nll
from cxvae.gap import STEPS
from cxvae.metrics import ProbeConfig, evaluate_many
from cxvae.model import GroupVAE
from cxvae.oracle import ExamScoresOracle, exact_v_given_u

NOISE = 0.1


def _data(n=200, seed=0):
    return generate_exam_scores(n, mean_extra_size=4, min_size=2, noise_std=NOISE, seed=seed)


def test_exact_v_given_u_is_the_gaussian_conditional_mean():
    """Against torch.distributions: (v, x) given (mu, sigma) is a bivariate normal, and its
    conditional mean of v at x is the formula's; given the true u, its error on the true v is
    the conditional variance s^2 / (a^2 + s^2) on average (20,000 draws: 3% tolerance)."""
    mu, sigma = 0.7, -1.3
    a, b = sigma ** 2 + 1, 2.0
    joint = torch.distributions.MultivariateNormal(torch.tensor([0.0, b * mu], dtype=torch.float64),
                                                   torch.tensor([[1.0, a], [a, a ** 2 + NOISE ** 2]], dtype=torch.float64))
    x = torch.tensor([[[1.9], [-0.4], [3.0]]], dtype=torch.float64)
    got = exact_v_given_u(x, torch.ones(1, 3, dtype=torch.bool), torch.tensor([[mu, sigma]], dtype=torch.float64), NOISE)
    cov = joint.covariance_matrix
    expected = (cov[0, 1] / cov[1, 1]) * (x[0, :, 0] - joint.loc[1])
    torch.testing.assert_close(got[0, :, 0], expected)
    d = generate_exam_scores(2000, mean_extra_size=8, min_size=2, noise_std=NOISE, seed=1)
    v_hat = exact_v_given_u(d.x.double(), d.mask, d.u.double(), NOISE)
    m = d.mask
    a_i = (d.u[:, 1:2].double() ** 2 + 1).expand_as(m)
    err = ((v_hat[..., 0] - d.v[..., 0].double()) ** 2)[m].mean()
    assert float(err) == pytest.approx(float((NOISE ** 2 / (a_i ** 2 + NOISE ** 2))[m].mean()), rel=0.03)


@pytest.fixture(scope="module")
def tiny_model():
    cfg = make_run_config("cxvae", scale="smoke")
    torch.manual_seed(0)
    return GroupVAE(cfg.model).eval()


def test_the_chain_starts_at_the_model_and_ends_at_the_oracle(tiny_model):
    """The 'model' step scores as ModelScorer does and the 'oracle' step as the oracle, exactly
    (the same computations); the steps between change only the parts they name."""
    train, hold = _data(64, 0), _data(96, 1)
    oracle = ExamScoresOracle(noise_std=NOISE)
    probe = ProbeConfig(steps=20, max_train=64)
    steps = [PluginScorer(tiny_model, oracle, **kw) for kw in STEPS.values()]
    rows = evaluate_many(steps + [ModelScorer(tiny_model), oracle], train, hold, probe=probe)
    by = dict(zip(list(STEPS) + ["ModelScorer", "ExamScoresOracle"], rows))
    for metric in ["recon_mse", "translation_mse", "holdout_nll"]:
        assert by["model"][metric] == pytest.approx(by["ModelScorer"][metric], rel=1e-6)
        assert by["oracle"][metric] == pytest.approx(by["ExamScoresOracle"][metric], rel=1e-6)
    u_model, v_model = steps[0].codes(hold)
    u_exact, v_exact_u = steps[1].codes(hold)
    torch.testing.assert_close(u_exact, oracle.codes(hold)[0].float())
    assert torch.equal(steps[2].codes(hold)[0], u_model)  # exact q(v|x,u) keeps the model's u
    # an untrained model is far from exact: replacing both encoders must bring translation to the oracle's level
    assert by["exact q(u|x) and q(v|x,u)"]["translation_mse"] < by["model"]["translation_mse"]
    with pytest.raises(ValueError, match="Bayes read-out"):
        PluginScorer(tiny_model, oracle, u="model", readout="bayes")


def test_the_reflected_bound_recovers_the_mirror_mode():
    """On a trained paper-scale CxVAE (committed) and 200 holdout groups: the mirror-mixture
    bound is above the Gaussian one (a lower NLL), yet still a bound: not below the exact NLL
    beyond Monte Carlo error. Its gain is at most log 2 per group (the mixture's density is at
    least half the Gaussian's)."""
    from pathlib import Path

    from cxvae.model import load_model
    from cxvae.train import make_splits

    path = Path(__file__).resolve().parents[1] / "results/paper/models/cxvae-0.pt"
    model, config = load_model(path)
    cfg = make_run_config("cxvae", scale="paper")
    hold = make_splits(cfg.data)["holdout"].subset(slice(0, 200))
    exact = ExamScoresOracle(noise_std=cfg.data.noise_std).nll_per_observation(hold)
    plain = ModelScorer(model, n_samples=64).nll_per_observation(hold)
    reflected = reflected_nll(model, hold, n_samples=64)
    per_group = math.log(2) * hold.n_groups / hold.n_observations
    assert exact - 1e-3 < reflected < plain and plain - reflected < per_group + 2e-3
    assert reflected_nll(model, hold, n_samples=64) == reflected  # seeded


def test_excess_parts_add_up_and_split_by_the_shapley_rule():
    """A known table: translation 1.0 (model), 0.7 (exact u), 0.9 (exact v), 0.6 (both), 0.55
    (oracle): the group encoder's part is ((1.0-0.7) + (0.9-0.6))/2 = 0.3, the instance
    encoder's ((1.0-0.9) + (0.7-0.6))/2 = 0.1, the read-out's 0.05; they add to the excess 0.45.
    The NLL splits into the mirror mode and the rest of the bound."""
    import pandas as pd

    from cxvae.gap import excess_parts
    from cxvae.plots import plot_gap_parts

    values = dict(zip(STEPS, [1.0, 0.7, 0.9, 0.6, 0.55]))
    nll = dict(zip(STEPS, [2.10, 2.10, 2.10, 2.10, 2.06]))
    rows = [dict(seed=s, step=step, translation_mse=values[step] + s, holdout_nll=nll[step],
                 holdout_nll_reflected=2.07 if step != "oracle" else 2.06) for s in (0, 1) for step in STEPS]
    parts = excess_parts(pd.DataFrame(rows), metrics=["translation_mse", "holdout_nll"])
    t = parts.loc["translation_mse"]
    assert (t["group encoder"], t["instance encoder"], t["read-out"], t["excess"]) == pytest.approx((0.3, 0.1, 0.05, 0.45))
    n = parts.loc["holdout_nll"]
    assert (n["mirror mode"], n["rest of the bound"], n["excess"]) == pytest.approx((0.03, 0.01, 0.04))
    assert t["n_seeds"] == 2 and t["oracle"] == pytest.approx(1.05)
    fig = plot_gap_parts(parts, ["translation_mse", "holdout_nll"])
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 4 and len(fig.axes[1].patches) == 3


def test_the_mirror_long_preset_is_cxvae_scored_with_the_mirror_mixture_and_trained_4x():
    """cxvae-mirror-long: CxVAE's parts with group_posterior='mirror', 4x the scale's epochs
    unless epochs are given; config.json omits a Gaussian group posterior (older studies still
    compare equal) and keeps the mirror one; the mirror mixture needs the true decoder."""
    from cxvae.config import ConfigError, RunConfig, model_preset

    long, plain = make_run_config("cxvae-mirror-long", scale="paper"), make_run_config("cxvae", scale="paper")
    assert (long.train.epochs, plain.train.epochs) == (160, 40)
    assert make_run_config("cxvae-mirror-long", scale="smoke").train.epochs == 16
    assert make_run_config("cxvae-mirror-long", scale="paper", train=dict(epochs=80)).train.epochs == 80
    assert long.model.group_posterior == "mirror" and plain.model.group_posterior == "gaussian"
    assert [getattr(long.model, k) for k in ("group_encoder", "instance_encoder", "regulariser", "decoder")] == \
        [getattr(plain.model, k) for k in ("group_encoder", "instance_encoder", "regulariser", "decoder")]
    assert "group_posterior" not in plain.to_dict()["model"]
    assert RunConfig.from_dict(long.to_dict()) == long and RunConfig.from_dict(plain.to_dict()) == plain
    with pytest.raises(ConfigError, match="decoder='true'"):
        model_preset("cxvae-mirror-long", decoder="mlp")
    with pytest.raises(ConfigError, match="group posterior"):
        model_preset("cxvae", group_posterior="flow")


def test_a_mirror_model_is_scored_with_the_reflected_bound(tiny_model):
    """ModelScorer's default bound follows the model's family: the same weights give the
    reflected bound (reflected_nll) under group_posterior='mirror' and the Gaussian one
    otherwise, draw for draw (the same seed)."""
    import dataclasses

    hold = _data(96, 1)
    mirror = GroupVAE(dataclasses.replace(tiny_model.cfg, group_posterior="mirror"))
    mirror.load_state_dict(tiny_model.state_dict())
    gaussian_nll = ModelScorer(tiny_model, n_samples=8).nll_per_observation(hold)
    mirror_nll = ModelScorer(mirror, n_samples=8).nll_per_observation(hold)
    assert mirror_nll == reflected_nll(tiny_model, hold, n_samples=8)
    assert gaussian_nll == ModelScorer(mirror, n_samples=8, bound=iwae_log_marginal).nll_per_observation(hold)
    assert mirror_nll != gaussian_nll


def test_against_goal_reads_ratios_and_nats_from_a_known_summary():
    """A constructed summary: translation 1.05x the oracle (interval 1.00-1.20x), instance probe
    1.5x, NLL 0.005 nats above (interval 0.002-0.012): met, not met, met; only translation's and
    the NLL's intervals reach past the goal."""
    import pandas as pd

    from cxvae.gap import against_goal

    rows = [("m", "translation_mse", 1.05, 1.0, 1.2), ("oracle", "translation_mse", 1.0, 1.0, 1.0),
            ("m", "instance_probe_mse", 0.15, 0.14, 0.16), ("oracle", "instance_probe_mse", 0.1, 0.1, 0.1),
            ("m", "holdout_nll", 2.005, 2.002, 2.012), ("oracle", "holdout_nll", 2.0, 2.0, 2.0)]
    summary = pd.DataFrame(rows, columns=["preset", "metric", "median", "lo", "hi"]).assign(n_seeds=20)
    got = against_goal(summary, "m")
    assert list(got.index) == ["translation_mse", "instance_probe_mse", "holdout_nll"]
    np.testing.assert_allclose(got["median"], [1.05, 1.5, 0.005], rtol=1e-9)
    np.testing.assert_allclose(got["hi"], [1.2, 1.6, 0.012], rtol=1e-9)
    assert list(got.met) == [True, False, True] and list(got.interval_met) == [False, False, False]
    assert list(got.goal) == [1.10, 1.10, 0.01]


def test_the_preset_study_recomputes_at_smoke_scale(tmp_path):
    """load_or_run_preset(recompute=True) sweeps the new preset and CxVAE on the same seeds and
    data, with the oracle row; the new preset's holdout NLL is its mirror-mixture bound."""
    from cxvae import chapters, gap
    from cxvae.runner import summarise

    got = chapters.load_or_run_preset(recompute=True, smoke=True, seeds="0", scratch_root=str(tmp_path))
    assert set(got["runs"].preset) == {gap.PRESET, "cxvae"} and len(got["oracle"]) == 1
    table = gap.against_goal(summarise(got["runs"], got["oracle"]))
    assert len(table) == 3 and table["n_seeds"].eq(1).all()


def test_the_real_table_budget_recomputes_at_smoke_scale(tmp_path):
    """load_or_run_table_long(recompute=True): Orthodont, CxVAE seed 0, at 5 and 20 epochs, each
    row's difference CxVAE minus MixedLM (the same MixedLM fit for both budgets)."""
    from cxvae import chapters

    table = chapters.load_or_run_table_long(recompute=True, smoke=True, scratch_root=str(tmp_path))["table"]
    assert list(table.index.get_level_values("epochs").unique()) == [5, 20]
    assert set(table.index.get_level_values("split")) == {"within", "new"}
    np.testing.assert_allclose(table["difference"], table["cxvae"] - table["MixedLM"])
    assert table.groupby(level="split").MixedLM.nunique().eq(1).all()


def test_refined_group_posteriors_move_towards_the_exact_posterior(tiny_model):
    """An untrained encoder's q(u|x), refined group by group on its ELBO, moves towards the exact
    posterior (the mu-mean's error to E[mu|x] falls by more than half); the network's weights are unchanged and get no gradient; seeded runs repeat."""
    from cxvae.evaluation import refine_group_posterior

    data = _data(64, 3)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    start, _ = ModelScorer(tiny_model).codes(data)
    refined, var = refine_group_posterior(tiny_model, data, steps=300, lr=0.05, n_samples=8)
    exact = ExamScoresOracle(noise_std=NOISE).codes(data)[0].float()
    err_start = float(((start[:, 0] - exact[:, 0]) ** 2).mean())
    err_refined = float(((refined[:, 0] - exact[:, 0]) ** 2).mean())
    assert err_refined < 0.5 * err_start
    assert refined.shape == var.shape == (64, 2) and bool((var > 0).all())
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in tiny_model.parameters())
    again, _ = refine_group_posterior(tiny_model, data, steps=300, lr=0.05, n_samples=8)
    assert torch.equal(refined, again)
    scorer = PluginScorer(tiny_model, ExamScoresOracle(noise_std=NOISE), u="refined",
                          refine=dict(steps=300, lr=0.05, n_samples=8))
    assert torch.equal(scorer.codes(data)[0], refined)


def test_the_amortisation_table_recomputes_at_smoke_scale(tmp_path):
    """load_or_amortise(recompute=True): one smoke CxVAE, scored as it is and refined; the
    change is the refined row minus the model's, and the holdout NLL keeps the model's bound."""
    from cxvae import chapters, gap

    got = chapters.load_or_amortise(recompute=True, smoke=True, seeds="0", scratch_root=str(tmp_path))
    rows = got["table"].set_index("step")
    assert list(rows.index) == list(gap.AMORTISATION_STEPS)
    assert got["change"].loc[0, "translation_mse"] == pytest.approx(
        rows.loc["refined q(u|x)", "translation_mse"] - rows.loc["model", "translation_mse"])
    assert got["change"].loc[0, "holdout_nll"] == 0


def test_rescoring_the_gap_tables_gives_the_closed_form_probes_a_fresh_decomposition_gives(tmp_path):
    """cxvae decompose --rescore-probes: each (seed, step) row of decomposition.csv and
    amortisation.csv gets the probes its step's scorer gives today (what a fresh decomposition
    writes), the earlier scores move to the legacy columns, and the other metrics stay."""
    from cxvae import gap
    from cxvae.cli import main
    from cxvae.runner import sweep

    study, out = tmp_path / "study", tmp_path / "gap"
    tiny = dict(data=dict(n_train=256, n_valid=64, n_holdout=96), train=dict(epochs=1, batch_size=64),
                eval=dict(iwae_samples=4, probe_max_train=128))
    sweep(["cxvae"], [0], scale="smoke", device="cpu", out=study, progress=False, overrides=tiny)
    fresh = gap.decompose_study(study, out, progress=False)
    amortised = gap.amortisation_study(study, out, refine=dict(steps=3, lr=0.05, n_samples=2), progress=False)
    for name, table in (("decomposition.csv", fresh), ("amortisation.csv", amortised)):
        table.assign(u_probe_mse=0.5, v_probe_mse=0.25).to_csv(out / name, index=False)  # an earlier probe's
    assert main(["decompose", str(study), "--out", str(out), "--rescore-probes", "--quiet"]) == 0
    for name, table in (("decomposition.csv", fresh), ("amortisation.csv", amortised)):
        now = pd.read_csv(out / name)
        np.testing.assert_allclose(now.u_probe_mse, table.u_probe_mse, rtol=1e-6)
        np.testing.assert_allclose(now.v_probe_mse, table.v_probe_mse, rtol=1e-6)
        assert now.u_probe_mlp_mse.eq(0.5).all() and now.v_probe_deepsets_mse.eq(0.25).all()
        np.testing.assert_array_equal(now.translation_mse, table.translation_mse)


def test_nll_under_one_bound_pairs_the_preset_with_cxvaes_mirror_bound_on_shared_seeds():
    """Known answer: the preset's rows keep their NLL, CxVAE's come from the decomposition's model
    step (its mirror-mixture bound), only seeds both have."""
    from cxvae import gap

    runs = pd.DataFrame(dict(preset=[gap.PRESET] * 3 + ["cxvae"], seed=[0, 1, 2, 0], holdout_nll=[2.0, 2.1, 2.2, 9.0]))
    decomposition = pd.DataFrame(dict(preset="cxvae", seed=[0, 0, 1, 5], step=["model", "oracle", "model", "model"],
                                      holdout_nll_reflected=[2.5, 1.0, 2.6, 3.0]))
    table = gap.nll_under_one_bound(runs, decomposition).set_index(["preset", "seed"]).holdout_nll
    assert table.to_dict() == {(gap.PRESET, 0): 2.0, (gap.PRESET, 1): 2.1, ("cxvae", 0): 2.5, ("cxvae", 1): 2.6}
