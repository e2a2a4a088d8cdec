"""Plotting functions for the book, in one house style.

Every function returns a :class:`matplotlib.figure.Figure` and never shows it, saves it or prints.
The figures are made with :class:`~matplotlib.figure.Figure` directly, not through ``pyplot``, so
a notebook shows a figure exactly once: when it is the value of the cell (or passed to
``display`` / myst-nb ``glue``). Save with ``fig.savefig(path)``. Each function draws inside
``matplotlib.rc_context(STYLE)``, so figures look the same whether or not :func:`apply_style`
was called; call it to give a chapter's own figures the same look.

Colours: one fixed colour per model preset (:data:`PRESET_COLOURS`). The models of the main
comparison (paper Figure 4) take the Okabe-Ito palette, the ablations of CxVAE (paper Figure 5)
Paul Tol's "muted" palette plus CxVAE's own green; both palettes are colour-blind friendly, and the
colours within each figure are distinct. Random jitter is seeded, so figures are repeatable.
"""
from __future__ import annotations

import textwrap
from typing import Dict, Mapping, Optional, Sequence, Union

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

__all__ = [
    "STYLE", "PRESET_COLOURS", "METRIC_LABELS", "apply_style", "preset_colour", "plot_verdict_intervals", "plot_iwae_bound",
    "plot_instance_posteriors", "plot_critic_curves",
    "plot_group_mean_codes",
    "plot_product_bias", "plot_exam_scores", "plot_training_curves", "plot_metric_boxes",
    "plot_translation", "plot_strength", "plot_emergent_lines", "plot_holdout_nll", "plot_code_correlations",
    "plot_adjusted_ranking", "plot_translation_2d", "plot_soybean_codes", "plot_gap_parts",
    "plot_table_bench", "plot_calibration",
]

# Okabe & Ito (2008), "Color Universal Design"
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]

PRESET_COLOURS: Dict[str, str] = {
    # the exact reference and the main comparison (Okabe-Ito)
    "oracle": "#000000",                   # black
    "ml-vae": "#D55E00",                   # vermillion
    "ml-vae-corrected": "#E69F00",         # orange
    "gvae": "#56B4E9",                     # sky blue
    "gvae-ad": "#0072B2",                  # blue
    "cxvae": "#009E73",                    # bluish green
    # single-part ablations of cxvae (Paul Tol's muted palette)
    "cxvae-average": "#332288",            # indigo
    "cxvae-product": "#CC6677",            # rose
    "cxvae-product-corrected": "#DDCC77",  # sand
    "cxvae-unconditional": "#AA4499",      # purple
    "cxvae-nemeth": "#999933",             # olive
    "cxvae-none": "#882255",               # wine
    # beyond the paper (chapter 11)
    "cxvae-mirror-long": "#44AA99",        # teal (Tol's muted)
}

_FALLBACK_COLOURS = ["#7F7F7F", "#8C564B", "#17BECF", "#BCBD22", "#88CCEE", "#117733"]

METRIC_LABELS: Dict[str, str] = {
    "recon_mse": "holdout reconstruction MSE",
    "recon_sampled_mse": "reconstruction MSE from sampled codes",
    "holdout_nll": "holdout NLL per observation",
    "translation_mse": "translation MSE",
    "u_probe_mse": "u-probing MSE",
    "v_probe_mse": "v-probing MSE",
    "instance_probe_mse": "instance-probing MSE",
}

# The house style: rcParams for a book page (figures ~7 in wide, read at 100 %).
STYLE: Dict[str, object] = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO[1:] + OKABE_ITO[:1]),
    "lines.linewidth": 1.6,
    "lines.markersize": 4,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
}


def apply_style() -> None:
    """Set the house style (:data:`STYLE`) in ``matplotlib.rcParams`` for the whole session."""
    matplotlib.rcParams.update(STYLE)


def preset_colour(preset: str, index: int = 0) -> str:
    """The colour of ``preset``; an unknown name gets a grey-ish fallback picked by ``index``."""
    return PRESET_COLOURS.get(preset, _FALLBACK_COLOURS[index % len(_FALLBACK_COLOURS)])


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **subplot_kw):
    """A constrained-layout Figure (not registered with pyplot) and its axes array."""
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def _jitter(rng: np.random.Generator, n: int, width: float = 0.28) -> np.ndarray:
    return rng.uniform(-width, width, size=n)


def _as_1d(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float).reshape(-1)


# ---------------------------------------------------------------------------------------------
# Section 2.2: the bias of the plain product of posteriors
# ---------------------------------------------------------------------------------------------
def plot_product_bias(table: pd.DataFrame) -> Figure:
    """How far the plain product of normals is from the exact group posterior, against K (from
    :func:`cxvae.bias.product_bias_table`): one line per ``noise_std`` of the plain-product mean
    over the exact mean, which in the conjugate normal model is also the ratio of the variances
    (the function checks it), the corrected product of eq. (1) (1 for every s), and dashed the
    K -> infinity limit ``1/(1 + s^2)``. K is on a log2 axis. One panel: the two ratios are one."""
    if not np.allclose(table["mean_shrinkage"], table["var_ratio"], rtol=1e-9, atol=1e-12):
        raise ValueError("the mean and variance ratios differ: this is not the conjugate normal model's table")
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(5.2, 3.8)
        ax = axes[0, 0]
        colours = [OKABE_ITO[i] for i in (5, 1, 3, 7, 2, 6)]
        for i, s in enumerate(sorted(table["noise_std"].unique())):
            rows = table[table["noise_std"] == s].sort_values("K")
            colour = colours[i % len(colours)]
            ax.plot(rows["K"], rows["mean_shrinkage"], color=colour, label=f"plain product, s = {s:g}")
            ax.axhline(1.0 / (1.0 + s ** 2), color=colour, linestyle="--", linewidth=0.9)
        K = np.sort(table["K"].unique())
        corrected = table.groupby("K")["corrected_mean_shrinkage"].mean().reindex(K)
        ax.plot(K, corrected.to_numpy(), color="black", linestyle=":", label="corrected product, eq. (1)")
        ax.set(title="plain product / exact posterior:\nmean ratio = variance ratio", xlabel="group size K",
               ylabel="ratio", ylim=(0, 1.08))
        ax.set_xscale("log", base=2)
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=0.9))
        labels.append(r"limit $1/(1+s^2)$")
        fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


# ---------------------------------------------------------------------------------------------
# Section 3.1: the exam-scores data (paper Figure 2)
# ---------------------------------------------------------------------------------------------
def plot_exam_scores(data, n_groups: int = 12, seed: int = 0) -> Figure:
    """Scores of ``n_groups`` randomly chosen groups, one column per group (paper Figure 2).

    Args:
        data: :class:`cxvae.data.GroupedData` with ``x (N, K, 1)``, ``mask (N, K)`` and, if
            known, ``u (N, 2)``. Columns are sorted by the true ``mu`` (by the sample mean when
            ``u`` is None); a short black bar marks ``2 mu``, the group's expected score, and the
            tick labels give ``mu`` and ``|sigma|`` (the sign of sigma is not identifiable).
        n_groups: how many groups to show (at most N).
        seed: picks the groups and the horizontal jitter.
    """
    rng = np.random.default_rng(seed)
    n_show = min(int(n_groups), data.n_groups)
    index = np.sort(rng.choice(data.n_groups, size=n_show, replace=False))
    x = data.x[..., 0].detach().cpu().numpy()
    mask = data.mask.detach().cpu().numpy()
    scores = [x[i][mask[i]] for i in index]
    u = None if data.u is None else data.u.detach().cpu().numpy()[index]
    order = np.argsort(u[:, 0] if u is not None else [s.mean() for s in scores], kind="stable")

    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(7.5, 3.4)
        ax = axes[0, 0]
        for column, j in enumerate(order):
            ax.scatter(column + _jitter(rng, len(scores[j])), scores[j], s=9, alpha=0.75,
                       color=OKABE_ITO[5], linewidths=0)
            if u is not None:
                ax.plot([column - 0.35, column + 0.35], [2 * u[j, 0]] * 2, color="black", linewidth=1.4)
        ax.set_xticks(range(n_show))
        if u is not None:
            ax.set_xticklabels([f"μ={u[j, 0]:.1f}\n|σ|={abs(u[j, 1]):.1f}" for j in order], fontsize=7)
            ax.set_xlabel("group (sorted by its true μ)")
            ax.legend(handles=[
                Line2D([], [], color=OKABE_ITO[5], marker="o", linestyle="", label="one observation"),
                Line2D([], [], color="black", label="2μ (the group's expected score)")], loc="upper left")
        else:
            ax.set_xticklabels([str(int(data.group_ids[index[j]])) for j in order], fontsize=7)
            ax.set_xlabel("group (sorted by its sample mean)")
        ax.set_ylabel("exam score x")
    return fig


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------
def plot_training_curves(histories: Mapping[str, pd.DataFrame], zoom_from: float = 0.0,
                         log_epochs: bool = False) -> Figure:
    """Negative ELBO per epoch, one colour per preset.

    Args:
        histories: preset -> DataFrame with columns ``epoch``, ``train_neg_elbo`` and
            ``valid_neg_elbo`` (and optionally ``seed``: several seeds are drawn as the mean over
            seeds with a min-max band). Solid lines: validation; dashed: training.
        zoom_from: the y axis spans the curves from this fraction of each run on (e.g. 0.25:
            the last three quarters), so that the first epochs' large values do not flatten
            the rest; 0 shows everything.
        log_epochs: a logarithmic epoch axis (runs of very different lengths side by side).
    """
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(6.0, 3.4)
        ax = axes[0, 0]
        for i, (preset, history) in enumerate(histories.items()):
            colour = preset_colour(preset, i)
            per_epoch = history.groupby("epoch")[["train_neg_elbo", "valid_neg_elbo"]]
            mean = per_epoch.mean()
            ax.plot(mean.index, mean["valid_neg_elbo"], color=colour, marker="o", label=preset)
            ax.plot(mean.index, mean["train_neg_elbo"], color=colour, linestyle="--", linewidth=1.0)
            if "seed" in history and history["seed"].nunique() > 1:
                low, high = per_epoch.min()["valid_neg_elbo"], per_epoch.max()["valid_neg_elbo"]
                ax.fill_between(mean.index, low, high, color=colour, alpha=0.15, linewidth=0)
        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], color="grey"), Line2D([], [], color="grey", linestyle="--", linewidth=1.0)]
        labels += ["validation", "training"]
        ax.legend(handles, labels, loc="upper right", ncol=2)
        ax.set(xlabel="epoch", ylabel="negative ELBO per observation", title="training curves")
        if zoom_from > 0:
            tails = [h[h.epoch >= zoom_from * h.epoch.max()][["train_neg_elbo", "valid_neg_elbo"]]
                     for h in histories.values()]
            lo, hi = min(float(t.min().min()) for t in tails), max(float(t.max().max()) for t in tails)
            pad = 0.05 * (hi - lo) or 0.01
            ax.set_ylim(lo - pad, hi + pad)
        if log_epochs:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _direction_title(metric: str) -> str:
    from .metrics import METRICS  # a lazy import: plotting should not pull in the model code early

    label = "\n".join(textwrap.wrap(METRIC_LABELS.get(metric, metric), 24))  # panels are ~2.4 in wide
    direction = METRICS.get(metric)
    return f"{label}\n({direction} is better)" if direction else label


def plot_metric_boxes(runs: pd.DataFrame, metrics: Sequence[str],
                      oracle: Optional[Mapping[str, float]] = None,
                      presets: Optional[Sequence[str]] = None, log_scale: Sequence[str] = ()) -> Figure:
    """Box plots over seeds, one panel per metric and one box per preset (paper Figures 4, 5).
    Each box is labelled with its preset and its number of seeds (runs without the metric left out).

    Args:
        runs: one row per run, with a ``preset`` column and one column per metric.
        metrics: the metric columns to show, one panel each, titled with "(lower is better)" or
            "(higher is better)" from :data:`cxvae.metrics.METRICS`.
        oracle: metric -> the oracle's value, drawn as a dashed black line when given.
        presets: the boxes' order (default: order of first appearance in ``runs``).
        log_scale: metrics drawn on a logarithmic axis (for positive values spanning decades, so
            that one far-off preset does not squash the others' boxes).
    """
    presets = list(presets) if presets is not None else list(dict.fromkeys(runs["preset"]))
    rng = np.random.default_rng(0)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(max(2.4 * len(metrics), 4.0), 3.6, 1, len(metrics))
        for ax, metric in zip(axes[0], metrics):
            values = [runs.loc[runs["preset"] == p, metric].dropna().to_numpy(float) for p in presets]
            boxes = ax.boxplot(values, positions=range(len(presets)), widths=0.6, patch_artist=True,
                               showfliers=False, medianprops=dict(color="black"))
            for i, (box, p) in enumerate(zip(boxes["boxes"], presets)):
                box.set(facecolor=preset_colour(p, i), alpha=0.55)
                ax.scatter(i + _jitter(rng, len(values[i]), 0.15), values[i], s=8,
                           color=preset_colour(p, i), edgecolors="black", linewidths=0.3, zorder=3)
            if oracle is not None and metric in oracle:
                ax.axhline(oracle[metric], color=PRESET_COLOURS["oracle"], linestyle="--", linewidth=1.0,
                           label="oracle")
                ax.legend(loc="best")
            ax.set_xticks(range(len(presets)))
            ax.set_xticklabels([f"{p} ({len(v)})" for p, v in zip(presets, values)], rotation=40, ha="right")
            ax.set_title(_direction_title(metric))
            if metric in log_scale:
                ax.set_yscale("log")
    return fig


def plot_verdict_intervals(summary: pd.DataFrame, metrics: Sequence[str], presets: Sequence[str],
                           claims: Optional[Mapping[str, str]] = None, log_scale: Sequence[str] = ()) -> Figure:
    """The evidence behind the verdicts: one panel per metric, one row per preset, each preset's
    median over seeds with its 95% bootstrap interval (:func:`cxvae.runner.summarise` output), and
    the oracle as a dashed line. Two models differ in a verdict where their intervals do not
    overlap. ``claims`` maps a metric to the claims it bears on (shown in the panel title);
    ``log_scale`` names metrics drawn on a logarithmic axis."""
    s = summary.set_index(["preset", "metric"])
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    with matplotlib.rc_context({**STYLE, "font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11,
                                "xtick.labelsize": 10, "ytick.labelsize": 11}):
        fig, axes = _figure(3.3 * ncols, (0.4 * len(presets) + 1.3) * nrows, nrows, ncols, sharey=True)
        for ax in axes.ravel()[len(metrics):]:
            ax.set_visible(False)
        for ax, metric in zip(axes.ravel(), metrics):
            for y, preset in enumerate(presets):
                if (preset, metric) not in s.index:
                    continue
                row = s.loc[(preset, metric)]
                ax.errorbar(row["median"], y, xerr=[[row["median"] - row.lo], [row.hi - row["median"]]], fmt="o",
                            color=preset_colour(preset, y), capsize=3, markersize=5)
            title = _direction_title(metric)
            ax.set_title(f"{title}\n{claims[metric]}" if claims and metric in claims else title)
            log = metric in log_scale
            if log:
                ax.set_xscale("log")
            if ("oracle", metric) in s.index:
                oracle = float(s.loc[("oracle", metric), "median"])
                ax.axvline(oracle, color=PRESET_COLOURS["oracle"], linestyle="--", linewidth=1.5, label="oracle")
                ax.annotate("oracle", (oracle, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                            textcoords="offset points", fontsize=9)
                # the x range covers the models and the oracle with a margin: the line never sits on the edge
                lo, hi = ax.get_xlim()
                low, high = min(lo, oracle), max(hi, oracle)
                to, back = (np.log, np.exp) if log else ((lambda x: x), (lambda x: x))
                margin = 0.08 * (to(high) - to(low))
                ax.set_xlim(back(to(low) - margin), back(to(high) + margin))
        for row in axes:
            row[0].set_yticks(range(len(presets)), presets)
        axes[0, 0].invert_yaxis()
    return fig


def plot_instance_posteriors(v_true, predictions: Mapping[str, np.ndarray], n_points: int = 2000,
                             seed: int = 0) -> Figure:
    """Exact posterior means of the instance factor against its true value, one panel per amount of
    information (``predictions``: name -> ``(n,)`` means, beside ``v_true (n,)``), each titled
    with its MSE; ``n_points`` random observations are drawn (seeded) (chapter 4)."""
    import torch

    v_true = _as_1d(v_true)
    pick = torch.randperm(len(v_true), generator=torch.Generator().manual_seed(seed))[:n_points].numpy()
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(2.5 * len(predictions), 2.8, 1, len(predictions), sharex=True, sharey=True)
        for ax, (name, prediction) in zip(axes[0], predictions.items()):
            prediction = _as_1d(prediction)
            ax.scatter(v_true[pick], prediction[pick], s=4, alpha=0.4, color=preset_colour("cxvae"), linewidths=0)
            ax.plot([-3.5, 3.5], [-3.5, 3.5], color="black", linewidth=0.8)
            mse = float(np.mean((prediction - v_true) ** 2))
            ax.set(title=f"from {name}\nMSE {mse:.3f}", xlabel="true $v_k$", xlim=(-3.5, 3.5), ylim=(-3.5, 3.5))
        axes[0, 0].set_ylabel(r"$\mathbb{E}[v_k \mid \ldots]$")
    return fig


def plot_critic_curves(curves: Mapping) -> Figure:
    """Donsker-Varadhan estimates of critics trained on fixed codes, per training step
    (``curves``: ``(critic name, code kind) -> Series`` from
    :func:`cxvae.regularisers.fit_critic_on_codes`; the group-wise critic in CxVAE's colour, leaky
    codes solid) (chapter 4)."""
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(6.5, 3.6)
        ax = axes[0, 0]
        for (critic, kind), curve in curves.items():
            colour = preset_colour("cxvae" if critic.startswith("group") else "gvae-ad")
            ax.plot(curve.index, curve.values, color=colour, linestyle="-" if "leaky" in kind else "--",
                    label=f"{critic}, {kind}")
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set(xlabel="critic training step", ylabel="DV estimate on holdout (nats)")
        fig.legend(loc="outside lower center", ncol=2)
    return fig


def plot_iwae_bound(bound: pd.Series, exact_nll: float, label: str = "CxVAE, IWAE bound") -> Figure:
    """The importance-weighted bound on a model's holdout NLL per observation against the number
    of importance samples S (``bound``: S -> nats, S on a log axis), with the true model's exact
    NLL as a dashed line (chapter 5, section 4)."""
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(5.0, 3.0)
        ax = axes[0, 0]
        ax.plot(bound.index, bound.values, marker="o", color=preset_colour("cxvae"), label=label)
        ax.axhline(exact_nll, color=preset_colour("oracle"), linestyle="--", label="true model, exact")
        ax.set(xscale="log", xlabel="importance samples S", ylabel="holdout NLL per observation (nats)")
        ax.set_xticks(bound.index, [str(s) for s in bound.index])
        ax.legend(loc="center right")
    return fig


def plot_group_mean_codes(mu, panels: Mapping[str, np.ndarray]) -> Figure:
    """Each group's mean instance code against its true mu, one panel per kind of code
    (``panels``: title -> ``(N,)`` group means), with the correlation in each title (chapter 5,
    section 7: the exact posterior's codes share a shift that follows mu)."""
    mu = _as_1d(mu)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(3.5 * len(panels), 3.0, 1, len(panels), sharex=True)
        for ax, (title, values) in zip(axes[0], panels.items()):
            values = _as_1d(values)
            ax.scatter(mu, values, s=6, alpha=0.6, color=preset_colour("oracle"), linewidths=0)
            ax.axhline(0, color="grey", linewidth=0.6)
            r = np.corrcoef(values, mu)[0, 1]
            ax.set(title=f"{title}\ncorrelation with $\\mu$: {r:.2f}", xlabel=r"true $\mu$ of the group",
                   ylabel="mean over the group")
    return fig


# ---------------------------------------------------------------------------------------------
# Section 5.1: translation (paper Figure 3)
# ---------------------------------------------------------------------------------------------
def plot_translation(source_x: Sequence, translated: Union[Sequence, Mapping[str, Sequence]],
                     target_x: Sequence, true_translation: Sequence,
                     labels: Optional[Sequence[str]] = None) -> Figure:
    """Strip plots of translations for a few (source, target) pairs (paper Figure 3).

    Each panel shows four strips: the source group's scores, the model's translation of them into
    the target group, the ground-truth translation, and the target group's own scores. Thin grey
    lines join each observation's translation to its ground truth (the per-observation error).

    Args:
        source_x: P 1-D arrays, the scores of the source groups.
        translated: P 1-D arrays (same lengths as ``source_x``): one model's translations; or a
            dict model name -> P arrays, drawn as one row per model (e.g. cxvae above ml-vae).
        target_x: P 1-D arrays, the scores of the target groups.
        true_translation: P 1-D arrays, the ground-truth translations (same lengths as source).
        labels: P panel titles (default "pair 1", "pair 2", ...).
    """
    models = dict(translated) if isinstance(translated, Mapping) else {"model": translated}
    n_pairs = len(source_x)
    labels = list(labels) if labels is not None else [f"pair {p + 1}" for p in range(n_pairs)]
    strips = ["source", "translation", "truth", "target"]
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(max(1.9 * n_pairs, 4.0), 2.6 * len(models) + 0.4, len(models), n_pairs,
                            sharey="col")
        for row, (name, model_translations) in enumerate(models.items()):
            colour = preset_colour(name, 0) if name in PRESET_COLOURS else OKABE_ITO[6]
            for p in range(n_pairs):
                ax = axes[row, p]
                rng = np.random.default_rng(p)  # the same jitter in every row: rows compare directly
                source, target = _as_1d(source_x[p]), _as_1d(target_x[p])
                model, truth = _as_1d(model_translations[p]), _as_1d(true_translation[p])
                if not (len(source) == len(model) == len(truth)):
                    raise ValueError(f"pair {p}: source, translation and truth must have the same length; "
                                     f"got {len(source)}, {len(model)}, {len(truth)}")
                j_source, j_target = _jitter(rng, len(source), 0.2), _jitter(rng, len(target), 0.2)
                ax.plot(np.stack([1 + j_source, 2 + j_source]), np.stack([model, truth]), color="grey",
                        linewidth=0.4, alpha=0.6)
                ax.scatter(0 + j_source, source, s=10, color="#7F7F7F", linewidths=0)
                ax.scatter(1 + j_source, model, s=10, color=colour, linewidths=0)
                ax.scatter(2 + j_source, truth, s=10, facecolors="none", edgecolors="black", linewidths=0.6)
                ax.scatter(3 + j_target, target, s=10, color="black", linewidths=0)
                ax.set_xticks(range(4))
                ax.set_xticklabels(strips, rotation=35, ha="right")
                if row == 0:
                    ax.set_title(labels[p])
                if p == 0:
                    ax.set_ylabel(f"{name}\nscore x" if len(models) > 1 else "score x")
    return fig


# ---------------------------------------------------------------------------------------------
# Section 6.3: the strength of the group component
# ---------------------------------------------------------------------------------------------
def plot_strength(summary: pd.DataFrame, metrics: Sequence[str], presets: Optional[Sequence[str]] = None,
                  log_scale: Sequence[str] = ()) -> Figure:
    """One panel per metric: each preset's median over seeds (line) and its 95% interval (band)
    against the group strength c, with the oracle as a dashed black line.

    Args:
        summary: :func:`cxvae.strength.summarise_strength` output (``group_strength, preset,
            metric, median, lo, hi``; the oracle's rows have preset ``'oracle'``).
        metrics: the metrics to show.
        presets: the models' order (default: order of first appearance, oracle excluded).
        log_scale: metrics whose axis is logarithmic.
    """
    presets = list(presets) if presets is not None else [p for p in dict.fromkeys(summary.preset) if p != "oracle"]
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(max(2.6 * len(metrics), 4.0), 3.2, 1, len(metrics))
        for ax, metric in zip(axes[0], metrics):
            rows = summary[summary.metric == metric]
            for i, preset in enumerate(presets):
                r = rows[rows.preset == preset].sort_values("group_strength")
                colour = preset_colour(preset, i)
                ax.plot(r.group_strength, r["median"], marker="o", color=colour, label=preset)
                ax.fill_between(r.group_strength, r["lo"], r["hi"], color=colour, alpha=0.2, linewidth=0)
            o = rows[rows.preset == "oracle"].sort_values("group_strength")
            if len(o):
                ax.plot(o.group_strength, o["median"], linestyle="--", color=PRESET_COLOURS["oracle"], label="oracle")
            if metric in log_scale:
                ax.set_yscale("log")
            ax.set_xlabel("group strength c")
            ax.set_title(_direction_title(metric))
        axes[0][0].legend(loc="best")
    return fig


# ---------------------------------------------------------------------------------------------
# Chapter 1: why the groups are emergent
# ---------------------------------------------------------------------------------------------
def plot_emergent_lines(data, single, v_single, schools: Sequence[int]) -> Figure:
    """True instance factor v against the score x: every observation of one-observation groups
    (grey), all students of ``schools`` (colours) and E[v | x] from one score alone (black).

    Args:
        data: exam-scores groups with true factors (:class:`~cxvae.data.GroupedData`).
        single: one-observation groups (true factors included), for the grey cloud.
        v_single: ``(N, 1, 1)`` the exact E[v | x] of each one-observation group.
        schools: indices of the groups of ``data`` to colour.
    """
    x_flat, v_flat = single.x[:, 0, 0], single.v[:, 0, 0]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7.5, 3.6), layout="constrained")
        ax = fig.subplots()
        ax.scatter(x_flat[:3000], v_flat[:3000], s=4, color="#BBBBBB", linewidths=0, label="all schools")
        for colour, i in zip(OKABE_ITO[5:8], schools):
            ax.scatter(data.x[i, data.mask[i], 0], data.v[i, data.mask[i], 0], s=14, color=colour,
                       linewidths=0, label=f"school: μ={data.u[i, 0]:.1f}, |σ|={data.u[i, 1].abs():.1f}")
        order = x_flat.argsort()
        ax.plot(x_flat[order], v_single[order, 0, 0], color="black", label="E[v | x] (one score)")
        ax.set(xlabel="score x", ylabel="true instance factor v", xlim=(-8, 8), ylim=(-3.5, 3.5))
        fig.legend(loc="outside right upper", fontsize=8)
    return fig


def plot_learned_codes(data, codes: Mapping[str, tuple], schools: Sequence[int], n_background: int = 1500) -> Figure:
    """What trained models' codes hold: one row per model, three panels: each group code
    dimension against the true group factor it lines up with best (``mu`` for one, ``|sigma|``
    for the other), and the instance code against the true instance factor ``v``. Grey: many
    groups (observations); colours: ``schools``, as chapter 1 draws the oracle. Raw code
    dimensions, neither rotated nor rescaled: a code that holds a factor shows a curve, one that
    does not shows a cloud.

    Args:
        data: exam-scores groups with true factors (:class:`~cxvae.data.GroupedData`).
        codes: model name -> ``(group codes (N, d_u >= 2), instance codes (N, K, 1))`` of ``data``
            (e.g. :meth:`cxvae.evaluation.ModelScorer.codes`).
        schools: indices of the groups of ``data`` to colour (at most 3).
        n_background: groups drawn in grey.
    """
    if not codes:
        raise ValueError("plot_learned_codes needs the codes of at least one model")
    targets = np.stack([_as_1d(data.u[:, 0]), np.abs(_as_1d(data.u[:, 1]))], axis=1)  # (N, 2): mu, |sigma|
    names = ["μ", "|σ|"]
    n = min(n_background, targets.shape[0])
    mask = np.asarray(data.mask[:n], dtype=bool)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(7.8, 2.0 * len(codes) + 0.4, nrows=len(codes), ncols=3)
        for row, (name, (u, v)) in zip(np.atleast_2d(axes), codes.items()):
            u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)[..., 0]
            # which code dimension holds which factor: the larger absolute correlation
            corr = np.abs(np.corrcoef(u[:, :2].T, targets.T)[:2, 2:])
            order = [0, 1] if corr[0, 0] + corr[1, 1] >= corr[0, 1] + corr[1, 0] else [1, 0]
            for k, ax in enumerate(row[:2]):
                dim = order[k]
                ax.scatter(targets[:n, k], u[:n, dim], s=3, color="#BBBBBB", linewidths=0)
                for colour, i in zip(OKABE_ITO[5:8], schools):
                    ax.scatter(targets[i, k], u[i, dim], s=40, color=colour, edgecolors="black", linewidths=0.5)
                ax.set(xlabel=f"true {names[k]}", ylabel=f"{name}: u{dim}")
            ax = row[2]
            ax.scatter(_as_1d(data.v[:n])[mask.ravel()], v[:n][mask], s=2, color="#BBBBBB", linewidths=0)
            for colour, i in zip(OKABE_ITO[5:8], schools):
                m = np.asarray(data.mask[i], dtype=bool)
                ax.scatter(_as_1d(data.v[i])[m], v[i][m], s=10, color=colour, linewidths=0)
            ax.set(xlabel="true v", ylabel=f"{name}: v0")
    return fig


# ---------------------------------------------------------------------------------------------
# Chapter 9: real data (cxvae.tabular, cxvae.mixed)
# ---------------------------------------------------------------------------------------------
def plot_holdout_nll(panels: Dict[str, pd.DataFrame], baselines: Dict[str, float]):
    """Holdout NLL per row of every run, one panel per analysis, with the mixed model's as a line.

    Args:
        panels: analysis title -> runs table (``preset``, ``holdout_nll``; one row per seed).
        baselines: analysis title -> the mixed model's holdout NLL.
    """

    rng = np.random.default_rng(0)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(3.3 * len(panels), 3.3, 1, len(panels))
        for ax, (title, runs) in zip(axes[0], panels.items()):
            presets = list(dict.fromkeys(runs["preset"]))
            for j, p in enumerate(presets):
                y = runs.loc[runs.preset == p, "holdout_nll"].to_numpy()
                ax.scatter(j + _jitter(rng, len(y), 0.12), y, color=preset_colour(p, j), s=22,
                           edgecolors="black", linewidths=0.3, zorder=3)
            ax.axhline(baselines[title], color="black", linestyle="--", linewidth=1.0, label="mixed model")
            ax.set_xticks(range(len(presets)))
            ax.set_xticklabels(presets, rotation=30, ha="right")
            ax.set(title=f"{title}\n(lower is better)", ylabel="holdout NLL per student (nats)")
            ax.legend(loc="best")
    return fig


def plot_code_correlations(runs: pd.DataFrame, targets: Sequence[str], labels: Optional[Dict[str, str]] = None):
    """Multiple correlations (with 95 % bootstrap intervals) of the mixed model's effects and
    residuals with each run's codes: one panel per target column of :func:`cxvae.mixed.compare_presets`."""

    labels = labels or {}
    presets = list(dict.fromkeys(runs["preset"]))
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(2.4 * len(targets) + 0.6, 3.2, 1, len(targets), sharey=True)
        for ax, t in zip(axes[0], targets):
            for j, p in enumerate(presets):
                rows = runs[runs.preset == p].reset_index(drop=True)
                for s, r in rows.iterrows():
                    x = j + (s - (len(rows) - 1) / 2) * 0.15
                    ax.errorbar(x, r[t], yerr=[[r[t] - r[f"{t} low"]], [r[f"{t} high"] - r[t]]], fmt="o",
                                color=preset_colour(p, j), markersize=4, capsize=2)
            ax.set_xticks(range(len(presets)))
            ax.set_xticklabels(presets, rotation=30, ha="right")
            ax.set_title(labels.get(t, t))
            ax.set_ylim(0, 1.02)
        axes[0, 0].set_ylabel("multiple correlation R")
    return fig


def plot_adjusted_ranking(learned, reference, top: float = 0.1, learned_label: str = "learned",
                          reference_label: str = "mixed model"):
    """Two group-adjusted scores of the same rows against each other, with the top ``top``
    fraction of each marked: agreement on the diagonal, disagreement off it."""

    a, b = np.asarray(learned, float), np.asarray(reference, float)
    n_top = max(1, int(round(top * len(a))))
    in_a, in_b = np.zeros(len(a), bool), np.zeros(len(a), bool)
    in_a[np.argsort(-a)[:n_top]], in_b[np.argsort(-b)[:n_top]] = True, True
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(4.6, 4.0)
        ax = axes[0, 0]
        groups = [(~in_a & ~in_b, "#BBBBBB", "top in neither"), (in_a & in_b, OKABE_ITO[3], "top in both"),
                  (in_a & ~in_b, OKABE_ITO[6], f"top for {learned_label} only"),
                  (~in_a & in_b, OKABE_ITO[5], f"top for {reference_label} only")]
        for sel, colour, label in groups:
            ax.scatter(b[sel], a[sel], s=6, color=colour, linewidths=0, label=f"{label} ({int(sel.sum())})")
        ax.set(xlabel=f"{reference_label}: adjusted score", ylabel=f"{learned_label}: adjusted score",
               title=f"students ranked by school-adjusted score (top {top:.0%} marked)")
        ax.legend(loc="lower right", markerscale=2)
    return fig


def plot_translation_2d(source: pd.DataFrame, target: pd.DataFrame, translations: Dict[str, pd.DataFrame],
                        columns: Sequence[str], colours: Optional[Dict[str, str]] = None):
    """Translation of one group's rows into another in two value columns: the source rows, the
    target rows and each model's translation of the source rows (arrows from source to result)."""

    cx, cy = columns
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(3.4 * len(translations), 3.4, 1, len(translations), sharex=True, sharey=True)
        for j, (ax, (name, moved)) in enumerate(zip(axes[0], translations.items())):
            colour = (colours or {}).get(name, preset_colour(name, j))
            ax.scatter(target[cx], target[cy], s=10, color="black", label="target school", linewidths=0)
            ax.scatter(source[cx], source[cy], s=10, color="#9E9E9E", label="source school", linewidths=0)
            ax.scatter(moved[cx], moved[cy], s=12, color=colour, label="translated", linewidths=0)
            for r in moved.index:
                ax.plot([source.loc[r, cx], moved.loc[r, cx]], [source.loc[r, cy], moved.loc[r, cy]],
                        color=colour, linewidth=0.3, alpha=0.5)
            ax.set(title=name, xlabel=cx)
        axes[0, 0].set_ylabel(cy)
        axes[0, 0].legend(loc="upper left")
    return fig


def plot_soybean_codes(group_codes: pd.DataFrame, plots: pd.DataFrame, instance_codes: pd.Series,
                       time: pd.Series, variety: pd.Series):
    """Left: the group codes of the plots (u0, u1), colour = variety, marker = year. Right: the
    instance code of every observation against its time, colour = variety."""

    colours = {"F": OKABE_ITO[5], "P": OKABE_ITO[6]}
    markers = dict(zip(sorted(plots["Year"].unique()), ["o", "s", "^"]))
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(7.5, 3.3, 1, 2)
        ax_u, ax_v = axes[0]
        for (var, year), rows in plots.groupby(["Variety", "Year"]):
            codes = group_codes.loc[rows.index]
            ax_u.scatter(codes["u0"], codes["u1"], color=colours[var], marker=markers[year], s=22,
                         label=f"{var} {year}", linewidths=0)
        ax_u.set(xlabel="u0", ylabel="u1")
        ax_u.set_title("group codes u (one point per plot)", pad=14)  # room for the axis offset
        ax_u.ticklabel_format(axis="both", style="sci", scilimits=(-2, 3), useOffset=True)
        ax_u.xaxis.set_major_locator(MaxNLocator(4))
        ax_u.legend(loc="best", ncol=2, fontsize=7)
        for var, colour in colours.items():
            sel = (variety == var).to_numpy()
            ax_v.scatter(time[sel], instance_codes[sel], s=6, color=colour, label=f"variety {var}", linewidths=0)
        ax_v.set(xlabel="days after planting", ylabel="v")
        ax_v.set_title("instance codes v (one point per observation)", pad=14)
        ax_v.legend(loc="best")
    return fig


def plot_gap_parts(parts: pd.DataFrame, metrics: Sequence[str]) -> Figure:
    """The model's excess over the oracle and the part each component explains, one panel per
    metric (:func:`cxvae.gap.excess_parts`: rows are metrics, columns ``excess`` and the parts;
    a part's NaN, e.g. the encoders' for the holdout NLL, is left out). Bars in the metric's
    units; the excess is the grey bar, the parts beside it sum to it."""
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(2.6 * len(metrics), 3.2, ncols=len(metrics))
        for ax, metric in zip(axes[0], metrics):
            row = parts.loc[metric].drop(["oracle", "model", "n_seeds"]).dropna()
            names = list(row.index)
            colours = ["#999999"] + [OKABE_ITO[(i % 7) + 1] for i in range(len(names) - 1)]
            ax.bar(range(len(names)), row.to_numpy(float), color=colours)
            ax.axhline(0.0, color="black", linewidth=0.8)
            ax.set_xticks(range(len(names)), [n.replace(" ", "\n", 1) for n in names], rotation=0, fontsize=7)
            ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
        axes[0, 0].set_ylabel("model minus oracle (metric units)")
    return fig


def plot_table_bench(summary: pd.DataFrame, tolerance: float = 0.005) -> Figure:
    """Each preset's holdout NLL minus MixedLM's, per table, one panel per split
    (:func:`cxvae.table_bench.summarise`'s ``<preset> - MixedLM`` columns; negative: the preset
    is better). A symmetric-log axis, linear within 0.01 nats, so that differences of 0.001 and
    of 0.9 both show; the grey band is +-``tolerance``."""
    diffs = [c for c in summary.columns if c.endswith(" - MixedLM")]
    splits = list(dict.fromkeys(summary.index.get_level_values("split")))
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(4.0 * len(splits), 0.35 * summary.index.get_level_values(0).nunique() + 1.4,
                            ncols=len(splits), sharey=True)
        for ax, split in zip(axes[0], splits):
            tables = list(dict.fromkeys(summary.index.get_level_values(0)))
            part = summary.xs(split, level="split").reindex(tables)  # a table missing a split: an empty row
            y = np.arange(len(part))
            ax.axvspan(-tolerance, tolerance, color="#dddddd", linewidth=0)
            ax.axvline(0.0, color="black", linewidth=0.8)
            for i, col in enumerate(diffs):
                preset = col.removesuffix(" - MixedLM")
                ax.scatter(part[col], y + (i - len(diffs) / 2) * 0.08, s=14, color=preset_colour(preset, i),
                           label=preset, zorder=3)
            ax.set_xscale("symlog", linthresh=0.01)
            ax.set_yticks(y, list(part.index))
            ax.invert_yaxis()
            ax.set(title=f"{split}: preset minus MixedLM", xlabel="holdout NLL difference (nats per row)")
        axes[0, -1].legend(loc="lower right", fontsize=7)
    return fig


def plot_calibration(table: pd.DataFrame) -> Figure:
    """Observed against nominal coverage of central predictive intervals, one panel per value
    column and one line per case (:func:`cxvae.tabular.coverage`'s table: ``case``, ``value``,
    ``level``, ``coverage``, ``se``). Points on the diagonal are calibrated; above it the
    intervals are too wide, below too narrow. Bars: ±2 binomial standard errors at the nominal
    level (how far a calibrated model's coverage strays on this many rows)."""
    values = list(dict.fromkeys(table["value"]))
    cases = list(dict.fromkeys(table["case"]))
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(3.4 * len(values), 3.2, ncols=len(values), sharey=True)
        for ax, value in zip(axes[0], values):
            ax.plot([0, 1], [0, 1], color="#999999", linewidth=0.8, zorder=1)
            for i, case in enumerate(cases):
                part = table[(table["value"] == value) & (table["case"] == case)].sort_values("level")
                if len(part):
                    ax.errorbar(part["level"], part["coverage"], yerr=2 * part["se"], marker="o", capsize=2,
                                color=OKABE_ITO[(i + 1) % len(OKABE_ITO)],
                                label=f"{case} ({int(part['rows'].iloc[0])} rows)")
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="nominal level", title=value, aspect="equal")
            ax.legend(loc="lower right", fontsize=7)
        axes[0, 0].set_ylabel("observed coverage")
    return fig
