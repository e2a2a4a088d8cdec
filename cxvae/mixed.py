"""The classical baseline: linear mixed-effects models (statsmodels ``MixedLM``), and comparisons.

A linear mixed model for observation k of group i (Pinheiro & Bates 2000; Laird & Ware 1982)::

    y_ik = x_ik' beta + z_ik' b_i + e_ik,    b_i ~ N(0, Psi),    e_ik ~ N(0, s^2)

with fixed effects ``beta``, group (random) effects ``b_i`` and residuals ``e_ik``. In the Group-VAE
language, ``b_i`` plays the part of the group code ``u_i`` and ``e_ik`` that of the instance code
``v_ik``; the differences are that the mixed model is linear, its residual scale ``s`` is the same
in every group, and it conditions on the covariates ``x_ik`` instead of modelling them.

* :func:`fit_mixed` fits it by REML and returns a :class:`MixedModel`;
* :meth:`MixedModel.group_effects` gives the BLUPs ``b_hat_i = E[b_i | y_i]``;
  :meth:`MixedModel.residuals` the conditional residuals ``y_ik - x_ik' beta - z_ik' b_hat_i``;
* :meth:`MixedModel.log_density` scores held-out rows of known groups with the *conditional
  predictive* distribution given the group's training rows (see its docstring for why);
* :func:`multiple_correlation`, :func:`rank_agreement`: how a learned code compares with the
  mixed model's effects, with cluster-bootstrap intervals.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .config import ConfigError, require_int
from .data import DataError
from .frames import check_columns, check_mixed_model, column_names

__all__ = ["MixedModel", "fit_mixed", "multiple_correlation", "rank_agreement", "compare_presets", "summarise_runs"]

# Optimisers tried in order; L-BFGS alone can stall at the zero-variance boundary from
# statsmodels' default start (it does on Exam's random-intercept model), BFGS does not.
_METHODS = (["bfgs"], ["lbfgs"], ["cg"], ["powell"])


@dataclass
class MixedModel:
    """A fitted linear mixed model and the table it was fitted on.

    Attributes:
        result: the statsmodels ``MixedLMResults``.
        response, group: column names; ``covariates``: fixed-effect columns (plus an intercept);
        random_slopes: covariates that also get a random slope (the intercept is always random).
        train_frame: the fitting table.
    """

    result: object
    response: str
    group: str
    covariates: Sequence[str]
    random_slopes: Sequence[str]
    train_frame: pd.DataFrame
    fit_warnings: list = field(default_factory=list)

    # -- design matrices ----------------------------------------------------------------------
    def _design(self, df: pd.DataFrame):
        ones = np.ones((len(df), 1))
        x = np.hstack([ones, df[list(self.covariates)].to_numpy(float)])  # (n, 1 + p)
        z = np.hstack([ones, df[list(self.random_slopes)].to_numpy(float)])  # (n, 1 + q)
        return x, z

    @property
    def effect_names(self):
        """The names of the random effects: ``'intercept'``, then the random slopes' columns."""
        return ["intercept", *self.random_slopes]

    @property
    def beta(self) -> np.ndarray:
        """Fixed effects ``(1 + p,)``: intercept, then the covariates."""
        return np.asarray(self.result.fe_params)

    @property
    def psi(self) -> np.ndarray:
        """Covariance of the group effects ``(1 + q, 1 + q)``."""
        return np.asarray(self.result.cov_re)

    @property
    def residual_var(self) -> float:
        """``s^2``, the residual variance."""
        return float(self.result.scale)

    # -- group effects and residuals ----------------------------------------------------------
    def group_effects(self) -> pd.DataFrame:
        """BLUPs ``E[b_i | y_i]`` of every training group: one row per group label, one column
        per random effect (``intercept``, then the random slopes)."""
        re = self.result.random_effects
        labels = sorted(re)
        table = np.vstack([np.asarray(re[g]) for g in labels])
        return pd.DataFrame(table, index=pd.Index(labels, name=self.group), columns=self.effect_names)

    def group_effect_covariances(self) -> Dict[object, np.ndarray]:
        """``Var[b_i | y_i]`` of every training group (``(1 + q, 1 + q)`` each)."""
        return {g: np.asarray(c) for g, c in self.result.random_effects_cov.items()}

    def _known(self, df: pd.DataFrame) -> pd.Series:
        check_columns(df, self.group, [self.response, *self.covariates])
        known = df[self.group].isin(set(self.result.random_effects))
        return known

    def predictive(self, df: pd.DataFrame) -> pd.DataFrame:
        """Mean and variance of each row's *conditional predictive* distribution.

        For a row of a training group i: ``N(x' beta + z' b_hat_i, s^2 + z' Var[b_i | y_i] z)``.
        For a row of a new group: the marginal ``N(x' beta, s^2 + z' Psi z)``. Returns columns
        ``mean``, ``var`` and ``known`` (whether the group was seen), indexed like ``df``.
        """
        known = self._known(df)
        x, z = self._design(df)
        effects, covs = self.group_effects(), self.group_effect_covariances()
        b = np.zeros_like(z)
        cov = np.repeat(self.psi[None], len(df), axis=0)  # (n, 1+q, 1+q)
        for r, g in enumerate(df[self.group].to_numpy()):
            if known.iloc[r]:
                b[r], cov[r] = effects.loc[g].to_numpy(), covs[g]
        mean = x @ self.beta + (z * b).sum(1)
        var = self.residual_var + np.einsum("ni,nij,nj->n", z, cov, z)
        return pd.DataFrame({"mean": mean, "var": var, "known": known.to_numpy()}, index=df.index)

    def residuals(self, df: Optional[pd.DataFrame] = None) -> pd.Series:
        """Conditional residuals ``y_ik - x_ik' beta - z_ik' b_hat_i`` (rows of training groups),
        indexed like ``df`` (default: the training table)."""
        df = self.train_frame if df is None else df
        pred = self.predictive(df)
        if not pred["known"].all():
            raise DataError("residuals need the group effects: some rows belong to groups the model was not fitted on")
        return (df[self.response] - pred["mean"]).rename("residual")

    def log_density(self, df: pd.DataFrame) -> pd.Series:
        """Log predictive density (nats) of each row of ``df``, indexed like ``df``.

        Rows of training groups are scored one at a time with the conditional predictive
        distribution of :meth:`predictive`: the empirical-Bayes posterior predictive of a new
        observation of group i given the group's training rows, with ``beta``, ``Psi`` and ``s^2``
        plugged in. We include ``Var[b_i | y_i]`` rather than treat the BLUP as exact because a
        small group's effect is uncertain; this is the exact counterpart (for a linear Gaussian
        model) of the Group VAE's variational predictive
        (:func:`cxvae.predictive.predictive_log_density`), which averages over ``q(u | x_i)``. Rows
        of new groups are scored jointly with their group: ``log N(y_i; X_i beta, Z_i Psi Z_i' +
        s^2 I) / K_i`` per row.
        """
        pred = self.predictive(df)
        y = df[self.response].to_numpy(float)
        out = pd.Series(stats.norm.logpdf(y, pred["mean"], np.sqrt(pred["var"])), index=df.index,
                        name="log_density")
        new = ~pred["known"]
        if new.any():
            for _, rows in df[new.to_numpy()].groupby(self.group, sort=False):
                x, z = self._design(rows)
                cov = z @ self.psi @ z.T + self.residual_var * np.eye(len(rows))
                out[rows.index] = stats.multivariate_normal.logpdf(
                    rows[self.response].to_numpy(float), x @ self.beta, cov) / len(rows)
        return out

    def holdout_nll(self, df: pd.DataFrame) -> float:
        """Negative log predictive density per row of ``df`` (nats)."""
        return float(-self.log_density(df).mean())

    def adjusted(self, df: Optional[pd.DataFrame] = None) -> pd.Series:
        """Each row's response had its group had zero effects (an average group), keeping its
        covariates and residual: ``y_ik - z_ik' b_hat_i``. Indexed like ``df`` (default: training)."""
        df = self.train_frame if df is None else df
        if not self._known(df).all():
            raise DataError("adjusting needs the group effects: some rows belong to groups the model was not fitted on")
        _, z = self._design(df)
        b = self.group_effects().loc[df[self.group]].to_numpy()
        return (df[self.response] - (z * b).sum(1)).rename(self.response)

    def translate(self, source_group, target_group, df: Optional[pd.DataFrame] = None) -> pd.Series:
        """The mixed model's translation: each row of ``source_group`` keeps its covariates and
        residual and takes the target group's effects (``y' = x' beta + z' b_hat_j + e_ik``)."""
        df = self.train_frame if df is None else df
        check_columns(df, self.group, [self.response, *self.covariates])
        rows = df[df[self.group] == source_group]
        if len(rows) == 0:
            raise DataError(f"group {source_group!r} has no rows in the table")
        effects = self.group_effects()
        if target_group not in effects.index:
            raise DataError(f"group {target_group!r} is not one the mixed model was fitted on")
        x, z = self._design(rows)
        return (x @ self.beta + z @ effects.loc[target_group].to_numpy() + self.residuals(rows)).rename(self.response)


def fit_mixed(df: pd.DataFrame, response: str, group: str, covariates: Sequence[str] = (),
              random_slopes: Sequence[str] = (), reml: bool = True) -> MixedModel:
    """Fit ``response ~ 1 + covariates + (1 + random_slopes | group)`` with statsmodels MixedLM.

    Uses the array interface (no formula parser) and REML by default. Several optimisers are
    tried in order (:data:`_METHODS`); the first fit that converges, without statsmodels'
    convergence or singularity warnings, is returned. If none does, the last fit is returned and
    its warnings are re-issued once. ``covariates`` and ``random_slopes`` are each one column
    name or a list of them.
    """
    from statsmodels.regression.mixed_linear_model import MixedLM

    covariates, random_slopes = check_mixed_model(df, response, group, covariates, random_slopes)
    model = MixedModel(None, response, group, covariates, random_slopes, df)
    x, z = model._design(df)
    result, caught, usable = None, [], None
    for method in _METHODS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = MixedLM(df[response].to_numpy(float), x, groups=df[group].to_numpy(), exog_re=z).fit(
                reml=reml, method=method)
        if not _has_group_effects(result):  # a singular Psi: statsmodels cannot predict the b_i
            continue
        usable = (result, caught)
        if result.converged and np.isfinite(result.llf) and not caught:
            break
    else:
        if usable is None:
            raise DataError(f"MixedLM could not fit {response} ~ 1 + {' + '.join(covariates) or '1'} with random "
                            f"{' and '.join(['intercept', *random_slopes])} by {group}: every optimiser gave a "
                            "singular random-effects covariance; drop a random slope")
        result, caught = usable
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    model.result, model.fit_warnings = result, [str(w.message) for w in caught]
    return model


def _has_group_effects(result) -> bool:
    """Whether statsmodels can predict the group effects of a fit (not when Psi is singular)."""
    try:
        result.random_effects
    except (ValueError, np.linalg.LinAlgError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Comparing learned codes with the mixed model's effects
# ---------------------------------------------------------------------------------------------
def _multiple_r(y: np.ndarray, x: np.ndarray) -> float:
    design = np.hstack([np.ones((len(y), 1)), x])
    fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return float(np.sqrt(max(0.0, 1.0 - ((y - fitted) ** 2).sum() / ((y - y.mean()) ** 2).sum())))


def multiple_correlation(target, codes, clusters=None, n_boot: int = 1000, seed: int = 0,
                         level: float = 0.95) -> Dict[str, float]:
    """How well a code predicts a target linearly: the multiple correlation ``R`` and its interval.

    ``R = corr(target, fitted)`` of the least-squares fit of ``target (n,)`` on ``codes (n, d)``
    with an intercept; for ``d = 1`` it is ``|Pearson r|``. It is invariant to the sign and any
    linear transformation of the code, which latent codes are identified only up to. The interval
    is a percentile bootstrap that resamples ``clusters`` (e.g. schools, so that students of one
    school stay together) or, without clusters, rows.

    Returns:
        ``dict(r=..., low=..., high=...)``.
    """
    n_boot = require_int("n_boot", n_boot, 1)
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be strictly between 0 and 1; got {level}")
    y = np.asarray(target, dtype=float).reshape(-1)
    x = np.atleast_1d(np.asarray(codes, dtype=float))
    if len(y) == 0 or len(x) != len(y):
        raise DataError(f"need one code (row of codes) per target value; got {len(x)} codes and {len(y)} targets")
    x = x.reshape(len(y), -1)
    if not (np.isfinite(y).all() and np.isfinite(x).all()):  # a NaN would make R and its interval NaN
        raise DataError(f"target and codes must be finite; {int((~np.isfinite(y)).sum())} target value(s) and "
                        f"{int((~np.isfinite(x)).any(axis=1).sum())} code row(s) are NaN or infinite")
    clusters = np.arange(len(y)) if clusters is None else np.asarray(clusters)
    if len(clusters) != len(y):  # a shorter one would quietly bootstrap only some of the rows
        raise DataError(f"clusters must name one cluster per row; got {len(clusters)} for {len(y)} rows")
    labels, inverse = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(labels))]
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        rows = np.concatenate([members[c] for c in rng.integers(0, len(labels), len(labels))])
        boot.append(_multiple_r(y[rows], x[rows]))
    alpha = (1.0 - level) / 2
    return dict(r=_multiple_r(y, x), low=float(np.quantile(boot, alpha)), high=float(np.quantile(boot, 1 - alpha)))


def rank_agreement(code, reference, clusters=None, top: float = 0.1, n_boot: int = 1000,
                   seed: int = 0) -> Dict[str, float]:
    """Agreement of two rankings of the same rows: Spearman's rho (with a cluster-bootstrap 95 %
    interval) and the overlap of their top ``top`` fractions.

    The code's sign is aligned with the reference first (codes are identified up to sign).
    Returns ``dict(rho=, low=, high=, top_overlap=)``; ``top_overlap`` is the share of the
    reference's top rows that are also in the code's top rows.
    """
    a, b = np.asarray(code, dtype=float).reshape(-1), np.asarray(reference, dtype=float).reshape(-1)
    if len(a) == 0 or len(a) != len(b):
        raise DataError(f"code and reference must rank the same rows; got {len(a)} and {len(b)} values")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError(f"code and reference must be finite to rank them; {int((~np.isfinite(a)).sum())} and "
                        f"{int((~np.isfinite(b)).sum())} value(s) are NaN or infinite")
    if not 0.0 < top <= 1.0:
        raise ConfigError(f"top must be a fraction in (0, 1]; got {top}")
    if stats.spearmanr(a, b).statistic < 0:
        a = -a
    ranks_a, ranks_b = stats.rankdata(a), stats.rankdata(b)
    rho = multiple_correlation(ranks_b, ranks_a, clusters, n_boot=n_boot, seed=seed)
    n_top = max(1, int(round(top * len(a))))
    top_a, top_b = set(np.argsort(-a)[:n_top]), set(np.argsort(-b)[:n_top])
    return dict(rho=rho["r"], low=rho["low"], high=rho["high"], top_overlap=len(top_a & top_b) / n_top)


# ---------------------------------------------------------------------------------------------
# One study: Group-VAE presets on a table, scored against a mixed model
# ---------------------------------------------------------------------------------------------
def compare_presets(train: pd.DataFrame, holdout: pd.DataFrame, *, group: str, values: Sequence[str],
                    presets: Sequence[str], seeds: Sequence[int], epochs: int,
                    effects: pd.DataFrame, residuals: pd.DataFrame, model: Optional[Dict] = None,
                    batch_size: int = 16, device: str = "cpu", n_boot: int = 500):
    """Fit every (preset, seed) with :func:`cxvae.tabular.fit` and score it against a mixed model.

    Args:
        train, holdout: the tables (holdout rows of training groups, see
            :func:`cxvae.tabular.split_within_groups`).
        effects: the mixed model's group effects (index: group labels; one column per effect).
        residuals: the mixed model's per-row residuals of ``train`` (one column per residual).
        presets, seeds: a list of each, or a single one.
        model: ModelConfig overrides (e.g. ``dict(v_dim=2)``).
    Returns:
        ``(models, runs)``: ``{(preset, seed): GroupModel}`` and one row per run with
        ``holdout_nll`` (nats per row), ``u_information`` (nats per group) and ``v_information``
        (nats per row; see :meth:`~cxvae.tabular.GroupModel.group_information` and
        :meth:`~cxvae.tabular.GroupModel.instance_information`) and, for each effect column c,
        ``u~c`` (:func:`multiple_correlation` of the effect on the group code) with ``u~c low`` /
        ``u~c high``; likewise ``v~c`` for each residual column on the instance code, with the
        bootstrap resampling whole groups.
    """
    from .tabular import fit

    presets = column_names(presets)  # one preset name, not its letters
    seeds = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
    check_columns(train, group, values)
    for name, table, needed, what in (("effects", effects, pd.Index(train[group].unique()), "group"),
                                      ("residuals", residuals, train.index, "row")):
        lacking = needed.difference(table.index)  # checked before training, not as a KeyError after it
        if len(lacking):
            raise DataError(f"{name} has no row for {len(lacking)} training {what}(s), e.g. {lacking[:5].tolist()}")
    models, rows = {}, []
    for preset in presets:
        for seed in seeds:
            m = fit(train, group=group, values=values, preset=preset, epochs=epochs, seed=seed,
                    batch_size=batch_size, device=device, model=model)
            u, v = m.group_codes(), m.instance_codes()
            row = dict(preset=preset, seed=seed, holdout_nll=m.holdout_nll(holdout),
                       u_information=m.group_information(), v_information=m.instance_information())
            for name, target, codes, clusters in (
                    [("u~" + c, effects[c].loc[u.index], u, None) for c in effects.columns]
                    + [("v~" + c, residuals[c].loc[v.index], v, train[group]) for c in residuals.columns]):
                r = multiple_correlation(target, codes.to_numpy(), clusters=clusters, n_boot=n_boot, seed=seed)
                row.update({name: r["r"], f"{name} low": r["low"], f"{name} high": r["high"]})
            models[preset, seed] = m
            rows.append(row)
    return models, pd.DataFrame(rows)


def summarise_runs(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Median over seeds of ``columns``, one row per preset (in the order of ``runs``)."""
    order = list(dict.fromkeys(runs["preset"]))
    return runs.groupby("preset")[column_names(columns)].median().loc[order]
