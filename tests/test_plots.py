"""Every plotting function returns a Figure with the expected axes and something drawn in them."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from cxvae import plots  # noqa: E402
from cxvae.bias import product_bias_table  # noqa: E402
from cxvae.config import PRESETS  # noqa: E402
from cxvae.data import generate_exam_scores  # noqa: E402

torch.set_num_threads(1)


def drawn(ax) -> int:
    """How many data artists an axes holds."""
    return len(ax.lines) + len(ax.collections) + len(ax.patches)


def check(fig, n_axes: int):
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert len(axes) == n_axes
    assert all(drawn(ax) > 0 for ax in axes)
    fig.canvas.draw()  # renders without error
    assert fig.canvas.manager is None  # never registered with pyplot, so never shown by it
    plt.close(fig)


def test_every_preset_has_its_own_colour():
    assert set(PRESETS) | {"oracle"} <= set(plots.PRESET_COLOURS)
    assert len(set(plots.PRESET_COLOURS.values())) == len(plots.PRESET_COLOURS)


def test_apply_style_sets_rcparams():
    with matplotlib.rc_context():
        plots.apply_style()
        assert not matplotlib.rcParams["axes.spines.top"]
        assert matplotlib.rcParams["font.size"] == plots.STYLE["font.size"]


def test_plot_product_bias():
    fig = plots.plot_product_bias(product_bias_table(range(1, 17), (0.5, 1.0, 2.0)))
    ax_mean = fig.get_axes()[0]
    assert len(ax_mean.lines) == 3 * 2 + 1  # 3 plain lines, 3 asymptotes, the corrected product
    check(fig, 1)  # one panel: the mean and variance ratios are equal in this model
    bad = product_bias_table(range(1, 5), (1.0,)).assign(var_ratio=0.5)
    with pytest.raises(ValueError, match="ratios differ"):
        plots.plot_product_bias(bad)


def test_plot_exam_scores_is_deterministic():
    data = generate_exam_scores(40, seed=3)
    fig = plots.plot_exam_scores(data, n_groups=6, seed=1)
    ax = fig.get_axes()[0]
    assert len(ax.collections) == 6 and len(ax.get_xticks()) == 6
    points = [c.get_offsets().copy() for c in ax.collections]
    again = plots.plot_exam_scores(data, n_groups=6, seed=1).get_axes()[0]
    for a, b in zip(points, again.collections):
        np.testing.assert_array_equal(a, b.get_offsets())
    check(fig, 1)


def test_plot_training_curves():
    epochs = np.arange(1, 4)
    histories = {p: pd.DataFrame(dict(epoch=epochs, train_neg_elbo=3.0 / epochs, valid_neg_elbo=3.2 / epochs))
                 for p in ("ml-vae", "cxvae", "my-own-model")}
    fig = plots.plot_training_curves(histories)
    assert len(fig.get_axes()[0].lines) == 2 * 3
    check(fig, 1)


def test_plot_metric_boxes():
    rng = np.random.default_rng(0)
    runs = pd.DataFrame([dict(preset=p, seed=s, recon_mse=rng.random(), v_probe_mse=rng.random())
                         for p in ("ml-vae", "gvae", "cxvae") for s in range(4)])
    fig = plots.plot_metric_boxes(runs, ["recon_mse", "v_probe_mse"], oracle={"recon_mse": 0.1})
    left, right = fig.get_axes()
    assert "lower is better" in left.get_title() and "higher is better" in right.get_title()
    assert len(left.patches) == 3 and any(line.get_linestyle() == "--" for line in left.lines)
    check(fig, 2)
    runs.loc[(runs.preset == "gvae") & (runs.seed > 0), "v_probe_mse"] = np.nan  # a run the metric could not score
    fig = plots.plot_metric_boxes(runs, ["recon_mse", "v_probe_mse"])
    assert [t.get_text() for t in fig.get_axes()[1].get_xticklabels()] == ["ml-vae (4)", "gvae (1)", "cxvae (4)"]


def test_plot_translation_one_row_per_model():
    rng = np.random.default_rng(0)
    source = [rng.normal(size=n) for n in (5, 8)]
    target = [rng.normal(size=n) for n in (7, 6)]
    truth = [2 + x for x in source]
    fig = plots.plot_translation(source, {"cxvae": truth, "ml-vae": [t * 0.5 for t in truth]}, target, truth,
                                 labels=["a → b", "c → d"])
    assert [ax.get_title() for ax in fig.get_axes()[:2]] == ["a → b", "c → d"]
    check(fig, 4)
    check(plots.plot_translation(source, truth, target, truth), 2)
    with pytest.raises(ValueError, match="same length"):
        plots.plot_translation(source, [x[:-1] for x in truth], target, truth)


def test_metric_boxes_draw_the_named_metrics_on_a_log_axis():
    """log_scale puts the named panels on a logarithmic axis and leaves the others linear."""
    rng = np.random.default_rng(1)
    runs = pd.DataFrame([dict(preset=p, seed=s, recon_mse=rng.random() + 0.1, translation_mse=10 ** rng.random())
                         for p in ("a", "b") for s in range(3)])
    fig = plots.plot_metric_boxes(runs, ["recon_mse", "translation_mse"], log_scale=["translation_mse"])
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "log"]


def test_verdict_intervals_show_each_presets_median_and_interval_per_metric():
    """One panel per metric titled with its claims, one error bar per preset at its median, the
    interval's ends as the bar's ends, and the oracle as a vertical line."""
    rows = [dict(preset=p, metric=m, median=med, lo=med - 0.1, hi=med + 0.2, n_seeds=10)
            for p, med in (("cxvae", 1.0), ("ml-vae", 2.0)) for m in ("translation_mse", "holdout_nll")]
    rows += [dict(preset="oracle", metric=m, median=0.5, lo=0.5, hi=0.5, n_seeds=0) for m in ("translation_mse",)]
    fig = plots.plot_verdict_intervals(pd.DataFrame(rows), ["translation_mse", "holdout_nll"], ["cxvae", "ml-vae"],
                                       claims={"translation_mse": "C3"}, log_scale=["translation_mse"])
    assert len(fig.axes) == 2 and fig.axes[0].get_title().endswith("C3") and fig.axes[0].get_xscale() == "log"
    bars = fig.axes[1].lines  # markers and caps of the error bars
    xs = sorted({round(float(x), 6) for line in bars for x in line.get_xdata()})
    assert 0.9 in xs and 1.0 in xs and 2.2 in xs
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].lines)  # the oracle


def test_iwae_bound_and_group_mean_code_figures():
    """The bound against S on a log axis with the exact NLL dashed; one panel per kind of code,
    each titled with its correlation with mu."""
    bound = pd.Series({1: 2.2, 4: 2.18, 16: 2.17, 64: 2.167})
    fig = plots.plot_iwae_bound(bound, 2.126)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and list(ax.lines[0].get_ydata()) == list(bound.values)
    assert ax.lines[1].get_linestyle() == "--" and ax.lines[1].get_ydata()[0] == 2.126
    mu = np.linspace(-2, 2, 50)
    fig = plots.plot_group_mean_codes(mu, {"follows mu": 0.01 * mu, "does not": np.cos(7 * mu)})
    assert len(fig.axes) == 2 and "1.00" in fig.axes[0].get_title()


def test_instance_posterior_and_critic_curve_figures():
    """One panel per prediction titled with its MSE; one curve per (critic, codes), leaky solid."""
    v = np.linspace(-2, 2, 300)
    fig = plots.plot_instance_posteriors(v, {"perfect": v, "nothing": np.zeros_like(v)}, n_points=100)
    assert len(fig.axes) == 2 and "MSE 0.000" in fig.axes[0].get_title()
    assert f"MSE {np.mean(v ** 2):.3f}" in fig.axes[1].get_title()
    curves = {("group-wise", "leaky codes"): pd.Series([0.1, 0.3], index=[25, 50]),
              ("single", "independent codes"): pd.Series([0.0, 0.01], index=[25, 50])}
    ax = plots.plot_critic_curves(curves).axes[0]
    assert [line.get_linestyle() for line in ax.lines[:2]] == ["-", "--"]


def test_learned_codes_draw_one_row_per_model_and_catch_what_a_code_holds():
    """Three panels per model; the true factors as codes are drawn on their own dimensions, the
    schools coloured; no model is one clear error."""
    data = generate_exam_scores(200, seed=1)
    true_codes = (torch.stack([data.u[:, 0], data.u[:, 1].abs()], dim=-1), data.v)
    swapped = (true_codes[0].flip(-1), torch.zeros_like(data.v))
    fig = plots.plot_learned_codes(data, {"true": true_codes, "swapped": swapped}, schools=[0, 1, 2])
    axes = fig.axes
    assert len(axes) == 6 and all(drawn(ax) == 4 for ax in axes)
    assert axes[0].get_ylabel() == "true: u0" and axes[3].get_ylabel() == "swapped: u1"  # lined up by correlation
    with pytest.raises(ValueError, match="at least one model"):
        plots.plot_learned_codes(data, {}, schools=[0])
    plt.close("all")


def test_verdict_intervals_keep_the_oracle_inside_the_axes_and_wrap_into_rows():
    """Six metrics make two rows of three panels; the oracle's line lies inside each x range,
    with a margin, even when it is far from every model (a log axis too)."""
    rows = []
    for metric, (model, oracle) in {"a": (1.0, 0.1), "b": (2.0, 2.5), "c": (5.0, 0.5), "d": (1, 1.2),
                                    "e": (3.0, 0.0), "f": (10.0, 1.0)}.items():
        rows += [dict(preset="cxvae", metric=metric, median=model, lo=model * 0.9, hi=model * 1.1),
                 dict(preset="oracle", metric=metric, median=oracle, lo=oracle, hi=oracle)]
    fig = plots.plot_verdict_intervals(pd.DataFrame(rows), list("abcdef"), ["cxvae"], log_scale=["f"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 6
    for ax, (_, oracle) in zip(visible, [(1, 0.1), (2, 2.5), (5, 0.5), (1, 1.2), (3, 0.0), (10, 1.0)]):
        lo, hi = ax.get_xlim()
        assert lo < oracle < hi
    plt.close("all")


def test_training_curves_zoom_on_the_later_epochs():
    """zoom_from=0.5 sets the y range from the curves' second halves, not the first epoch's peak."""
    history = pd.DataFrame(dict(epoch=range(1, 11), train_neg_elbo=[30.0] + [2.0 + 0.01 * i for i in range(9)],
                                valid_neg_elbo=[31.0] + [2.1 + 0.01 * i for i in range(9)]))
    ax = plots.plot_training_curves({"cxvae": history}, zoom_from=0.5, log_epochs=True).axes[0]
    assert ax.get_ylim()[1] < 3.0 and ax.get_xscale() == "log"
    plt.close("all")
