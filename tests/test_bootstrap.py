"""Bootstrap uncertainty on classifier scores (saeprobe.bootstrap).

The vectorised scores are checked against scikit-learn (and saeprobe.probes._metrics) resample by
resample; the intervals and the paired test against cases whose answer is known (a perfect
classifier, chance guessing, a probe compared with itself, a clearly better probe).

Timing (printed, not asserted): ``PYTHONPATH=src python -m saeprobe.bootstrap`` times
score_intervals for n=1500, K=6, B=1000.
"""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from saeprobe import bootstrap as bs
from saeprobe.errors import DataError
from saeprobe.probes import _metrics


def _probe(n, k, seed, *, skill=1.0, eighths=False):
    """Labels, a noisy probe's probabilities and its argmax predictions. ``eighths``: probabilities are
    multiples of 1/8 (many tied scores; rows sum to exactly 1.0, so renormalising changes nothing)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + skill * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if eighths:
        proba = np.array([rng.multinomial(8, p) for p in proba]) / 8
    return y, proba.argmax(1), proba


# ---------------------------------------------------------------------------------------------
# Vectorised scores = scikit-learn's, resample by resample


@pytest.mark.parametrize(("n", "k", "eighths"), [(120, 2, False), (120, 2, True), (200, 4, True), (300, 6, False)])
def test_each_resample_matches_sklearn(n, k, eighths):
    y, pred, proba = _probe(n, k, seed=k, eighths=eighths)
    assert len(np.unique(proba[:, -1])) < n or not eighths  # the eighths cases do have tied scores
    idx = bs.stratified_resamples(y, 8, seed=3)
    got = bs.resampled_scores(y, pred, proba, idx, k)
    assert all(got[key].shape == (8,) and got[key].dtype == np.float64 for key in bs.METRICS)
    for b, rows in enumerate(idx):
        yb, pb, qb = y[rows], pred[rows], proba[rows]
        assert got["macro_f1"][b] == pytest.approx(f1_score(yb, pb, average="macro", labels=range(k), zero_division=0),
                                                   abs=1e-12)
        assert got["accuracy"][b] == pytest.approx(accuracy_score(yb, pb), abs=1e-12)
        ref = roc_auc_score(yb, qb[:, 1]) if k == 2 else roc_auc_score(yb, qb, multi_class="ovr", average="macro")
        assert got["auroc"][b] == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("absent", [[3], [1, 3]])
def test_missing_classes_match_probes_metrics(absent):
    """Four-class dataset, a class (or two) absent from the test split: macro F1 still averages over 4
    classes; AUROC is one-vs-rest over the classes present (binary when two are), as probes._metrics."""
    y, pred, proba = _probe(240, 4, seed=5, eighths=True)
    keep = ~np.isin(y, absent)
    y, proba = y[keep], proba[keep]
    pred = np.where(np.isin(np.arange(4), absent), -1, proba).argmax(1)  # absent classes never predicted either
    assert not np.isin(pred, absent).any()
    idx = bs.stratified_resamples(y, 6, seed=0)
    got = bs.resampled_scores(y, pred, proba, np.vstack([np.arange(len(y)), idx]), 4)
    for b, rows in enumerate([np.arange(len(y)), *idx]):
        ref = _metrics(y[rows], pred[rows], proba[rows], 4)
        for key in bs.METRICS:
            assert got[key][b] == pytest.approx(ref[key], abs=1e-12), key


def test_index_rows_of_another_length_score_that_selection():
    """idx need not come from stratified_resamples: any (B, m) rows holding the same classes in each row."""
    y, pred, proba = _probe(90, 3, seed=8)
    rng = np.random.default_rng(0)
    idx = np.array([rng.choice(90, size=40, replace=bool(b % 2)) for b in range(6)])
    assert all(set(y[row]) == {0, 1, 2} for row in idx)
    got = bs.resampled_scores(y, pred, proba, idx, 3)
    for b, rows in enumerate(idx):
        ref = _metrics(y[rows], pred[rows], proba[rows], 3)
        for key in bs.METRICS:
            assert got[key][b] == pytest.approx(ref[key], abs=1e-12), key


def test_single_class_has_no_auroc():
    y = np.zeros(30, dtype=int)
    pred = np.arange(30) % 2
    proba = np.eye(2)[pred]
    got = bs.resampled_scores(y, pred, proba, bs.stratified_resamples(y, 5, 0), 2)
    assert got["auroc"] is None
    assert got["accuracy"] == pytest.approx(np.mean(pred[bs.stratified_resamples(y, 5, 0)] == 0, axis=1))
    out = bs.score_intervals(y, pred, proba, 2, n_resamples=20)
    assert out["auroc"] is None and out["macro_f1"][0] <= out["macro_f1"][1]
    with pytest.raises(DataError, match="AUROC needs at least two classes"):
        bs.paired_difference(y, (pred, proba), (pred, proba), 2, metric="auroc", n_resamples=10)


def test_blocks_of_resamples_give_the_same_scores(monkeypatch):
    y, pred, proba = _probe(150, 3, seed=1)
    idx = bs.stratified_resamples(y, 40, seed=2)
    whole = bs.resampled_scores(y, pred, proba, idx, 3)
    monkeypatch.setattr(bs, "_BLOCK_CELLS", 150 * 7)  # blocks of 7 resamples, the last one short
    blocks = bs.resampled_scores(y, pred, proba, idx, 3)
    for key in bs.METRICS:
        np.testing.assert_array_equal(whole[key], blocks[key])


@pytest.mark.parametrize("block_cells", [None, 6])  # one block; one resample per block
def test_resamples_with_different_classes_are_refused(monkeypatch, block_cells):
    if block_cells:
        monkeypatch.setattr(bs, "_BLOCK_CELLS", block_cells)
    y = np.array([0, 0, 0, 1, 1, 2])
    pred, proba = y.copy(), np.eye(3)[y]
    idx = np.array([[0, 1, 3, 4, 5, 5], [0, 0, 1, 3, 4, 4]])  # class 2 missing from the second resample
    with pytest.raises(DataError, match="same classes"):
        bs.resampled_scores(y, pred, proba, idx, 3)


# ---------------------------------------------------------------------------------------------
# Stratified resamples


def test_resamples_keep_class_counts_and_depend_only_on_seed():
    y = np.array([2] * 7 + [0] * 30 + [5] * 13)  # unsorted, non-contiguous labels
    idx = bs.stratified_resamples(y, 50, seed=4)
    assert idx.shape == (50, len(y)) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < len(y)
    np.testing.assert_array_equal(y[idx], np.broadcast_to(y, idx.shape))  # column j is a row of class y[j]
    for row in idx:
        np.testing.assert_array_equal(np.bincount(y[row], minlength=6), np.bincount(y, minlength=6))
    # With replacement: rows repeat within a resample, and every row of a class is drawn somewhere.
    assert all(len(np.unique(row)) < len(y) for row in idx)
    assert set(np.unique(idx)) == set(range(len(y)))
    np.testing.assert_array_equal(idx, bs.stratified_resamples(y, 50, seed=4))
    assert not np.array_equal(idx, bs.stratified_resamples(y, 50, seed=5))
    np.testing.assert_array_equal(idx[:20], bs.stratified_resamples(y, 20, seed=4))  # more resamples extend, not reshuffle


def test_resamples_are_uniform_within_each_class():
    y = np.array([0] * 4 + [1] * 6)
    idx = bs.stratified_resamples(y, 20000, seed=0)
    freq = np.bincount(idx.ravel(), minlength=10) / idx.size
    np.testing.assert_allclose(freq, 0.1, atol=0.003)  # each row drawn 1/10 of the time (sd ~ 0.0007)



def _one_draw(y, n_resamples, seed):
    """The resamples as drawn before blocks (issue 21 T10): all B x n uniforms in one call."""
    _, cls = np.unique(y, return_inverse=True)
    counts = np.bincount(cls)
    order, first, size = np.argsort(cls, kind="stable"), (np.cumsum(counts) - counts)[cls], counts[cls]
    u = np.random.default_rng([seed, bs.SALT]).random((n_resamples, len(y))) * size
    return order[np.minimum(u.astype(np.int64), size - 1) + first]


@pytest.mark.parametrize("block", [None, 1, 7, 50, 1000])
def test_resample_blocks_are_the_resamples_whatever_the_block_size(block):
    """Drawn in blocks, the resamples are those of one draw: results do not change (T10)."""
    y = np.array([2] * 7 + [0] * 30 + [5] * 13)
    blocks = list(bs.resample_blocks(y, 50, seed=4, block=block))
    assert all(len(b) == (block or 50) for b in blocks[:-1]) and sum(map(len, blocks)) == 50
    np.testing.assert_array_equal(np.concatenate(blocks), _one_draw(y, 50, 4))
    np.testing.assert_array_equal(bs.stratified_resamples(y, 50, seed=4), _one_draw(y, 50, 4))


def test_intervals_and_paired_differences_do_not_depend_on_the_block_size(monkeypatch):
    y, pred, proba = _probe(300, 3, seed=8)
    _, pred_b, proba_b = _probe(300, 3, seed=9)
    idx = _one_draw(y, 400, 3)  # what the intervals were computed from before blocks
    ref = bs.resampled_scores(y, pred, proba, idx, 3)
    d_ref = ref["macro_f1"] - bs.resampled_scores(y, pred_b, proba_b, idx, 3)["macro_f1"]
    for cells in (300 * 7, 300 * 400, 1 << 22):  # blocks of 7 resamples (the last one short), one block
        monkeypatch.setattr(bs, "_BLOCK_CELLS", cells)
        ci = bs.score_intervals(y, pred, proba, 3, n_resamples=400, seed=3)
        assert all(ci[key] == list(bs.interval(ref[key])) for key in bs.METRICS)
        pd = bs.paired_difference(y, (pred, proba), (pred_b, proba_b), 3, n_resamples=400, seed=3)
        assert pd["ci"] == list(bs.interval(d_ref))


def test_bootstrap_memory_does_not_grow_with_the_resamples(monkeypatch):
    """T10: score_intervals and paired_difference hold one block of resamples at a time, never all
    B x n indices (8 B x n bytes; 3.6 GB at B = 100,000 and n = 1,600 before)."""
    import tracemalloc

    monkeypatch.setattr(bs, "_BLOCK_CELLS", 1 << 14)
    y, pred, proba = _probe(400, 3, seed=10)
    peaks = {}
    for b in (500, 8000):
        tracemalloc.start()
        bs.score_intervals(y, pred, proba, 3, n_resamples=b, seed=0)
        bs.paired_difference(y, (pred, proba), (pred, proba), 3, n_resamples=b, seed=0)
        peaks[b] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    whole = 8 * 8000 * len(y)  # one (B, n) int64 index array: 25.6 MB
    assert peaks[8000] < whole / 8
    assert peaks[8000] < peaks[500] + 16 * 8 * 8000  # grows by some (B,) float64 score arrays, not by B x n

def test_accuracy_interval_has_the_binomial_width():
    """A stratified bootstrap of accuracy at 80% per class has sd sqrt(p(1-p)/n): resampling is done
    with replacement and at full size."""
    n, p = 1000, 0.8
    y = np.arange(n) % 2
    pred = np.where(np.arange(n) % 10 < 8, y, 1 - y)  # 80% right in each class
    proba = np.eye(2)[pred]
    lo, hi = bs.score_intervals(y, pred, proba, 2, n_resamples=2000, seed=1)["accuracy"]
    expected = 2 * 1.96 * np.sqrt(p * (1 - p) / n)
    assert hi - lo == pytest.approx(expected, rel=0.1)
    assert lo < p < hi


# ---------------------------------------------------------------------------------------------
# Intervals


def test_perfect_classifier_has_unit_intervals():
    y, _, _ = _probe(300, 3, seed=2)
    out = bs.score_intervals(y, y, np.eye(3)[y], 3, n_resamples=200, seed=7, level=0.9)
    assert out == {"macro_f1": [1.0, 1.0], "accuracy": [1.0, 1.0], "auroc": [1.0, 1.0], "n_resamples": 200,
                   "level": 0.9, "method": "stratified percentile bootstrap"}


def test_random_guessing_intervals_contain_chance():
    rng = np.random.default_rng(11)
    y = np.repeat([0, 1], 200)
    proba = rng.random(400)
    proba = np.column_stack([1 - proba, proba])
    pred = rng.integers(0, 2, 400)  # independent of y and of proba
    out = bs.score_intervals(y, pred, proba, 2, n_resamples=1000, seed=0)
    assert out["macro_f1"][0] < 0.5 < out["macro_f1"][1]
    assert out["auroc"][0] < 0.5 < out["auroc"][1]
    assert out["accuracy"][0] < 0.5 < out["accuracy"][1]
    assert 0.05 < out["auroc"][1] - out["auroc"][0] < 0.15  # not degenerate: sd of AUROC at 200+200 is ~0.029


def test_interval_is_the_percentile_interval():
    values = np.random.default_rng(0).normal(size=1000)
    assert bs.interval(values, 0.9) == pytest.approx(tuple(np.percentile(values, [5, 95])))
    assert bs.interval(np.full(10, 0.3)) == (0.3, 0.3)
    lo, hi = bs.interval(values)
    assert lo < bs.interval(values, 0.5)[0] < bs.interval(values, 0.5)[1] < hi


# ---------------------------------------------------------------------------------------------
# Paired comparisons


@pytest.mark.parametrize("metric", bs.METRICS)
def test_probe_against_itself_is_an_exact_tie(metric):
    y, pred, proba = _probe(400, 4, seed=3, eighths=True)
    out = bs.paired_difference(y, (pred, proba), (pred.copy(), proba.copy()), 4, metric=metric, n_resamples=300)
    assert out == {"metric": metric, "difference": 0.0, "ci": [0.0, 0.0], "p_value": 1.0, "verdict": "tie"}


@pytest.mark.parametrize("metric", bs.METRICS)
def test_better_probe_wins_and_loses_when_swapped(metric):
    y, pred_good, proba_good = _probe(300, 3, seed=4, skill=2.5)
    rng = np.random.default_rng(5)
    proba_rand = rng.dirichlet(np.ones(3), len(y))
    good, rand = (pred_good, proba_good), (proba_rand.argmax(1), proba_rand)
    win = bs.paired_difference(y, good, rand, 3, metric=metric, seed=1)
    loss = bs.paired_difference(y, rand, good, 3, metric=metric, seed=1)
    full_good, full_rand = _metrics(y, *good, 3)[metric], _metrics(y, *rand, 3)[metric]
    assert win["difference"] == pytest.approx(full_good - full_rand, abs=1e-12) and win["difference"] > 0.2
    assert win["verdict"] == "win" and win["p_value"] < 0.05 and win["ci"][0] > 0
    assert loss["verdict"] == "loss" and loss["p_value"] < 0.05 and loss["ci"][1] < 0
    assert loss["difference"] == -win["difference"] and loss["ci"] == pytest.approx([-win["ci"][1], -win["ci"][0]])


def test_close_probes_tie_and_the_comparison_is_paired():
    """Two probes that differ on a handful of rows: the paired interval is narrow (much narrower than
    the unpaired spread of either probe's score) and contains 0; the p-value reads off the same resamples."""
    y, pred, proba = _probe(500, 2, seed=6, skill=1.5)
    flip = np.arange(0, 500, 100)  # 5 rows changed
    pred_b = pred.copy()
    pred_b[flip] = 1 - pred_b[flip]
    out = bs.paired_difference(y, (pred, proba), (pred_b, proba), 2, metric="accuracy", seed=2)
    assert out["verdict"] == "tie" and out["ci"][0] <= 0 <= out["ci"][1] and out["p_value"] > 0.05
    single = bs.score_intervals(y, pred, proba, 2, seed=2)["accuracy"]
    assert out["ci"][1] - out["ci"][0] < (single[1] - single[0]) / 3
    idx = bs.stratified_resamples(y, 1000, seed=2)
    d = (bs.resampled_scores(y, pred, proba, idx, 2)["accuracy"] - bs.resampled_scores(y, pred_b, proba, idx, 2)["accuracy"])
    tail = min(np.sum(d <= 0), np.sum(d >= 0))
    assert out["p_value"] == pytest.approx(min(1.0, 2 * (tail + 1) / (len(d) + 1)))  # add-one: never exactly 0
    assert out["ci"] == pytest.approx(list(bs.interval(d)))


# ---------------------------------------------------------------------------------------------
# Reference points


def test_majority_scores_by_hand():
    y = np.array([0, 0, 0, 1, 2])
    # Always 0: class 0 precision 3/5, recall 1, F1 = 2*3/(5+3) = 0.75; classes 1 and 2 score 0.
    assert bs.majority_scores(y, 3) == {"majority_class": 0, "macro_f1": pytest.approx(0.25), "accuracy": 0.6}
    assert bs.majority_scores(y, 4)["macro_f1"] == pytest.approx(0.75 / 4)  # an absent 4th class counts 0
    # Always 1 (e.g. the train split's majority): F1_1 = 2*1/(5+1) = 1/3.
    assert bs.majority_scores(y, 3, majority_class=1) == {"majority_class": 1, "macro_f1": pytest.approx(1 / 9),
                                                          "accuracy": 0.2}
    for m in range(3):
        const = np.full_like(y, m)
        got = bs.majority_scores(y, 3, majority_class=m)
        assert got["macro_f1"] == pytest.approx(f1_score(y, const, average="macro", labels=range(3), zero_division=0))
        assert got["accuracy"] == pytest.approx(accuracy_score(y, const))


def test_chance_scores_by_hand_and_by_simulation():
    y = np.array([0, 0, 0, 1])
    # K=2, p = (3/4, 1/4): F1_0 = 2*.75*.5/1.25 = 0.6, F1_1 = 2*.25*.5/.75 = 1/3.
    assert bs.chance_scores(y, 2) == {"macro_f1": pytest.approx((0.6 + 1 / 3) / 2), "accuracy": 0.5}
    assert bs.chance_scores(y, 4)["macro_f1"] == pytest.approx((2 * .75 * .25 / 1 + 2 * .25 * .25 / .5) / 4)
    # Large n: uniform guessing's mean macro F1 approaches the closed form.
    rng = np.random.default_rng(0)
    y = rng.choice(3, size=20000, p=[0.6, 0.3, 0.1])
    sims = [f1_score(y, rng.integers(0, 3, len(y)), average="macro", labels=range(3), zero_division=0) for _ in range(5)]
    assert np.mean(sims) == pytest.approx(bs.chance_scores(y, 3)["macro_f1"], abs=0.005)


# ---------------------------------------------------------------------------------------------
# Bad input


def _bad_calls():
    y, pred, proba = _probe(20, 3, seed=0)
    return [
        ("pred: expected 20 labels", lambda: bs.score_intervals(y, pred[:-1], proba, 3)),
        (r"proba: expected .* shape \(n, n_classes\) = \(20, 3\)", lambda: bs.score_intervals(y, pred, proba[:, :2], 3)),
        ("proba: expected .* shape", lambda: bs.score_intervals(y, pred, proba[:-1], 3)),
        ("proba: expected finite", lambda: bs.score_intervals(y, pred, np.where(proba > 0.9, np.nan, proba), 3)),
        ("n_resamples: expected an integer >= 1", lambda: bs.score_intervals(y, pred, proba, 3, n_resamples=0)),
        ("n_resamples: expected an integer >= 1", lambda: bs.stratified_resamples(y, -5, 0)),
        ("n_resamples: expected an integer >= 1", lambda: bs.stratified_resamples(y, 2.5, 0)),
        ("seed: expected an integer >= 0", lambda: bs.stratified_resamples(y, 5, -1)),
        (r"y: expected class indices in \[0, 2\)", lambda: bs.score_intervals(y, pred % 2, proba[:, :2], 2)),
        ("y: expected a non-empty 1-D array of integer", lambda: bs.stratified_resamples(y.astype(float), 5, 0)),
        ("y: expected a non-empty 1-D array of integer", lambda: bs.stratified_resamples(np.array([], int), 5, 0)),
        ("n_classes: expected an integer >= 2", lambda: bs.score_intervals(y * 0, pred * 0, proba[:, :1], 1)),
        (r"idx: expected row indices in \[0, 20\)", lambda: bs.resampled_scores(y, pred, proba, np.full((2, 20), 20), 3)),
        ("idx: expected a .n_resamples, m. integer array", lambda: bs.resampled_scores(y, pred, proba, np.arange(20), 3)),
        (r"level: expected a number in \(0, 1\)", lambda: bs.score_intervals(y, pred, proba, 3, level=95)),
        ("values: expected a non-empty 1-D array", lambda: bs.interval(np.array([]))),
        ("metric: expected one of", lambda: bs.paired_difference(y, (pred, proba), (pred, proba), 3, metric="f1")),
        ("b: expected a .pred, proba. pair", lambda: bs.paired_difference(y, (pred, proba), pred, 3)),
        ("b.proba: expected", lambda: bs.paired_difference(y, (pred, proba), (pred, proba[:, :2]), 3)),
        ("majority_class: expected a class index", lambda: bs.majority_scores(y, 3, majority_class=3)),
        (r"y: expected class indices in \[0, 2\)", lambda: bs.chance_scores(y, 2)),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_raises_data_error(case):
    match, call = _bad_calls()[case]
    with pytest.raises(DataError, match=match):
        call()
