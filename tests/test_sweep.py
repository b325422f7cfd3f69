"""Data regimes of the sweep (saeprobe.sweep, saeprobe.sweep_tables): class imbalance and label noise.

The draws depend only on labels, split, seed, value and repeat; they never touch validation or
test rows, never change a label outside train, and the probe is scored on the true test labels.
The size regime itself is tested in test_transfer.py.
"""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from saeprobe import config as sc
from saeprobe.cell_tables import frame, write_parquet
from saeprobe.errors import ConfigError, DataError
from saeprobe.sweep import (imbalance_size, imbalance_subsample, label_noise_sample, n_positive, regime_sample,
                            subsample, sweep, sweep_features, sweep_tfidf)
from saeprobe.sweep_tables import SWEEP_SCHEMA, sweep_markdown, sweep_skipped, sweep_summary, sweep_table

PROBE = {"Cs": [0.1, 1.0], "cv_folds": 3}
FRACTIONS = [0.05, 0.25, 0.5, 0.75, 0.95]
NOISE = [0.0, 0.1, 0.3, 0.5]
TFIDF = {"enabled": True, "ngram_max": 1, "max_features": None, "stop_words": None, "min_df": 1}


def _binary(seed=0, n=400):
    """Binary labels (60 % negative) with train, validation and test rows."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    split = rng.choice(np.array(["train", "validation", "test"]), size=n, p=[0.6, 0.15, 0.25])
    return y, split


def _multiclass(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat([0, 1, 2, 3], [80, 60, 40, 5]))  # class 3 is tiny
    split = rng.choice(np.array(["train", "validation", "test"]), size=len(y), p=[0.6, 0.15, 0.25])
    return y, split


def _draws(y, split, seed=1, repeats=3):
    """Every (regime, value, repeat) draw of the configured regimes: (mask, labels)."""
    out = {}
    binary = len(np.unique(y)) == 2
    for r in range(repeats):
        for n in (4, None):
            out["size", n, r] = regime_sample(y, split, "size", n, r, seed)
        if binary:
            for f in FRACTIONS:
                out["imbalance", f, r] = regime_sample(y, split, "imbalance", f, r, seed, imbalance=FRACTIONS)
        for q in NOISE:
            out["label_noise", q, r] = regime_sample(y, split, "label_noise", q, r, seed)
    return out


# --------------------------------------------------------------------------- test split untouched


@pytest.mark.parametrize("data", [_binary, _multiclass])
def test_regimes_keep_the_test_split_untouched(data):
    y, split = data()
    y_before, split_before = y.copy(), split.copy()
    draws = _draws(y, split)
    assert any(k[0] == "label_noise" and k[1] > 0 for k in draws)
    for key, (mask, labels) in draws.items():
        assert mask.dtype == bool and mask.shape == y.shape
        assert mask.any() and not mask[split != "train"].any(), key  # never a validation or test row
        np.testing.assert_array_equal(labels[split != "train"], y[split != "train"], err_msg=str(key))
    np.testing.assert_array_equal(y, y_before)  # the caller's labels are not modified in place
    np.testing.assert_array_equal(split, split_before)


def test_sweep_fits_on_train_draws_and_scores_the_true_test_labels():
    y, split = _binary()
    test = split == "test"
    calls = []

    def fit(s, labels):
        calls.append((s.copy(), labels.copy()))
        np.testing.assert_array_equal(s == "test", test)  # the full test split, every time
        assert not (s == "train")[split != "train"].any()  # train rows come from the train split only
        np.testing.assert_array_equal(labels[~(split == "train")], y[~(split == "train")])
        return {"C": 1.0, "test": {"n": int(test.sum()), "macro_f1": 0.5, "accuracy": 0.5}}

    rows = sweep(fit, y, split, sizes=[8], repeats=2, seed=0, imbalance=[0.1, 0.9], label_noise=[0.0, 0.4],
                 n_classes=2)
    assert [r["regime"] for r in rows] == ["size"] * 2 + ["imbalance"] * 4 + ["label_noise"] * 4
    assert all(r["n_test"] == int(test.sum()) for r in rows)
    assert any((labels != y).any() for _, labels in calls)  # some fit did see flipped train labels
    # Noise 0 is the whole-split draw on true labels: fitted once for both repeats.
    assert rows[6]["subsample"] == rows[7]["subsample"] and rows[8]["subsample"] != rows[9]["subsample"]


def test_label_noise_is_scored_on_true_test_labels():
    """A feature that gives the true class away: a probe fitted on 40 % flipped train labels still
    finds it, so scored on the true test labels it does well (> 0.8); on flipped test labels it
    could not exceed about 0.6."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    split = np.where(rng.random(600) < 0.7, "train", "test")
    x = np.column_stack([2.0 * y - 1.0, rng.normal(size=(600, 3))])
    rows = sweep_features(x, y, split, sizes=[], repeats=2, n_classes=2, probe=PROBE, seed=0, label_noise=[0.4])
    assert [r["n_flipped"] for r in rows] == [round(0.4 * (split == "train").sum())] * 2
    assert min(r["test_macro_f1"] for r in rows) > 0.8


# --------------------------------------------------------------------------- class imbalance


def test_imbalance_has_the_requested_fraction_on_one_shared_size():
    y, split = _binary()
    train = split == "train"
    neg, pos = int((y[train] == 0).sum()), int((y[train] == 1).sum())
    n = imbalance_size(y, split, FRACTIONS)
    ok = [all(2 <= n_positive(f, m) <= pos and 2 <= m - n_positive(f, m) <= neg for f in FRACTIONS)
          for m in range(4, neg + pos + 1)]
    assert ok[n - 4] and not any(ok[n - 3:])  # the largest size at which every fraction is achievable
    for f in FRACTIONS:
        for r in range(3):
            mask = imbalance_subsample(y, split, f, r, 5, n)
            assert mask.sum() == n
            assert (y[mask] == 1).sum() == round(f * n)
            assert (y[mask] == 1).mean() == pytest.approx(round(f * n) / n)
            assert min((y[mask] == 1).sum(), (y[mask] == 0).sum()) >= 2
    # Nested within a repeat: positives grow, negatives shrink with the fraction.
    lo, hi = imbalance_subsample(y, split, 0.25, 1, 5, n), imbalance_subsample(y, split, 0.75, 1, 5, n)
    assert not ((lo & (y == 1)) & ~hi).any() and not ((hi & (y == 0)) & ~lo).any()


def test_imbalance_rows_of_the_sweep():
    y, split = _binary()
    report = {}
    rows = sweep_features(np.eye(2)[y] + np.random.default_rng(0).normal(size=(len(y), 2)), y, split, sizes=[],
                          repeats=2, n_classes=2, probe=PROBE, seed=0, imbalance=[0.05, 0.5], report=report)
    n = imbalance_size(y, split, [0.05, 0.5])
    assert report["imbalance_n"] == n
    assert [(r["regime"], r["value"], r["repeat"]) for r in rows] == [
        ("imbalance", 0.05, 0), ("imbalance", 0.05, 1), ("imbalance", 0.5, 0), ("imbalance", 0.5, 1)]
    assert all(r["n_train"] == n and r["n_per_class"] is None and r["n_flipped"] is None for r in rows)
    assert [r["n_positive"] for r in rows] == [round(0.05 * n)] * 2 + [round(0.5 * n)] * 2


def test_impossible_imbalance_raises():
    y = np.array([0] * 40 + [1] * 3 + [0, 1] * 10)
    split = np.array(["train"] * 43 + ["test"] * 20)
    with pytest.raises(DataError, match="no train subsample size gives every positive fraction"):
        imbalance_size(y, split, [0.5, 0.99])  # 0.99 needs >= 2 negatives: N >= 150 > 43
    with pytest.raises(DataError, match="needs 20 positive"):
        imbalance_subsample(y, split, 0.5, 0, 0, 40)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        imbalance_subsample(y, split, 1.0, 0, 0, 10)
    with pytest.raises(DataError, match="binary labels"):
        imbalance_size(np.array([0, 1, 2] * 5), np.array(["train"] * 15), [0.5])


def test_multiclass_imbalance_is_skipped_and_logged(caplog):
    y, split = _multiclass()
    calls = []

    def fit(s, labels):
        calls.append(1)
        return {"C": 1.0, "test": {"n": int((s == "test").sum()), "macro_f1": 0.5, "accuracy": 0.5}}

    report = {}
    with caplog.at_level(logging.INFO, logger="saeprobe"):
        rows = sweep(fit, y, split, sizes=[], repeats=3, seed=0, imbalance=FRACTIONS, label_noise=[0.2], n_classes=4,
                     report=report)
    assert {r["regime"] for r in rows} == {"label_noise"} and len(rows) == 3
    assert report["skipped"]["imbalance"]["rows"] == len(FRACTIONS) * 3
    assert "class imbalance skipped: the dataset has 4 classes (binary datasets only); 15 rows" in caplog.text


# --------------------------------------------------------------------------- label noise


@pytest.mark.parametrize("data", [_binary, _multiclass])
def test_label_noise_flips_exactly_and_to_another_class(data):
    y, split = data()
    train = split == "train"
    n_train = int(train.sum())
    previous = np.zeros(len(y), bool)
    odd = (round(0.1 * n_train) + 0.6) / n_train  # round(odd · n_train) = floor + 1
    for q in (0.0, 0.05, odd, 0.2, 0.5):
        mask, noisy = label_noise_sample(y, split, q, 2, seed=9)
        np.testing.assert_array_equal(mask, train)
        flipped = noisy != y
        assert flipped.sum() == round(q * n_train)
        assert not flipped[~train].any()
        if len(np.unique(y)) == 2:
            np.testing.assert_array_equal(noisy[flipped], 1 - y[flipped])
        assert np.isin(noisy[flipped], np.unique(y[train])).all()
        counts = np.bincount(noisy[train], minlength=y.max() + 1)
        assert counts.min() >= 2  # stratified CV still works (the tiny class keeps 2)
        assert not (previous & ~flipped).any()  # nested: a lower fraction flips a subset of rows
        np.testing.assert_array_equal(noisy[previous], label_noise_sample(y, split, q, 2, seed=9)[1][previous])
        previous = flipped


def test_label_noise_never_leaves_a_class_with_fewer_than_two_train_examples():
    y = np.array([0, 0, 0, 1, 1, 0, 1, 0, 1])  # train: three 0s, two 1s
    split = np.array(["train"] * 5 + ["test"] * 4)
    for seed in range(20):  # unguarded, 3 in 10 draws would flip two 0s and leave one
        _, noisy = label_noise_sample(y, split, 0.4, 0, seed)
        assert (noisy != y).sum() == 2
        assert np.bincount(noisy[:5]).min() >= 2
    with pytest.raises(DataError, match="can be flipped"):
        label_noise_sample(np.array([0, 0, 1, 1, 0, 1]), np.array(["train"] * 4 + ["test"] * 2), 0.5, 0, 0)


def test_multiclass_flips_reach_every_other_class():
    y, split = _multiclass()
    _, noisy = label_noise_sample(y, split, 0.5, 0, seed=0)
    flipped = noisy != y
    for c in (0, 1, 2):
        assert set(noisy[flipped & (y == c)]) == {0, 1, 2, 3} - {c}


def test_draws_are_seeded_and_vary_by_repeat():
    y, split = _binary()
    n = imbalance_size(y, split, FRACTIONS)
    a = imbalance_subsample(y, split, 0.25, 0, 42, n)
    np.testing.assert_array_equal(a, imbalance_subsample(y, split, 0.25, 0, 42, n))
    assert not np.array_equal(a, imbalance_subsample(y, split, 0.25, 1, 42, n))
    assert not np.array_equal(a, imbalance_subsample(y, split, 0.25, 0, 7, n))
    assert not np.array_equal(a, subsample(y, split, n // 2, 0, 42))  # its own salt
    m, noisy = label_noise_sample(y, split, 0.3, 0, 42)
    m2, noisy2 = label_noise_sample(y, split, 0.3, 0, 42)
    np.testing.assert_array_equal(m, m2)
    np.testing.assert_array_equal(noisy, noisy2)
    assert not np.array_equal(noisy, label_noise_sample(y, split, 0.3, 1, 42)[1])
    assert not np.array_equal(noisy, label_noise_sample(y, split, 0.3, 0, 7)[1])
    with pytest.raises(ValueError, match="unknown regime"):
        regime_sample(y, split, "nope", 0.1, 0, 0)


def test_every_source_gets_the_same_documents_and_flips():
    rng = np.random.default_rng(0)
    y, split = _binary()
    dense = rng.normal(size=(len(y), 6)) + np.eye(2, 6)[y]
    sparse = sp.csr_matrix(np.maximum(rng.normal(size=(len(y), 12)), 0))
    texts = [f"word{c} filler {i}" for i, c in enumerate(y)]
    kw = dict(sizes=[4], repeats=2, n_classes=2, probe=PROBE, seed=3, imbalance=[0.2, 0.8], label_noise=[0.0, 0.3])
    a, b = sweep_features(dense, y, split, **kw), sweep_features(sparse, y, split, **kw)
    c = sweep_tfidf(texts, y, split, tfidf=TFIDF, **kw)

    def key(rows):
        return [(r["regime"], r["value"], r["repeat"], r["n_train"], r["subsample"], r["n_positive"], r["n_flipped"])
                for r in rows]

    assert key(a) == key(b) == key(c) and len(a) == 2 + 4 + 4
    noise = [r for r in c if r["regime"] == "label_noise"]
    assert noise[2]["subsample"] != noise[3]["subsample"]  # the fingerprint covers the flipped labels
    assert a == sweep_features(dense, y, split, **kw)  # deterministic


# --------------------------------------------------------------------------- tables and config


def test_regime_tables(tmp_path):
    y, split = _binary()
    x = np.eye(2)[y] + np.random.default_rng(1).normal(size=(len(y), 2))
    rows = sweep_features(x, y, split, sizes=[4, None], repeats=2, n_classes=2, probe=PROBE, seed=0,
                          imbalance=[0.1, 0.5], label_noise=[0.0, 0.2])
    p = tmp_path / "hidden.parquet"
    write_parquet(frame(rows, {"model": "m", "dataset": "d", "source": "hidden", "layer": 1, "pooling": "mean",
                               "binarize": "raw"}, SWEEP_SCHEMA), p)
    df = sweep_table([p])
    assert df.height == 12 and df["regime"].to_list() == ["size"] * 4 + ["imbalance"] * 4 + ["label_noise"] * 4
    assert df.filter(pl.col("regime") == "size")["value"].to_list() == [4.0, 4.0, None, None]
    summary = sweep_summary(df)
    assert summary.select("regime", "value").rows() == [("size", 4.0), ("size", None), ("imbalance", 0.1),
                                                        ("imbalance", 0.5), ("label_noise", 0.0), ("label_noise", 0.2)]
    assert (summary["repeats"] == 2).all()
    md = sweep_markdown(df)
    assert md.index("### Training-set size") < md.index("### Class imbalance (N = ") < md.index("### Label noise")
    assert "| 0.1 " in md and "| 0.2 " in md and "| all " in md


BASE = {"datasets": {"b": {"path": "b.parquet"}}, "models": {"m": {"path": "m", "layers": [0]}},
        "sweep": {"datasets": ["b"]}}


def test_config_regimes():
    cfg = sc.validate(copy.deepcopy(BASE))
    assert cfg["sweep"]["imbalance"] == [] and cfg["sweep"]["label_noise"] == []
    ok = copy.deepcopy(BASE)
    ok["sweep"].update(imbalance=[0.05, 0.95], label_noise=[0, 0.5])
    sc.validate(ok)
    for key, bad in (("imbalance", [1.0]), ("imbalance", [0]), ("label_noise", [0.6]), ("label_noise", [-0.1])):
        cfg = copy.deepcopy(BASE)
        cfg["sweep"][key] = bad
        with pytest.raises(ConfigError, match=key):
            sc.validate(cfg)


# --------------------------------------------------------------------------- grouped sweeps (group_column)


def _grouped(seed=0):
    """Binary labels; each class in one big train group (30 rows) and three small ones (3 rows), test
    rows in groups of their own: small grouped draws often hold a class in a single group."""
    rng = np.random.default_rng(seed)
    y, groups = [], []
    for c in (0, 1):
        for j, n in enumerate([30, 3, 3, 3]):
            y += [c] * n
            groups += [f"c{c}g{j}"] * n
    y = np.array(y + [0, 1] * 10)
    groups = np.array(groups + [f"t{i // 4}" for i in range(20)])
    split = np.array(["train"] * (len(y) - 20) + ["test"] * 20)
    x = rng.normal(size=(len(y), 4)) + np.eye(2, 4)[y]
    return x, y, split, groups


def test_grouped_sweep_skips_and_counts_draws_grouped_cv_cannot_split(caplog):
    """T7: with group_column, a draw holding a class in a single train group cannot be cross-validated;
    it is skipped (logged with regime, value, repeat and reason, counted in the report), the other
    draws are fitted, and a size none of whose repeats can be fitted is named to drop."""
    x, y, split, groups = _grouped()
    sizes, repeats, seed = [2, 3, None], 3, 0

    def impossible(mask):  # computed here from the draw itself, not by the sweep's own check
        return any(len(set(groups[mask & (y == c)])) < 2 for c in (0, 1))

    expected = {(n, r): impossible(subsample(y, split, n, r, seed)) for n in sizes for r in range(repeats)}
    assert all(expected[2, r] for r in range(repeats))  # the fixture: every size-2 draw is impossible,
    assert 0 < sum(expected[3, r] for r in range(repeats)) < repeats  # some size-3 draws are, the whole split is not
    assert not expected[None, 0]
    report = {}
    with caplog.at_level(logging.INFO, logger="saeprobe"):
        rows = sweep_features(x, y, split, sizes=sizes, repeats=repeats, n_classes=2, probe=PROBE, seed=seed,
                              report=report, groups=groups)
    assert [(r["n_per_class"], r["repeat"]) for r in rows] == [key for key, bad in expected.items() if not bad]
    skipped = [key for key, bad in expected.items() if bad]
    assert report["n_skipped_draws"] == len(skipped)
    assert [(d["n_per_class"], d["repeat"]) for d in report["skipped_draws"]] == skipped
    assert all(d["regime"] == "size" and "a class occurs in a single train group" in d["reason"]
               for d in report["skipped_draws"])
    assert [(d["regime"], d["value"], d["config_key"]) for d in report["drop"]] == [("size", 2.0, "sweep.sizes")]
    assert "sweep size 2 per class, repeat 0 (4 train rows): skipped" in caplog.text
    assert "drop 2 from sweep.sizes" in caplog.text
    assert json.dumps(report)  # the cell file's JSON report


def test_sweep_table_marks_skipped_draws(tmp_path):
    """The skipped draws reach tables/sweep: '(k skipped)' in a cell, 'skipped' where no repeat was fitted,
    and a note naming the size to drop; the rows and their means are those of the fitted draws."""
    x, y, split, groups = _grouped()
    cell = {"model": "m", "dataset": "d", "source": "hidden", "layer": 1, "pooling": "mean", "binarize": "raw"}
    report = {"cell": cell}
    rows = sweep_features(x, y, split, sizes=[2, 3, None], repeats=3, n_classes=2, probe=PROBE, seed=0, report=report,
                          groups=groups)
    p = tmp_path / "unit"
    p.mkdir()
    write_parquet(frame(rows, cell, SWEEP_SCHEMA), p / "mean__raw.parquet", report)
    df, skipped = sweep_table([p]), sweep_skipped([p])
    assert df.height == len(rows) and skipped.height == report["n_skipped_draws"]
    summary = sweep_summary(df, skipped).select("n_per_class", "repeats", "skipped").rows()
    n3 = sum(d["n_per_class"] == 3 for d in report["skipped_draws"])
    assert summary == [(2, 0, 3), (3, 3 - n3, n3), (None, 3, 0)]
    md = sweep_markdown(df, skipped)
    assert "| skipped |" in md and f"({n3} skipped)" in md
    assert "- size 2 per class: 3 draws in 1 cells; no repeat can be fitted in any cell: drop 2 from `sweep.sizes`" in md
    assert "- size 3 per class" in md and "drop 3" not in md
    assert sweep_markdown(df) == sweep_markdown(df, sweep_skipped([]))  # nothing skipped: the table as before
