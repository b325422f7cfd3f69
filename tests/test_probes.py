"""Probes: C chosen on train-split CV only; test rows never influence fitting or selection."""

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from saeprobe import data, probes
from saeprobe.errors import DataError
from saeprobe.probes import MACRO_F1, _cv, _metrics, fit_cv, fit_probe, fit_tfidf
from tests.helpers import write_parquet


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
    pa, pb = a.pop("predictions"), b.pop("predictions")
    assert a == b
    for name in ("validation", "test"):
        np.testing.assert_array_equal(pa[name][0], pb[name][0])
        np.testing.assert_array_equal(pa[name][1], pb[name][1])
    # The stored predictions are what the scores were computed from.
    assert pa["test"][1].shape == (int((split == "test").sum()), 3)
    assert np.mean(pa["test"][0] == y[split == "test"]) == a["test"]["accuracy"]


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


def _grouped_problem(seed=0, n_groups=30):
    """Groups of 4..12 rows with labels drawn per row, and the ``_problem`` features."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), rng.integers(4, 13, n_groups))
    y = rng.integers(0, 3, len(groups))
    x = rng.normal(size=(len(y), 30)) + np.eye(3, 30)[y] * 1.5
    return x, y, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_cv_folds_never_share_a_group(seed):
    _, y, groups = _grouped_problem(seed)
    cv = _cv(y, 5, seed, groups)
    assert cv.n_splits == 5
    held_out = []
    for fit_rows, test_rows in cv.split(np.zeros(len(y)), y, groups):
        assert not set(groups[fit_rows]) & set(groups[test_rows]), "a group is in a fold's fitting and held-out rows"
        held_out.extend(test_rows)
    assert sorted(held_out) == list(range(len(y)))
    # Ungrouped folds on the same rows do split groups (what the grouped ones prevent).
    ungrouped = _cv(y, 5, seed)
    assert any(set(groups[a]) & set(groups[b]) for a, b in ungrouped.split(np.zeros(len(y)), y))


def test_grouped_cv_folds_reduced_to_groups_and_a_class_in_one_group_is_an_error():
    y = np.array([0, 1] * 6 + [2] * 6)
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5] + [6, 6, 6, 7, 7, 7])
    assert _cv(y, 5, 0, groups).n_splits == 2  # class 2 is in 2 groups
    assert _cv(y[:12], 5, 0, groups[:12]).n_splits == 5
    assert _cv(y[:12], 10, 0, groups[:12]).n_splits == 6  # smallest class
    assert _cv(y[:12], 10, 0, groups[:12] // 2).n_splits == 3  # number of groups
    with pytest.raises(DataError, match="a class occurs in a single train group"):
        _cv(y, 5, 0, np.where(y == 2, 6, groups))


def test_fit_cv_uses_grouped_folds_on_train_rows_only(monkeypatch):
    x, y, groups = _grouped_problem()
    train = groups < 20
    seen = []

    class Recording(LogisticRegressionCV):  # the CV scores' estimator, with the folds it was given recorded
        def fit(self, *args, **kwargs):
            seen.append(self.cv)
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(probes, "LogisticRegressionCV", Recording)
    model, info = fit_cv(x, y, train, Cs=[0.1, 1.0], cv_folds=4, seed=3, groups=groups)
    monkeypatch.undo()
    (folds,) = seen
    assert len(folds) == info["cv_folds"] == 4 and info["cv_groups"] == 20
    g = groups[train]
    for fit_rows, test_rows in folds:
        assert not set(g[fit_rows]) & set(g[test_rows])
    # Groups of rows outside train are never read.
    other = np.where(train, groups, -1)
    _, info2 = fit_cv(x, y, train, Cs=[0.1, 1.0], cv_folds=4, seed=3, groups=other)
    assert info2 == info


def test_fit_probe_without_groups_is_unchanged():
    """groups=None is the stratified k-fold path: the CV scores of LogisticRegressionCV on
    StratifiedKFold(min(folds, smallest class)) built by hand, C by the one-standard-error rule
    computed by hand, and the coefficients of a plain LogisticRegression refitted at that C."""
    x, y, split = _problem(seed=5)
    kw = dict(Cs=[0.01, 0.1, 1.0], cv_folds=3, seed=3)
    res, coef, intercept = fit_probe(x, y, split, **kw)
    res.pop("predictions")
    again = fit_probe(x, y, split, groups=None, **kw)[0]
    again.pop("predictions")
    assert again == res and "cv_groups" not in res
    train = split == "train"
    ref = Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegressionCV(
        Cs=kw["Cs"], l1_ratios=(0.0,), cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=3), scoring=MACRO_F1,
        class_weight="balanced", max_iter=500, tol=1e-4, random_state=3, n_jobs=1, use_legacy_attributes=False,
        solver="lbfgs", refit=False))]).fit(x[train], y[train])
    fold_scores = np.asarray(ref.named_steps["logreg"].scores_).reshape(-1, 3)
    means, se = fold_scores.mean(0), fold_scores.std(0) / np.sqrt(3)
    assert res["cv_folds"] == 3 and res["selection_rule"] == "one_se"
    assert list(res["cv_scores_by_C"].values()) == [float(s) for s in means]
    band = [c for c, m in zip(kw["Cs"], means) if m >= means.max() - se[means.argmax()] - 1e-12]
    assert res["cv_band_Cs"] == band and res["C"] == min(band)
    assert res["cv_best_C"] == kw["Cs"][int(means.argmax())] and res["cv_best_macro_f1"] == float(means.max())
    lr = Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(
        C=res["C"], class_weight="balanced", max_iter=500, tol=1e-4, random_state=3, solver="lbfgs"))]
    ).fit(x[train], y[train]).named_steps["logreg"]
    np.testing.assert_array_equal(coef, lr.coef_)
    np.testing.assert_array_equal(intercept, lr.intercept_)
    # Grouped folds choose on different folds: the CV scores change.
    groups = np.arange(len(y)) // 6
    assert fit_probe(x, y, split, groups=groups, **kw)[0]["cv_scores_by_C"] != res["cv_scores_by_C"]


def test_grouped_split_removes_template_leakage(tmp_path):
    """A templated benchmark: each template (group) has its own feature, which gives the label away
    only within that template; one weak feature is shared by all. Split row by row, every test
    template was fitted on and the probe looks nearly perfect; with the templates kept together
    (group_column, grouped CV) the test score drops to what the shared feature supports."""
    n_groups, per_group = 40, 12
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = np.concatenate([rng.permutation([0, 1] * (per_group // 2)) for _ in range(n_groups)])
    x = np.zeros((len(y), n_groups + 1))
    x[np.arange(len(y)), groups] = (2 * y - 1) + rng.normal(scale=0.3, size=len(y))  # the template's own feature
    x[:, -1] = 0.8 * y + rng.normal(size=len(y))  # weak and shared
    frame = pl.DataFrame({"text": [f"template {g} doc {i}" for i, g in enumerate(groups)], "label": y, "tpl": groups})
    path = write_parquet(tmp_path, frame)
    kw = dict(Cs=[0.01, 0.1, 1.0, 10.0], cv_folds=5, seed=0)
    rows, _, _ = data.prepare({"path": path, "split_column": None}, "d", seed=0)
    grouped, _, _ = data.prepare({"path": path, "split_column": None, "group_column": "tpl"}, "d", seed=0)
    assert (rows["source_row"] == np.arange(len(y))).all() and (grouped["source_row"] == np.arange(len(y))).all()
    leaky = fit_probe(x, y, rows["split"].to_numpy(), **kw)[0]
    fair = fit_probe(x, y, grouped["split"].to_numpy(), groups=grouped["group"].to_numpy(), **kw)[0]
    assert leaky["test"]["macro_f1"] > 0.9
    assert fair["test"]["macro_f1"] < leaky["test"]["macro_f1"] - 0.15
    # Grouped CV on the same (row-split) train rows sees the leak too: its CV score is lower.
    leaky_cv = fit_probe(x, y, rows["split"].to_numpy(), groups=groups, **kw)[0]
    assert leaky_cv["cv_macro_f1"] < leaky["cv_macro_f1"] - 0.15


def _flat_curve_problem():
    """A weak binary signal whose CV curve is flat within its noise: C = 1 .. 1000 score exactly the
    same (no regularisation left to change the predictions), a hair above C = 0.01 and 0.1."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 160)
    x = rng.normal(size=(160, 20)) + np.eye(2, 20)[y] * 0.7
    return x, y, np.array(["train"] * 120 + ["test"] * 40)


def test_one_se_choice_of_C_does_not_hinge_on_a_tie_break_or_the_order_of_Cs():
    """An argmax over a flat CV curve is decided by its tie-break: C in the config's order picks the
    first of the tied Cs, the reversed order the last. The one-standard-error rule picks the
    smallest C of the band whatever the order, and refits the same probe."""
    x, y, split = _flat_curve_problem()
    Cs = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
    orders = [Cs, Cs[::-1], [10.0, 0.1, 1000.0, 0.01, 100.0, 1.0]]
    fits = [fit_probe(x, y, split, Cs=order, cv_folds=5, seed=0) for order in orders]
    res = fits[0][0]
    means = np.array([res["cv_scores_by_C"][f"{c:g}"] for c in Cs])
    # The curve is flat: more than one C in the band, and an argmax's tie-break would decide.
    assert Cs[int(np.argmax(means))] != Cs[::-1][int(np.argmax(means[::-1]))]
    for other, coef, intercept in fits[1:]:
        assert other["C"] == res["C"] and other["cv_scores_by_C"] == res["cv_scores_by_C"]
        np.testing.assert_array_equal(coef, fits[0][1])
        np.testing.assert_array_equal(intercept, fits[0][2])
    se_best = res["cv_se_by_C"][f"{res['cv_best_C']:g}"]
    band = [c for c, m in zip(Cs, means) if m >= means.max() - se_best - 1e-12]
    assert len(band) > 1 and res["cv_band_Cs"] == band and res["C"] == min(band) != res["cv_best_C"]


def test_reported_cv_score_and_spread_are_those_of_the_chosen_C():
    x, y, split = _flat_curve_problem()
    res = fit_probe(x, y, split, Cs=[0.01, 0.1, 1.0, 10.0], cv_folds=5, seed=0)[0]
    key = f"{res['C']:g}"
    assert res["cv_macro_f1"] == res["cv_scores_by_C"][key] < max(res["cv_scores_by_C"].values())
    assert res["selection_rule"] == "one_se" and res["C"] != res["cv_best_C"]
    assert res["cv_best_macro_f1"] == max(res["cv_scores_by_C"].values())
    assert res["cv_macro_f1_se"] == res["cv_se_by_C"][key] == pytest.approx(res["cv_macro_f1_std"] / np.sqrt(res["cv_folds"]))
    assert res["cv_macro_f1"] >= res["cv_best_macro_f1"] - res["cv_se_by_C"][f"{res['cv_best_C']:g}"]


def test_metrics_row_with_no_probability_on_the_present_classes_counts_as_uniform():
    """T3: a multi-class split missing some classes; one row puts all its probability on an absent
    class (a softmax that underflowed to 0 elsewhere). Renormalised over the present classes it
    was a row of zeros and roc_auc_score raised; it now ranks as uniform over them."""
    y = np.array([0, 1, 2, 0, 1, 2])  # classes 3 and 4 absent from this split
    proba = np.array([[0.8, 0.1, 0.1, 0, 0], [0.1, 0.7, 0.2, 0, 0], [0.2, 0.2, 0.6, 0, 0],
                      [0.5, 0.3, 0.1, 0.1, 0], [0.2, 0.5, 0.3, 0, 0], [0, 0, 0, 1.0, 0]])
    m = _metrics(y, proba.argmax(1), proba, 5)
    p = proba[:, :3] / np.array([[1.0], [1.0], [1.0], [0.9], [1.0], [np.inf]])  # renormalised by hand ...
    p[5] = 1 / 3  # ... and the row without mass on classes 0-2 uniform over them
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=[0, 1, 2]))
    # Two classes present: the binary AUROC of the renormalised pair, the empty row a tie at 0.5.
    two = _metrics(np.array([0, 1, 1]), np.array([0, 1, 3]), np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0], [0, 0, 0, 1.0]]), 4)
    assert two["auroc"] == pytest.approx(roc_auc_score([0, 1, 1], [0.1, 0.8, 0.5]))
