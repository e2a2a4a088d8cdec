"""cxvae.estimator.GroupVAERegressor: the scikit-learn protocol (parameters, clone, grouped
cross-validation) and agreement with cxvae.tabular, which it wraps."""
import numpy as np
import pandas as pd
import pytest

from cxvae.data import DataError
from cxvae.estimator import GroupVAERegressor, NotFittedError
from cxvae.tabular import fit

import sklearn.base


def _table(n_groups=40, seed=0):
    """y = b_g + 0.5 c + noise: groups of 1-6 rows (singletons included), one covariate c."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), rng.integers(1, 7, n_groups))
    c = rng.normal(size=len(g))
    X = pd.DataFrame({"school": g.astype(str), "intake": 50 + 10 * c})
    return X, pd.Series(rng.normal(size=n_groups)[g] + 0.5 * c + 0.5 * rng.normal(size=len(g)), name="score")


def test_parameters_follow_the_protocol():
    est = GroupVAERegressor(group="school", epochs=3)
    params = est.get_params()
    assert params["group"] == "school" and params["epochs"] == 3 and params["preset"] == "cxvae"
    assert est.set_params(preset="gvae", seed=2) is est and est.get_params()["preset"] == "gvae"
    assert repr(est) == "GroupVAERegressor(epochs=3, group='school', preset='gvae', seed=2)"
    with pytest.raises(ValueError, match="Invalid parameter 'lr'"):
        est.set_params(lr=0.1)
    copy = sklearn.base.clone(est)
    assert copy is not est and copy.get_params() == est.get_params()


def test_fit_predict_score_are_tabular_fit_predict_and_log_density():
    """Same seed, same model: the estimator's predictions and score are GroupModel's."""
    X, y = _table()
    est = GroupVAERegressor(group="school", covariates=["intake"], epochs=3, batch_size=8).fit(X, y)
    model = fit(pd.concat([X, y], axis=1), "school", "score", covariates=["intake"], epochs=3, batch_size=8)
    pred = est.predict(X)
    assert isinstance(pred, pd.Series) and pred.name == "score" and pred.index.equals(X.index)
    np.testing.assert_allclose(pred, model.predict(X, n_samples=2000).score)
    assert est.score(X, y) == pytest.approx(-model.holdout_nll(pd.concat([X, y], axis=1)))
    moments = est.predict(X, return_var=True)
    assert {"score", "score_var", "case"} <= set(moments.columns) and (moments.score_var > 0).all()
    assert est.n_features_in_ == 2 and est.feature_names_in_ == ["school", "intake"]


def test_grouped_cross_validation_and_grid_search_run():
    """GroupKFold holds out whole schools (new groups, scored given their covariates);
    GridSearchCV refits the best preset on all rows."""
    from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score

    X, y = _table()
    est = GroupVAERegressor(group="school", covariates=["intake"], epochs=2, batch_size=8)
    scores = cross_val_score(est, X, y, groups=X.school, cv=GroupKFold(n_splits=3))
    assert scores.shape == (3,) and np.isfinite(scores).all()
    search = GridSearchCV(est, {"preset": ["gvae", "cxvae"]}, cv=GroupKFold(n_splits=2)).fit(X, y, groups=X.school)
    assert search.best_params_["preset"] in {"gvae", "cxvae"} and hasattr(search.best_estimator_, "model_")


def test_clear_errors():
    X, y = _table(n_groups=8)
    est = GroupVAERegressor(group="school", epochs=1)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        est.predict(X)
    from sklearn.exceptions import NotFittedError as SklearnNotFitted
    from sklearn.utils.validation import check_is_fitted
    assert NotFittedError is SklearnNotFitted  # scikit-learn's own, so its tools catch it
    with pytest.raises(SklearnNotFitted):
        check_is_fitted(est)
    with pytest.raises(DataError, match="X must be a pandas DataFrame"):
        est.fit(X.to_numpy(), y)
    with pytest.raises(DataError, match="fit needs y"):
        est.fit(X, None)
    with pytest.raises(DataError, match="X has 3 rows but y has"):
        est.fit(X.iloc[:3], y)
    with pytest.raises(DataError, match="unnamed Series"):
        est.fit(X, y.rename(None))
    with pytest.raises(DataError, match=r"also columns of X"):
        est.fit(X.assign(score=1.0), y)
    est.fit(X, y)
    assert est.predict(X, y=None).name == "score"
    assert np.isfinite(est.score(X, y.to_numpy()))  # an array takes the fitted value column's name
