"""Feature rankings and k-sparse probes: train rows only, hand-checked scores, OvR multiclass, L1 entry order."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import saeprobe.ksparse as ksparse
from saeprobe.errors import DataError
from saeprobe.ksparse import RANKINGS, fit_ksparse, rank_features

PROBE = dict(Cs=[0.1, 1.0], cv_folds=3)


def _problem(seed=0, n=120, d=16, n_classes=3, sparse=True):
    """Non-negative features, a few informative ones; 80 train, 20 validation, 20 test rows."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    x = rng.exponential(1.0, (n, d)) * (rng.random((n, d)) < 0.3)
    for c in range(n_classes):
        x[:, 2 * c + 1] += 2.0 * (y == c) * rng.random(n)
    split = np.array(["train"] * 80 + ["validation"] * 20 + ["test"] * 20)
    return (sp.csr_matrix(x) if sparse else x), y, split


def _scramble(x, y, rows, seed=99, nan=False):
    """Copy of (x, y) with the rows ``rows`` replaced by large random values (and labels permuted)."""
    rng = np.random.default_rng(seed)
    dense = x.toarray() if sp.issparse(x) else x.copy()
    dense[rows] = rng.exponential(100.0, (rows.sum(), dense.shape[1]))
    if nan:
        dense[np.flatnonzero(rows)[0], 0] = np.nan
    y2 = y.copy()
    y2[rows] = rng.permutation(y2[rows])
    return (sp.csr_matrix(dense) if sp.issparse(x) else dense), y2


# The 6-document example. Labels: docs 0-2 positive (1), docs 3-5 negative (0).
HAND_X = np.array([
    # f0   f1   f2   f3   f4   f5
    [6.0, 0.5, 1.0, 0.0, 0.0, 3.0],
    [6.0, 0.5, 1.0, 0.0, 0.0, 3.0],
    [0.0, 0.5, 1.0, 0.0, 0.0, 3.0],
    [0.0, 0.0, 1.0, 0.0, 3.0, 0.0],
    [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0, 0.0, 1.0],
])
HAND_Y = np.array([1, 1, 1, 0, 0, 0])
# mean_diff = |mean(pos) - mean(neg)|:
#   f0 |4 - 0| = 4;  f1 |0.5 - 0| = 0.5;  f2 |1 - 1| = 0;  f3 0;  f4 |0 - 1| = 1;  f5 |3 - 1/3| = 8/3
#   -> f0 (4), f5 (2.67), f4 (1), f1 (0.5), f2 and f3 (0, tie: by id)
HAND_MEAN_DIFF = [0, 5, 4, 1, 2, 3]
# normalized: divide by the mean non-zero value on train (f0 6, f1 0.5, f2 1, f3 never active -> 0, f4 3, f5 10/4):
#   f0 4/6 = 0.667;  f1 0.5/0.5 = 1;  f2 0;  f3 0;  f4 1/3 = 0.333;  f5 (8/3)/(5/2) = 1.067
#   -> f5, f1, f0, f4, f2, f3: normalisation moves f1 from 4th to 2nd and f0 from 1st to 3rd
HAND_NORMALIZED = [5, 1, 0, 4, 2, 3]


@pytest.mark.parametrize("sparse", [True, False])
def test_mean_diff_rankings_match_the_hand_computed_example(sparse):
    x = sp.csr_matrix(HAND_X) if sparse else HAND_X
    train = np.ones(6, dtype=bool)
    md = rank_features(x, HAND_Y, train, "mean_diff")
    nmd = rank_features(x, HAND_Y, train, "normalized_mean_diff")
    assert md.dtype == np.int64 and md.tolist() == HAND_MEAN_DIFF
    assert nmd.dtype == np.int64 and nmd.tolist() == HAND_NORMALIZED
    # Swapping which class is called positive changes nothing (|difference|).
    assert rank_features(x, 1 - HAND_Y, train, "mean_diff").tolist() == HAND_MEAN_DIFF


def test_hand_example_with_extra_non_train_rows_ignores_them():
    # Two more documents marked not-train, with values that would reorder everything if read.
    x = np.vstack([HAND_X, [[0, 50, 0, 90, 0, 0], [0, 0, 70, 0, 0, 0]]])
    y = np.concatenate([HAND_Y, [1, 0]])
    train = np.array([True] * 6 + [False] * 2)
    assert rank_features(x, y, train, "mean_diff").tolist() == HAND_MEAN_DIFF
    assert rank_features(sp.csr_matrix(x), y, train, "normalized_mean_diff").tolist() == HAND_NORMALIZED


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("method", RANKINGS)
def test_ranking_never_reads_validation_or_test_rows(method, sparse):
    x, y, split = _problem(sparse=sparse)
    train = split == "train"
    ranking = rank_features(x, y, train, method, seed=1, n_classes=3)
    assert sorted(ranking.tolist()) == list(range(x.shape[1]))
    x2, y2 = _scramble(x, y, ~train)
    np.testing.assert_array_equal(rank_features(x2, y2, train, method, seed=1, n_classes=3), ranking)
    # The scramble matters: ranking on every row of the scrambled data gives another order ...
    assert rank_features(x2, y2, np.ones(len(y), dtype=bool), method, seed=1).tolist() != ranking.tolist()
    # ... and a NaN in a non-train row is never even looked at.
    x3, y3 = _scramble(x, y, ~train, nan=True)
    np.testing.assert_array_equal(rank_features(x3, y3, train, method, seed=1, n_classes=3), ranking)


@pytest.mark.parametrize("target", [0, 1, 2])
@pytest.mark.parametrize("method", RANKINGS)
def test_multiclass_one_vs_rest_ranks_a_single_class_feature_first(method, target):
    rng = np.random.default_rng(3)
    n, d = 150, 10
    y = np.arange(n) % 3
    x = rng.uniform(0, 0.3, (n, d)) * (rng.random((n, d)) < 0.5)
    # Feature 6 separates class `target` from the rest, and only it (equal, zero, on the two other classes):
    # OvR score 1.1 (normalised 1). A ranking comparing labels 1 and 0 only would score it 0 for target 2.
    x[:, 6] = np.where(y == target, 1.1, 0.0)
    # Feature 4: a weaker single-class feature of the next class, on 60% of its rows: OvR score 0.96 (normalised
    # 0.6). Scoring one fixed class against the rest (say the largest label's) would put it first for some target.
    x[:, 4] = np.where((y == (target + 1) % 3) & (np.arange(n) % 5 < 3), 1.6, 0.0)
    for xx in (x, sp.csr_matrix(x)):
        ranking = rank_features(xx, y, np.ones(n, dtype=bool), method, n_classes=3)
        assert ranking[0] == 6


@pytest.mark.parametrize("sparse", [False, True])
def test_l1_ranks_the_two_signal_features_first(sparse):
    rng = np.random.default_rng(5)
    n, d = 400, 20
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d))
    x[:, 3] += 1.2 * y
    x[:, 7] -= 1.0 * y
    if sparse:
        x = sp.csr_matrix(np.maximum(x, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", UserWarning)
        ranking = rank_features(x, y, np.ones(n, dtype=bool), "l1", seed=0)
    assert set(ranking[:2].tolist()) == {3, 7}
    assert sorted(ranking.tolist()) == list(range(d))


def test_l1_prefers_a_complementary_feature_to_a_noisy_copy():
    # Feature 1 is feature 0 plus noise (no information of its own); feature 2 carries an independent, weaker signal.
    # mean_diff ranks the copy second (its mean difference is feature 0's); along the L1 path feature 2 enters first.
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    f0 = 1.5 * y + rng.normal(size=n)
    x = np.column_stack([f0, f0 + rng.normal(0, 0.5, n), 1.0 * y + rng.normal(size=n), rng.normal(size=(n, 5))])
    train = np.ones(n, dtype=bool)
    assert set(rank_features(x, y, train, "mean_diff")[:2].tolist()) == {0, 1}
    assert set(rank_features(x, y, train, "l1")[:2].tolist()) == {0, 2}


def test_l1_ranks_by_entry_not_by_the_final_coefficient():
    # Feature 3 is a noisy average of features 1 and 2: the strongest single feature (it enters the path first),
    # yet redundant given 1 and 2, so its weight in the weakly regularised end of the path is the smallest.
    rng = np.random.default_rng(3)
    n = 600
    y = rng.integers(0, 2, n)
    b, c = y + rng.normal(size=n), y + rng.normal(size=n)
    x = np.column_stack([rng.normal(size=n), b, c, (b + c) / 2 + rng.normal(0, 0.3, n), rng.normal(size=(n, 3))])
    ranking = rank_features(x, y, np.ones(n, dtype=bool), "l1")
    assert ranking[0] == 3 and set(ranking[1:3].tolist()) == {1, 2}
    weights = np.abs(LogisticRegression(C=1e4, class_weight="balanced").fit(StandardScaler().fit_transform(x), y).coef_[0])
    assert weights[3] < min(weights[1], weights[2])


def test_l1_puts_features_that_never_enter_last_in_mean_diff_order(monkeypatch):
    rng = np.random.default_rng(8)
    n = 200
    y = np.arange(n) % 2
    strong = y * 2.0 + rng.normal(0, 0.3, n)
    weak = y * 0.6 + rng.normal(0, 1.0, n)
    # Columns 2 and 3 are constant on train (scaled to 0: they can never enter), mean_diff 0.
    x = np.column_stack([rng.normal(size=n), weak, np.ones(n), np.zeros(n), strong])
    train = np.ones(n, dtype=bool)
    ranking = rank_features(x, y, train, "l1")
    assert ranking[:2].tolist() == [4, 1] and ranking[-2:].tolist() == [2, 3]  # tie at mean_diff 0: by id
    # A one-step path just above l1_min_c: only the strongest feature enters; the rest follow mean_diff.
    monkeypatch.setattr(ksparse, "L1_N_CS", 1)
    monkeypatch.setattr(ksparse, "L1_DECADES", 0.05)
    md = rank_features(x, y, train, "mean_diff").tolist()
    assert md[0] == 4 and md[1:3] == [1, 0]
    assert rank_features(x, y, train, "l1").tolist() == md


def test_ties_are_stable_by_feature_id():
    x = np.tile([[1.0, 0.0, 1.0, 0.0, 1.0]], (6, 1)) * HAND_Y[:, None]
    for method in ("mean_diff", "normalized_mean_diff"):
        assert rank_features(x, HAND_Y, np.ones(6, dtype=bool), method).tolist() == [0, 2, 4, 1, 3]


@pytest.mark.parametrize("ranking", RANKINGS)
def test_fit_ksparse_caps_k_and_keeps_the_ranking_prefix(ranking):
    x, y, split = _problem()
    rows = fit_ksparse(x, y, split, ranking=ranking, ks=[1, 3, 50, 16, 100, 3], n_classes=3, probe=PROBE, seed=2)
    assert [r["k"] for r in rows] == [1, 3, 16]  # 50 and 100 capped at the width 16, duplicates dropped
    order = rank_features(x, y, split == "train", ranking, seed=2, n_classes=3)
    for r in rows:
        assert r["ranking"] == ranking
        assert len(r["features"]) == r["k"] == r["n_features"]
        assert r["features"] == order[: r["k"]].tolist() and all(type(i) is int for i in r["features"])
        assert {"C", "cv_macro_f1", "cv_scores_by_C", "test", "validation"} <= set(r)


def test_fit_ksparse_selection_and_c_ignore_test_rows():
    x, y, split = _problem(sparse=True)
    kw = dict(ranking="mean_diff", ks=[2, 5], n_classes=3, probe=PROBE, seed=4)
    rows = fit_ksparse(x, y, split, **kw)
    x2, y2 = _scramble(x, y, split == "test")
    rows2 = fit_ksparse(x2, y2, split, **kw)
    for a, b in zip(rows, rows2, strict=True):
        assert a["features"] == b["features"]
        for key in ("C", "cv_macro_f1", "cv_scores_by_C", "validation"):
            assert a[key] == b[key], key
    assert [a["test"] for a in rows] != [b["test"] for b in rows2]


def test_fit_ksparse_dense_and_extra_result_keys_pass_through(monkeypatch):
    x, y, split = _problem(sparse=False)
    calls = []

    def fake_fit_probe(xk, yk, sk, **kw):
        calls.append((xk.shape, kw))
        return {"C": 1.0, "n_features": xk.shape[1], "test": {"macro_f1": 0.5}, "predictions": [7, 8]}, None, None

    monkeypatch.setattr(ksparse, "fit_probe", fake_fit_probe)
    rows = fit_ksparse(x, y, split, ranking="normalized_mean_diff", ks=[4], n_classes=3, probe=PROBE, seed=9)
    assert rows[0]["predictions"] == [7, 8] and rows[0]["C"] == 1.0 and rows[0]["k"] == 4
    assert calls == [((120, 4), {"n_classes": 3, "seed": 9, "groups": None, **PROBE})]
    order = rank_features(x, y, split == "train", "normalized_mean_diff", n_classes=3)
    assert rows[0]["features"] == order[:4].tolist()


@pytest.mark.parametrize("ks", [[0], [3, -1], [], [2.5], [True]])
def test_fit_ksparse_rejects_bad_ks(ks):
    x, y, split = _problem()
    with pytest.raises(ValueError, match="k"):
        fit_ksparse(x, y, split, ranking="mean_diff", ks=ks, n_classes=3, probe=PROBE, seed=0)


def test_bad_input_raises_data_error_naming_what_was_expected():
    x, y, split = _problem()
    train = split == "train"
    with pytest.raises(ValueError, match="unknown ranking method 'f_test'"):
        rank_features(x, y, train, "f_test")
    with pytest.raises(DataError, match=r"labels must be a \(n_docs,\) = \(120,\) integer array"):
        rank_features(x, y[:-1], train, "mean_diff")
    with pytest.raises(DataError, match="integer array"):
        rank_features(x, y.astype(float), train, "mean_diff")
    with pytest.raises(DataError, match="train_mask must be a .* bool array"):
        rank_features(x, y, train.astype(int), "mean_diff")
    with pytest.raises(DataError, match="2-D"):
        rank_features(np.ones(120), y, train, "mean_diff")
    with pytest.raises(DataError, match="train labels must be in 0..1"):
        rank_features(x, y, train, "mean_diff", n_classes=2)
    with pytest.raises(DataError, match="at least two classes"):
        rank_features(x, np.zeros_like(y), train, "l1")
    bad = x.toarray()
    bad[0, 0] = np.inf
    with pytest.raises(DataError, match="NaN or infinite"):
        rank_features(bad, y, train, "mean_diff")
    with pytest.raises(DataError, match="needs test rows"):
        fit_ksparse(x, y, np.where(split == "test", "validation", split), ranking="mean_diff", ks=[1], n_classes=3,
                    probe=PROBE, seed=0)
    lonely = y.copy()
    lonely[train] = 0
    lonely[np.flatnonzero(train)[0]] = 1
    with pytest.raises(DataError, match="single train example"):
        fit_ksparse(x, lonely, split, ranking="l1", ks=[1], n_classes=3, probe=PROBE, seed=0)
