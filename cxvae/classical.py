"""Classical baselines beside MixedLM: GPBoost's linear mixed model and its tree-boosted mixed model.

GPBoost (Sigrist 2022, "Gaussian process boosting") fits ``y_ik = F(x_ik) + z_ik' b_i + e_ik``
with independent group effects ``b_i`` (a random intercept, plus a random slope per covariate
named in ``random_slopes``) and Gaussian residuals. ``F`` is linear (``kind='lmm'``, a linear
mixed model; its effects are uncorrelated, where :func:`cxvae.mixed.fit_mixed` estimates their
correlation) or a tree ensemble fitted by boosting (``kind='boosted'``), which can follow a
growth curve that is not a line.

:meth:`GPBoostModel.log_density` scores held-out rows exactly as
:meth:`cxvae.mixed.MixedModel.log_density` and :meth:`cxvae.tabular.GroupModel.log_density` do:
a row of a known group one at a time, given the group's training rows (GPBoost's posterior
predictive, the group effect's posterior variance included); the rows of a new group jointly,
``log p(y_i | covariates_i) / K_i`` per row.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .config import ConfigError
from .frames import check_columns, check_mixed_model

__all__ = ["BoostConfig", "GPBoostModel", "fit_gpboost", "GPBOOST_KINDS"]

GPBOOST_KINDS = ("lmm", "boosted")


@dataclass(frozen=True)
class BoostConfig:
    """The tree ensemble of ``kind='boosted'`` (our choice of settings, the same for every table):
    shallow trees with a small learning rate, the number of rounds chosen by ``nfold``-fold
    cross-validation of the training rows with early stopping (at most ``max_rounds``)."""

    learning_rate: float = 0.1
    max_depth: int = 3
    min_data_in_leaf: int = 5
    max_rounds: int = 300
    early_stopping_rounds: int = 20
    nfold: int = 4
    seed: int = 0


@dataclass
class GPBoostModel:
    """A fitted GPBoost model (``kind`` of :data:`GPBOOST_KINDS`) and the table it was fitted on."""

    kind: str
    gp_model: object
    booster: Optional[object]
    response: str
    group: str
    covariates: Sequence[str]
    random_slopes: Sequence[str]
    train_frame: pd.DataFrame
    rounds: int = 0
    fit_warnings: list = field(default_factory=list)

    def _inputs(self, df: pd.DataFrame) -> dict:
        groups = df[self.group].astype(str).to_numpy()
        slopes = df[list(self.random_slopes)].to_numpy(float) if self.random_slopes else None
        return dict(group_data_pred=groups, group_rand_coef_data_pred=slopes)

    def _fixed_design(self, df: pd.DataFrame) -> np.ndarray:
        if self.kind == "lmm":
            return np.column_stack([np.ones(len(df)), df[list(self.covariates)].to_numpy(float)])
        return df[list(self.covariates)].to_numpy(float) if self.covariates else np.zeros((len(df), 1))

    def predictive(self, df: pd.DataFrame, cov: bool = False) -> tuple:
        """Predictive mean ``(n,)`` and variance ``(n,)`` (or covariance ``(n, n)`` with ``cov``)
        of the rows of ``df`` given the training table."""
        kw = dict(self._inputs(df), predict_var=not cov, predict_cov_mat=cov)
        if self.booster is None:
            out = self.gp_model.predict(X_pred=self._fixed_design(df), predict_response=True, **kw)
            mean, spread = out["mu"], out["cov"] if cov else out["var"]
        else:
            out = self.booster.predict(data=self._fixed_design(df), pred_latent=False, **kw)
            mean, spread = out["response_mean"], out["response_var"]
        return np.asarray(mean, float), np.asarray(spread, float)

    def log_density(self, df: pd.DataFrame) -> pd.Series:
        """Log predictive density (nats) of each row of ``df``, indexed like ``df`` (the module
        docstring says what is conditioned on)."""
        check_columns(df, self.group, [self.response, *self.covariates])
        y = df[self.response].to_numpy(float)
        known = df[self.group].astype(str).isin(set(self.train_frame[self.group].astype(str))).to_numpy()
        out = pd.Series(np.nan, index=df.index, dtype=float, name="log_density")
        if known.any():
            mean, var = self.predictive(df[known])
            out[known] = stats.norm.logpdf(y[known], mean, np.sqrt(var))
        for _, rows in df[~known].groupby(self.group, sort=False):
            mean, cov = self.predictive(rows, cov=True)
            out[rows.index] = stats.multivariate_normal.logpdf(rows[self.response].to_numpy(float), mean,
                                                               np.atleast_2d(cov)) / len(rows)
        return out

    def holdout_nll(self, df: pd.DataFrame) -> float:
        """Negative log predictive density per row of ``df`` (nats)."""
        return float(-self.log_density(df).mean())


def fit_gpboost(df: pd.DataFrame, response: str, group: str, covariates: Sequence[str] = (),
                random_slopes: Sequence[str] = (), kind: str = "lmm",
                boost: BoostConfig = BoostConfig()) -> GPBoostModel:
    """Fit ``response ~ F(covariates) + (1 + random_slopes || group)`` with GPBoost (maximum
    likelihood for the variances); ``F`` linear (``kind='lmm'``) or boosted trees
    (``kind='boosted'``, settings :class:`BoostConfig`). Returns a :class:`GPBoostModel`."""
    import gpboost as gpb

    if kind not in GPBOOST_KINDS:
        raise ConfigError(f"unknown GPBoost kind {kind!r}; choose from {GPBOOST_KINDS}")
    covariates, random_slopes = check_mixed_model(df, response, group, covariates, random_slopes)
    model = GPBoostModel(kind, None, None, response, group, covariates, random_slopes, df)
    groups = df[group].astype(str).to_numpy()
    slopes = df[list(random_slopes)].to_numpy(float) if random_slopes else None
    y = df[response].to_numpy(float)

    def gp():
        return gpb.GPModel(group_data=groups, group_rand_coef_data=slopes,
                           ind_effect_group_rand_coef=[1] * len(random_slopes) if random_slopes else None,
                           likelihood="gaussian")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.gp_model = gp()
        if kind == "lmm":
            model.gp_model.fit(y=y, X=model._fixed_design(df), params={"trace": False})
        else:
            params = dict(learning_rate=boost.learning_rate, max_depth=boost.max_depth,
                          min_data_in_leaf=boost.min_data_in_leaf, objective="regression_l2", verbose=-1,
                          seed=boost.seed)
            data = gpb.Dataset(model._fixed_design(df), y)
            cv = gpb.cv(params=params, train_set=data, gp_model=model.gp_model, num_boost_round=boost.max_rounds,
                        early_stopping_rounds=boost.early_stopping_rounds, nfold=boost.nfold, seed=boost.seed,
                        use_gp_model_for_validation=True, verbose_eval=False)
            model.rounds = max(1, len(next(iter(cv.values()))))
            model.gp_model = gp()
            model.booster = gpb.train(params=params, train_set=gpb.Dataset(model._fixed_design(df), y),
                                      gp_model=model.gp_model, num_boost_round=model.rounds)
    model.fit_warnings = [str(w.message) for w in caught]
    return model
