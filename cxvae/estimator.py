"""A scikit-learn-compatible estimator around :func:`cxvae.tabular.fit`: pandas in, pandas out.

``GroupVAERegressor(group="school").fit(X, y)`` trains a Group VAE on the rows of ``X`` (the
group column and any covariates) with ``y`` as the modelled values; ``predict(X)`` gives the
predictive mean of each row (:meth:`cxvae.tabular.GroupModel.predict`: a known group given its
training rows, a new group given its other rows in ``X`` or the prior), and ``score(X, y)`` the
mean log density per row in nats (higher is better, as scikit-learn's scorers expect, and as
its density estimators score; not the R² of its regressors). The parameters follow
scikit-learn's conventions (``get_params``/``set_params``, nothing done in ``__init__``, the
fitted model in ``model_``; ``get_params``/``set_params`` from scikit-learn's ``BaseEstimator``),
so ``sklearn.base.clone``, ``GridSearchCV`` and ``cross_val_score(..., cv=GroupKFold(...))`` work.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError  # re-exported: what scikit-learn's own tools catch

from .data import DataError
from .tabular import PATIENCE_STEPS, GroupModel, fit

__all__ = ["GroupVAERegressor", "NotFittedError"]


class GroupVAERegressor(BaseEstimator):
    """A Group VAE preset as a scikit-learn estimator.

    Args:
        group: the name of the group column of ``X``.
        covariates: columns of ``X`` to condition on (fixed effects); the other columns of
            ``X`` (besides ``group``) are ignored.
        preset, epochs, max_steps, valid, patience, batch_size, seed, device, dequantise: as in
            :func:`cxvae.tabular.fit`, with its defaults (``epochs=None``: train until the
            validation groups' bound stops improving, then calibrate the predictive variance).
        n_samples: draws per row for :meth:`predict`'s moments.
    Attributes (after ``fit``):
        model_: the :class:`cxvae.tabular.GroupModel`; values_: the modelled columns (``y``'s
        names); n_features_in_, feature_names_in_: the columns of ``X`` that were read.
    """

    def __init__(self, group: str = "group", covariates: Sequence[str] = (), preset: str = "cxvae",
                 epochs: Optional[int] = None, max_steps: Optional[int] = None, valid: Optional[float] = None,
                 patience: int = PATIENCE_STEPS, batch_size: Optional[int] = None, seed: int = 0,
                 device: str = "cpu", dequantise: Optional[bool] = None, n_samples: int = 2000):
        self.group, self.covariates, self.preset = group, covariates, preset
        self.epochs, self.max_steps, self.valid, self.patience = epochs, max_steps, valid, patience
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.dequantise, self.n_samples = dequantise, n_samples

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True  # y holds the modelled values
        tags.input_tags.string = True  # the group column may hold strings
        return tags

    # -- fit / predict / score ------------------------------------------------------------------
    def _frame(self, X, y=None) -> pd.DataFrame:
        """``X`` with ``y``'s columns joined (by position), checked to be a DataFrame."""
        if not isinstance(X, pd.DataFrame):
            raise DataError(f"X must be a pandas DataFrame with the group column {self.group!r}; "
                            f"got {type(X).__name__}")
        if y is None:
            return X
        y = _as_frame(y, getattr(self, "values_", None))
        if len(y) != len(X):
            raise DataError(f"X has {len(X)} rows but y has {len(y)}")
        clash = sorted(set(y.columns) & set(X.columns))
        if clash:
            raise DataError(f"y's column(s) {clash} are also columns of X")
        return pd.concat([X, y.set_axis(X.index)], axis=1)

    def fit(self, X: pd.DataFrame, y: Union[pd.Series, pd.DataFrame]) -> "GroupVAERegressor":
        """Train on the rows of ``X`` (group column, covariates) with ``y`` (a named Series or a
        DataFrame of numeric columns) as the modelled values. Returns ``self``."""
        if y is None:
            raise DataError("fit needs y: the value column(s) to model")
        self.values_ = list(_as_frame(y, None).columns)
        frame = self._frame(X, y)
        covariates = [self.covariates] if isinstance(self.covariates, str) else list(self.covariates)
        self.model_: GroupModel = fit(frame, self.group, self.values_, covariates=covariates, preset=self.preset,
                                      epochs=self.epochs, max_steps=self.max_steps, valid=self.valid,
                                      patience=self.patience, batch_size=self.batch_size, seed=self.seed,
                                      device=self.device, dequantise=self.dequantise)
        self.feature_names_in_ = [self.group, *covariates]
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def _fitted(self) -> GroupModel:
        if not hasattr(self, "model_"):
            raise NotFittedError("this GroupVAERegressor is not fitted yet: call fit(X, y) first")
        return self.model_

    def predict(self, X: pd.DataFrame, y: Optional[Union[pd.Series, pd.DataFrame]] = None,
                return_var: bool = False):
        """The predictive mean of each row of ``X``, indexed like it: a Series named like ``y``
        for one value column, else a DataFrame. ``y`` (optional) gives new groups' other rows as
        context; ``return_var`` returns a DataFrame with ``<value>_var`` columns and ``case`` too."""
        model = self._fitted()
        out = model.predict(self._frame(X, y), return_var=return_var, n_samples=self.n_samples, seed=self.seed)
        if return_var:
            return out
        return out[self.values_[0]] if len(self.values_) == 1 else out[self.values_]

    def score(self, X: pd.DataFrame, y: Union[pd.Series, pd.DataFrame]) -> float:
        """Mean log density of the rows of ``(X, y)`` in nats per row (original units): higher is
        better (:meth:`cxvae.tabular.GroupModel.holdout_nll`, negated)."""
        return -self._fitted().holdout_nll(self._frame(X, y))


def _as_frame(y, names) -> pd.DataFrame:
    """``y`` as a DataFrame of value columns: a named Series, a DataFrame, or an unnamed Series
    or array when the fitted model's single value column gives the name."""
    if isinstance(y, pd.DataFrame):
        return y
    if isinstance(y, pd.Series):
        if y.name is None:
            if not names or len(names) != 1:
                raise DataError("y is an unnamed Series: give it the value column's name (y.rename('score'))")
            return y.rename(names[0]).to_frame()
        return y.to_frame()
    if names and len(names) == 1:
        return pd.DataFrame({names[0]: list(y)})
    raise DataError(f"y must be a named pandas Series or a DataFrame; got {type(y).__name__}")
