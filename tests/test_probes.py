"""Probes: C chosen on train-split CV only; test rows never influence fitting or selection."""

import numpy as np
import pytest
import scipy.sparse as sp

from saeprobe.errors import DataError
from saeprobe.probes import fit_probe, fit_tfidf


def _problem(seed=0, n=240, d=30, sparse=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, d)) + np.eye(3, d)[y] * 1.5
    split = np.array(["train"] * 150 + ["validation"] * 30 + ["test"] * 60)
    if sparse:
        x = sp.csr_matrix(np.maximum(x, 0))
    return x, y, split


@pytest.mark.parametrize("sparse", [False, True])
def test_selection_never_touches_test_rows(sparse):
    x, y, split = _problem(sparse=sparse)
    kw = dict(Cs=[0.01, 0.1, 1.0], cv_folds=3, seed=3)
    res, coef, _ = fit_probe(x, y, split, **kw)
    # Scramble every test row (features and labels): everything but the test scores must be identical.
    rng = np.random.default_rng(99)
    x2 = x.toarray() if sparse else x.copy()
    test = split == "test"
    x2[test] = rng.normal(size=(test.sum(), x2.shape[1])) * 100
    x2 = sp.csr_matrix(np.maximum(x2, 0)) if sparse else x2
    y2 = y.copy()
    y2[test] = rng.permutation(y2[test])
    res2, coef2, _ = fit_probe(x2, y2, split, **kw)
    for key in ("C", "cv_macro_f1", "cv_scores_by_C", "validation"):
        assert res[key] == res2[key], key
    np.testing.assert_array_equal(coef, coef2)
    assert res["test"] != res2["test"]


def test_probe_learns_and_reports_metrics():
    x, y, split = _problem()
    res, coef, intercept = fit_probe(x, y, split, Cs=[0.1, 1.0], cv_folds=3)
    assert res["test"]["macro_f1"] > 0.6
    assert res["test"]["n"] == 60 and res["validation"]["n"] == 30 and res["n_train"] == 150
    assert np.array(res["test"]["confusion"]).sum() == 60
    assert 0.5 < res["test"]["auroc"] <= 1.0
    assert coef.shape == (3, 30) and intercept.shape == (3,)
    assert set(res["cv_scores_by_C"]) == {"0.1", "1"}


def test_probe_is_deterministic():
    x, y, split = _problem(sparse=True)
    a = fit_probe(x, y, split, Cs=[0.1, 1.0], cv_folds=3, seed=1)[0]
    b = fit_probe(x, y, split, Cs=[0.1, 1.0], cv_folds=3, seed=1)[0]
    assert a == b


def test_binary_probe_and_tfidf():
    texts = [f"good movie {i}" if i % 2 else f"bad film {i}" for i in range(80)]
    y = np.arange(80) % 2
    split = np.array(["train"] * 60 + ["test"] * 20)
    res = fit_tfidf(texts, y, split, Cs=[1.0], cv_folds=3)
    assert res["test"]["macro_f1"] == 1.0 and res["vocabulary_size"] > 0


def test_missing_test_split_and_single_class_errors():
    x, y, split = _problem()
    with pytest.raises(DataError, match="need train and test rows"):
        fit_probe(x, y, np.array(["train"] * len(y)), Cs=[1.0])
    with pytest.raises(DataError, match="single class"):
        fit_probe(x, np.zeros_like(y), split, Cs=[1.0])


def test_solver_auto_is_newton_cg_for_sparse_and_lbfgs_for_dense():
    for sparse, solver in ((True, "newton-cg"), (False, "lbfgs")):
        x, y, split = _problem(sparse=sparse)
        assert fit_probe(x, y, split, Cs=[1.0], cv_folds=3)[0]["solver"] == solver
    x, y, split = _problem(sparse=True)
    assert fit_probe(x, y, split, Cs=[1.0], cv_folds=3, solver="saga", max_iter=2000)[0]["solver"] == "saga"
