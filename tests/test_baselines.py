"""Baselines: hyper-parameters chosen on train-split CV only; every baseline learns; seeded runs repeat exactly."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.tree import DecisionTreeClassifier

from saeprobe import baselines
from saeprobe.baselines import BASELINES, ActiveColumns, QuantileBins, fit_baseline, select_and_fit
from saeprobe.errors import ConfigError, DataError

NAMES = list(BASELINES)
# 180 train, 40 validation, 60 test and 20 unused rows (the unused ones in the middle).
SPLIT = np.array(["train"] * 180 + ["unused"] * 20 + ["validation"] * 40 + ["test"] * 60)


def _dense(seed=0, n=300, d=20, k=3):
    """Classes separated along the first k dimensions (axis-aligned: easy for trees and linear models alike)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % k)
    return rng.normal(size=(n, d)) + 2.5 * np.eye(k, d)[y], y


def _sparse(seed=0, n=300, d=2048, k=3, noise=16):
    """SAE-like CSR: non-negative, ~noise+8 non-zeros a row; class c turns on columns 10c..10c+9 (each w.p. 0.8)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % k)
    x = sp.lil_matrix((n, d))
    for i in range(n):
        on = 10 * y[i] + np.flatnonzero(rng.random(10) < 0.8)
        x[i, on] = rng.uniform(1, 2, len(on))
        x[i, rng.choice(np.arange(10 * k, d), noise, replace=False)] = rng.exponential(size=noise)
    return x.tocsr(), y


def _scrambled(x, y, rows, seed=99):
    """Copies of x, y whose ``rows`` have random features (same kind: dense or non-negative CSR) and permuted labels."""
    rng = np.random.default_rng(seed)
    dense = x.toarray() if sp.issparse(x) else x.copy()
    dense[rows] = rng.normal(size=(rows.sum(), dense.shape[1])) * 10
    y2 = y.copy()
    y2[rows] = rng.permutation(y2[rows])
    return (sp.csr_matrix(np.maximum(dense, 0)) if sp.issparse(x) else dense), y2


def _same_predictions(a, b):
    assert a.keys() == b.keys()
    for part in a:
        np.testing.assert_array_equal(a[part][0], b[part][0])
        np.testing.assert_array_equal(a[part][1], b[part][1])


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("name", NAMES)
def test_selection_never_touches_test_or_unused_rows(name, sparse):
    x, y = _sparse() if sparse else _dense()
    kw = dict(n_classes=3, seed=3, cv_folds=3)
    res = fit_baseline(name, x, y, SPLIT, **kw)
    # Scramble every test and unused row (features and labels): only the test scores may change.
    x2, y2 = _scrambled(x, y, (SPLIT == "test") | (SPLIT == "unused"))
    res2 = fit_baseline(name, x2, y2, SPLIT, **kw)
    for key in ("params", "C", "cv_macro_f1", "cv_macro_f1_std", "cv_scores", "cv_folds", "n_train", "fit_info", "validation"):
        assert res[key] == res2[key], key
    np.testing.assert_array_equal(res["predictions"]["validation"][1], res2["predictions"]["validation"][1])
    assert res["test"] != res2["test"]
    assert res["n_train"] == 180 and res["test"]["n"] == 60 and res["validation"]["n"] == 40


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("name", NAMES)
def test_every_baseline_learns_and_reports_its_predictions(name, sparse):
    x, y = _sparse(seed=1) if sparse else _dense(seed=1)
    res = fit_baseline(name, x, y, SPLIT, n_classes=3, seed=0)
    test = SPLIT == "test"
    majority = np.bincount(y[test]).max() / test.sum()
    assert res["test"]["accuracy"] > majority + 0.3, res["test"]
    assert res["test"]["macro_f1"] > 0.6 and res["test"]["auroc"] > 0.8
    assert res["cv_macro_f1"] > 0.6 and 0 <= res["cv_macro_f1_std"] < 0.3
    assert res["baseline"] == name and res["cv_folds"] == 5 and res["n_features"] == x.shape[1]
    assert set(res["params"]) == set(BASELINES[name].grid)
    # pca_logreg's n_components 64 and 256 exceed the 20 dense features (capped to 19, deduplicated).
    candidates = {"pca_logreg": 6 if sparse else 4, "knn": 6, "hist_gradient_boosting": 1, "mlp": 2, "decision_tree": 2}
    assert len(res["cv_scores"]) == candidates[name]
    # The one-standard-error rule: the reported CV score is the chosen candidate's; it is the simplest in the band.
    chosen = next(c for c in res["cv_scores"] if c["params"] == res["params"])
    assert res["cv_macro_f1"] == chosen["mean"] and res["cv_macro_f1_se"] == chosen["se"] and chosen["in_band"]
    assert res["cv_best_macro_f1"] == max(c["mean"] for c in res["cv_scores"]) and res["selection_rule"] == "one_se"
    assert res["cv_band_size"] == sum(c["in_band"] for c in res["cv_scores"]) >= 1
    assert all(baselines.complexity_key(name, c["params"]) >= baselines.complexity_key(name, res["params"])
               for c in res["cv_scores"] if c["in_band"])
    assert (res["C"] is None) == (name != "pca_logreg")
    assert set(res["predictions"]) == {"validation", "test"}
    for part in ("validation", "test"):
        pred, proba = res["predictions"][part]
        n = int((SPLIT == part).sum())
        assert pred.shape == (n,) and pred.dtype == np.int64 and proba.shape == (n, 3)
        np.testing.assert_allclose(proba.sum(1), 1.0)
        np.testing.assert_array_equal(pred, proba.argmax(1))
        assert res[part]["accuracy"] == pytest.approx(np.mean(pred == y[SPLIT == part]))
        assert np.array(res[part]["confusion"]).sum() == n


def test_no_validation_split_means_no_validation_scores():
    x, y = _dense()
    split = np.where(SPLIT == "validation", "train", SPLIT)
    res = fit_baseline("knn", x, y, split, n_classes=3)
    assert "validation" not in res and set(res["predictions"]) == {"test"} and res["n_train"] == 220


@pytest.mark.parametrize("name", NAMES)
def test_seeded_runs_are_identical(name):
    x, y = _sparse(seed=2) if name in ("pca_logreg", "hist_gradient_boosting") else _dense(seed=2)
    a = fit_baseline(name, x, y, SPLIT, n_classes=3, seed=7, cv_folds=3)
    b = fit_baseline(name, x, y, SPLIT, n_classes=3, seed=7, cv_folds=3)
    _same_predictions(a.pop("predictions"), b.pop("predictions"))
    assert a == b


def test_decision_tree_is_depth_5_on_wide_csr():
    # Noisy labels: an unconstrained tree grows far deeper than 5 on this problem.
    x, y = _sparse(seed=3, n=600, d=65536, noise=32)
    flip = np.random.default_rng(0).random(len(y)) < 0.2
    y = np.where(flip, (y + 1) % 3, y)
    train = np.zeros(len(y), bool)
    train[:450] = True
    assert DecisionTreeClassifier(random_state=0).fit(x[train], y[train]).get_depth() > 5
    model, info = select_and_fit("decision_tree", x, y, train, n_classes=3, seed=0)
    tree = model.named_steps["tree"]
    assert tree.get_depth() <= 5 and info["fit_info"]["depth"] == tree.get_depth()
    assert info["fit_info"]["n_leaves"] <= 32 and info["n_features"] == 65536
    assert (model.predict(x[~train]) == y[~train]).mean() > 0.6


def test_mlp_keeps_the_most_active_columns_of_wide_csr():
    x, y = _sparse(seed=4, d=8192, noise=32)
    x = sp.hstack([x, sp.csr_matrix(np.ones((300, 5000)))]).tocsr()  # 5,000 columns active everywhere
    train = SPLIT == "train"
    model, info = select_and_fit("mlp", x, y, train, n_classes=3, seed=0, cv_folds=3)
    kept = model.named_steps["select"].columns_
    assert info["fit_info"]["kept_columns"] == len(kept) == 4096 and np.all(kept >= 8192)
    assert sp.issparse(model.named_steps["select"].transform(x[:5]))


def test_parallel_search_gives_the_same_result():
    x, y = _dense()
    a = fit_baseline("decision_tree", x, y, SPLIT, n_classes=3, n_jobs=1)
    b = fit_baseline("decision_tree", x, y, SPLIT, n_classes=3, n_jobs=2)
    _same_predictions(a.pop("predictions"), b.pop("predictions"))
    assert a == b


def test_grid_override_and_caps():
    x, y = _dense()
    res = fit_baseline("knn", x, y, SPLIT, n_classes=3, grid={"n_neighbors": [3, 1000]})
    # 5 folds of 180 train rows: the smallest fold-train part has 144 rows.
    assert [c["params"]["n_neighbors"] for c in res["cv_scores"]] == [3, 144]
    res = fit_baseline("pca_logreg", x, y, SPLIT, n_classes=3)
    assert sorted({c["params"]["n_components"] for c in res["cv_scores"]}) == [16, 19]  # 64 and 256 > 20 features
    res = fit_baseline("mlp", x, y, SPLIT, n_classes=3, grid={"alpha": [0.01], "hidden_layer_sizes": [[16]]})
    assert res["params"] == {"alpha": 0.01, "hidden_layer_sizes": [16]}
    with pytest.raises(ConfigError, match="grid of baseline"):
        fit_baseline("knn", x, y, SPLIT, n_classes=3, grid={"C": [1.0]})
    with pytest.raises(ConfigError, match="grid of baseline"):
        fit_baseline("knn", x, y, SPLIT, n_classes=3, grid={"n_neighbors": []})
    with pytest.raises(ConfigError, match="unknown baseline"):
        fit_baseline("xgboost", x, y, SPLIT, n_classes=3)


@pytest.mark.parametrize("name", ["mlp", "hist_gradient_boosting"])
def test_small_train_splits_fit_without_early_stopping(name):
    # 2 train rows of class 2: 2-fold CV, each fold-train part holds one; a stratified stopping set is impossible.
    x, y = _dense(n=120)
    split = np.array(["train"] * 60 + ["test"] * 60)
    y[:60] = np.arange(60) % 2
    y[[0, 1]] = 2
    res = fit_baseline(name, x, y, split, n_classes=3)
    assert res["early_stopping"] is False and res["cv_folds"] == 2
    assert fit_baseline(name, *_dense(), SPLIT, n_classes=3)["early_stopping"] is True


def test_bad_input_raises_data_error():
    x, y = _dense()
    cases = [
        (x, y, np.where(SPLIT == "train", "unused", SPLIT), "need train and test rows"),
        (x, y, np.where(SPLIT == "test", "validation", SPLIT), "need train and test rows"),
        (x, np.where(SPLIT == "train", 0, y), SPLIT, "single class"),
        (x, np.where(np.arange(300) == 0, 2, np.where(SPLIT == "train", y % 2, y)), SPLIT, "single train example"),
        (x, np.where(SPLIT == "train", y % 2, y), SPLIT, r"classes \[2\] have no train rows"),
        (x, np.where(np.arange(300) == 5, 3, y), SPLIT, r"labels must be integers in \[0, 3\)"),
        (x, y.astype(float), SPLIT, "labels must be integers"),
        (np.where(np.arange(300)[:, None] == 250, np.nan, x), y, SPLIT, "NaN or infinite"),
        (x[:-1], y, SPLIT, "one row per document"),
    ]
    for xi, yi, si, message in cases:
        with pytest.raises(DataError, match=message):
            fit_baseline("decision_tree", xi, yi, si, n_classes=3)
    with pytest.raises(DataError, match="at least 2"):
        fit_baseline("decision_tree", x, y % 1, SPLIT, n_classes=1)
    with pytest.raises(DataError, match="NaN or infinite"):
        select_and_fit("decision_tree", np.where(np.arange(300)[:, None] == 3, np.inf, x), y, SPLIT == "train", n_classes=3)
    # Unused rows are not read: unlabelled (-1) and NaN there are fine.
    unused = (SPLIT == "unused")[:, None]
    res = fit_baseline("decision_tree", np.where(unused, np.nan, x), np.where(unused[:, 0], -1, y), SPLIT, n_classes=3)
    assert res == {**fit_baseline("decision_tree", x, y, SPLIT, n_classes=3), "predictions": res["predictions"]}


def test_active_columns_and_quantile_bins():
    x = sp.csr_matrix(np.array([[1, 0, 2, 0], [1, 0, 0, 0], [1, 3, 5, 0]], dtype=float))
    cols = ActiveColumns(min_rows=2, max_columns=10).fit(x)
    np.testing.assert_array_equal(cols.columns_, [0, 2])
    np.testing.assert_array_equal(cols.transform(x), [[1, 2], [1, 0], [1, 5]])
    np.testing.assert_array_equal(ActiveColumns(min_rows=1, max_columns=1).fit(x).columns_, [0])
    np.testing.assert_array_equal(ActiveColumns(min_rows=9).fit(x).columns_, [0])  # never empty
    z = np.random.default_rng(0).normal(size=(1000, 3))
    bins = QuantileBins(max_bins=16).fit(z)
    codes = bins.transform(z)
    for j in range(3):
        assert len(np.unique(codes[:, j])) == 16
        order = np.argsort(z[:, j])
        assert np.all(np.diff(codes[order, j]) >= 0)  # monotone: the splits of the raw values


def test_grouped_cv_keeps_groups_whole():
    """With groups (group_column) the CV folds are StratifiedGroupKFold: the fold count follows the
    train groups, and a class found in a single train group cannot be cross-validated."""
    x, y = _dense()
    groups = np.arange(len(y)) % 6  # 6 groups, every class in several of them
    result = fit_baseline("decision_tree", x, y, SPLIT, n_classes=3, seed=0, cv_folds=5, groups=groups)
    assert result["cv_folds"] == 5
    few = np.where(np.arange(len(y)) % 2 == 0, 0, 1)  # 2 train groups: at most 2 folds
    assert fit_baseline("knn", x, y, SPLIT, n_classes=3, seed=0, cv_folds=5, groups=few)["cv_folds"] == 2
    lonely = np.where(y == 0, 7, groups)  # class 0 lives in one group only
    with pytest.raises(DataError, match="single train group"):
        fit_baseline("knn", x, y, SPLIT, n_classes=3, seed=0, groups=lonely)


def _cv_results(name, candidates, folds=5):
    """A GridSearchCV ``cv_results_`` of baseline ``name``: ``candidates`` = [(pipeline params, mean, std)]."""
    res = {"params": [p for p, _, _ in candidates], "mean_test_score": np.array([m for _, m, _ in candidates]),
           "std_test_score": np.array([s for _, _, s in candidates])}
    for i in range(folds):
        res[f"split{i}_test_score"] = np.zeros(len(candidates))
    return res


def test_refit_callable_picks_the_simplest_candidate_within_one_standard_error():
    """The argmax (the first best mean) is not chosen when a simpler candidate is within one SE of it."""
    # knn: MORE neighbours is simpler. Best 0.80 (se 0.02/sqrt(4) = 0.01): band = means >= 0.79.
    knn = _cv_results("knn", [({"knn__n_neighbors": 5, "knn__weights": "uniform"}, 0.80, 0.02),
                              ({"knn__n_neighbors": 15, "knn__weights": "distance"}, 0.795, 0.01),
                              ({"knn__n_neighbors": 15, "knn__weights": "uniform"}, 0.792, 0.01),
                              ({"knn__n_neighbors": 45, "knn__weights": "uniform"}, 0.70, 0.01)], folds=4)
    assert int(np.argmax(knn["mean_test_score"])) == 0
    assert baselines.one_se_refit("knn")(knn) == 2  # 15 neighbours, uniform: within the band, simpler than 5 and than 'distance'
    # pca_logreg: fewer components first, then smaller C.
    pca = _cv_results("pca_logreg", [({"reduce__n_components": 64, "logreg__C": 1.0}, 0.90, 0.05),
                                     ({"reduce__n_components": 16, "logreg__C": 1.0}, 0.89, 0.05),
                                     ({"reduce__n_components": 16, "logreg__C": 0.01}, 0.88, 0.05),
                                     ({"reduce__n_components": 256, "logreg__C": 0.01}, 0.95, 0.0)])
    assert baselines.one_se_refit("pca_logreg")(pca) == 3  # the best has se 0: nothing else in its band
    pca["std_test_score"][3] = 0.2  # se 0.089: band >= 0.861
    assert baselines.one_se_refit("pca_logreg")(pca) == 2
    # The choice does not depend on the order of the candidates.
    order = [3, 1, 0, 2]
    shuffled = {k: (np.asarray(v)[order] if isinstance(v, np.ndarray) else [v[i] for i in order]) for k, v in pca.items()}
    assert order[baselines.one_se_refit("pca_logreg")(shuffled)] == 2
    # mlp: fewer hidden units before a larger alpha; decision_tree: larger leaves; hgb: fewer leaves.
    mlp = _cv_results("mlp", [({"mlp__hidden_layer_sizes": (128,), "mlp__alpha": 1.0}, 0.80, 0.05),
                              ({"mlp__hidden_layer_sizes": (16,), "mlp__alpha": 1e-4}, 0.79, 0.05)])
    assert baselines.one_se_refit("mlp")(mlp) == 1
    tree = _cv_results("decision_tree", [({"tree__min_samples_leaf": 1}, 0.7, 0.05),
                                         ({"tree__min_samples_leaf": 20}, 0.69, 0.05)])
    assert baselines.one_se_refit("decision_tree")(tree) == 1
    hgb = _cv_results("hist_gradient_boosting", [({"hgb__max_leaf_nodes": 31}, 0.7, 0.05),
                                                 ({"hgb__max_leaf_nodes": None}, 0.71, 0.05),
                                                 ({"hgb__max_leaf_nodes": 7}, 0.69, 0.05)])
    assert baselines.one_se_refit("hist_gradient_boosting")(hgb) == 2


def test_every_grid_parameter_has_a_complexity_order():
    for name, spec in BASELINES.items():
        assert set(spec.complexity) == set(spec.keys), name
    with pytest.raises(KeyError, match="no complexity order"):
        baselines.complexity_key("knn", {"C": 1.0})


def test_fit_baseline_chooses_by_the_one_se_rule():
    """Through the entry point: knn on an easy problem, where several neighbour counts score within one
    SE of the best. The chosen candidate is the simplest of the band, not the argmax."""
    x, y = _dense(seed=2)
    res = fit_baseline("knn", x, y, SPLIT, n_classes=3, seed=0, grid={"n_neighbors": [1, 5, 15, 45]})
    band = [c for c in res["cv_scores"] if c["in_band"]]
    best = max(c["mean"] for c in res["cv_scores"])
    best_se = max(c["se"] for c in res["cv_scores"] if c["mean"] == best)
    assert [c["params"] for c in band] == [c["params"] for c in res["cv_scores"] if c["mean"] >= best - best_se - 1e-12]
    assert res["params"] == max(band, key=lambda c: c["params"]["n_neighbors"])["params"]  # more neighbours = simpler
    assert res["params"] != res["cv_best_params"]  # the argmax would have chosen another k
    assert res["cv_macro_f1"] == next(c["mean"] for c in band if c["params"] == res["params"]) < res["cv_best_macro_f1"]


def test_hist_gradient_boosting_with_classes_absent_from_test():
    """T3: 12 classes, only 3 of them in test. Boosting with a large learning rate (as a widened grid
    may ask for) drives the softmax of every class but the predicted one to exactly 0, so a test row
    predicted as an absent class has no probability on any present class; probes._metrics
    renormalised it to a row of zeros and roc_auc_score raised "Target scores need to be
    probabilities for multiclass roc_auc" (the crash on TREC's label_fine). It now counts as
    uniform over the present classes and the job finishes with an AUROC."""
    rng = np.random.default_rng(1)
    k = 12
    y_train = np.repeat(np.arange(k), np.r_[[30, 30, 30], np.full(k - 3, 3)])
    y_test = rng.integers(0, 3, 30)
    y = np.concatenate([y_train, y_test])
    centers = rng.normal(size=(k, 6)) * 1.5
    x = centers[y] + rng.normal(size=(len(y), 6))
    split = np.array(["train"] * len(y_train) + ["test"] * len(y_test))
    res = fit_baseline("hist_gradient_boosting", x, y, split, n_classes=k, seed=0, cv_folds=3,
                       grid={"learning_rate": [100.0], "max_iter": [5]})
    _, proba = res["predictions"]["test"]
    no_mass = proba[:, :3].sum(1) == 0
    assert no_mass.any()  # the case of the crash is there
    assert res["test"]["missing_classes"] == list(range(3, k)) and 0.0 <= res["test"]["auroc"] <= 1.0
