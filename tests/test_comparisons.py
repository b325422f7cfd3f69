"""Stored predictions, intervals on every score, paired comparisons, k-sparse tables and the summary.

Probes are fitted for real on small synthetic problems and written as the workflow writes them
(result JSON + predictions file), then gathered by the table code.
"""

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from saeprobe import layout, predictions
from saeprobe.comparisons import comparisons, paired, win_tie_loss, with_comparisons
from saeprobe.errors import DataError
from saeprobe.io import write_json
from saeprobe.ksparse_tables import binarize_vs_ksparse, ksparse_comparisons, ksparse_table
from saeprobe.probes import fit_probe
from saeprobe.summary import summary, summary_markdown
from saeprobe.tables import best, grid

BOOT = dict(resamples=200, level=0.95, seed=7)
PROBE = dict(Cs=[0.1, 1.0], cv_folds=3)


def _problem(n=300, d=12, signal=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d))
    x[:, 0] += signal * (2 * y - 1)
    split = np.array(["train"] * 200 + ["test"] * 100)
    return x, y, split


def _write(folder, name, cell, x, y, split):
    """Fit one probe and store it as fit_probe.py does; returns the result path."""
    result, _, _ = fit_probe(x, y, split, n_classes=2, seed=0, **PROBE)
    arrays = predictions.finish(result, y, split, np.arange(len(y)), 2, **BOOT)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    predictions.save(layout.predictions_of(path), arrays)
    write_json(path, {**result, **cell})
    return path


def _cell(source, model="m", layer=1, pooling="mean", binarize="raw"):
    return dict(dataset="d", model=model, source=source, layer=layer, pooling=pooling, binarize=binarize)


def test_finish_adds_intervals_and_majority_and_moves_predictions_out():
    x, y, split = _problem()
    result, _, _ = fit_probe(x, y, split, n_classes=2, seed=0, **PROBE)
    arrays = predictions.finish(result, y, split, np.arange(len(y)) + 100, 2, **BOOT)
    assert "predictions" not in result
    test = result["test"]
    lo, hi = test["macro_f1_ci"]
    assert lo <= test["macro_f1"] <= hi and hi - lo > 0
    counts = np.bincount(y[split == "test"])
    assert test["majority_accuracy"] == pytest.approx(counts.max() / counts.sum())
    assert test["predicted_classes"] == 2
    np.testing.assert_array_equal(arrays["test.doc_id"], np.flatnonzero(split == "test") + 100)
    np.testing.assert_array_equal(arrays["test.y"], y[split == "test"])


def test_finish_rejects_predictions_of_the_wrong_length():
    x, y, split = _problem()
    result, _, _ = fit_probe(x, y, split, n_classes=2, seed=0, **PROBE)
    pred, proba = result["predictions"]["test"]
    result["predictions"]["test"] = (pred[:-1], proba[:-1])
    with pytest.raises(DataError, match="test predictions"):
        predictions.finish(result, y, split, np.arange(len(y)), 2, **BOOT)


def test_paired_difference_of_a_probe_with_itself_is_exactly_zero(tmp_path):
    x, y, split = _problem()
    path = _write(tmp_path, "a", _cell("sae1"), x, y, split)
    row = {"result": str(path)}
    d = paired(row, row, **BOOT)
    assert d["difference"] == 0 and d["ci_lo"] == 0 and d["ci_hi"] == 0 and d["p_value"] == 1 and d["verdict"] == "tie"


def test_paired_needs_the_same_test_documents(tmp_path):
    x, y, split = _problem()
    a = _write(tmp_path, "a", _cell("sae1"), x, y, split)
    shifted = np.roll(split, 1)
    b = _write(tmp_path, "b", _cell("hidden"), x, y, shifted)
    with pytest.raises(DataError, match="same test documents"):
        paired({"result": str(a)}, {"result": str(b)}, **BOOT)


def _grid(tmp_path):
    x, y, split = _problem()
    rng = np.random.default_rng(1)
    noise = rng.normal(size=x.shape)
    folder = tmp_path / "probes"
    for name, cell, features in (("sae_good", _cell("sae1"), x),                       # signal: wins at layer 1
                                 ("hidden_noise", _cell("hidden"), noise),             # no signal
                                 ("sae_l2", _cell("sae1", layer=2), noise),
                                 ("hidden_l2", _cell("hidden", layer=2), x)):          # layer 2: hidden wins
        _write(folder, name, cell, features, y, split)
    tfidf = _write(tmp_path / "tfidf", "d", dict(dataset="d", model=None, source="tfidf", layer=None, pooling=None,
                                                  binarize=None), x[:, :3], y, split)
    return grid([folder, tfidf])


def test_comparisons_best_and_per_layer(tmp_path):
    g = _grid(tmp_path)
    c = comparisons(g, **BOOT)
    best_rows = c.filter(pl.col("scope") == "best")
    assert set(zip(best_rows["b_family"], best_rows["b_probe"], strict=True)) == {("hidden", "logreg"), ("tfidf", "logreg")}
    layer = c.filter(pl.col("scope") == "layer").sort("layer")
    assert layer["layer"].to_list() == [1, 2]
    # Layer 1: SAE has the signal, hidden only noise: a clear win; layer 2 the other way round.
    assert layer["verdict"].to_list() == ["win", "loss"]
    assert (layer["ci_lo"] <= layer["difference"]).all() and (layer["difference"] <= layer["ci_hi"]).all()
    b = with_comparisons(best(g), c)
    sae = b.filter(pl.col("family") == "sae").row(0, named=True)
    assert sae["vs_hidden_verdict"] in {"win", "tie", "loss"} and sae["vs_tfidf_difference"] is not None
    assert b.filter(pl.col("family") != "sae")["vs_hidden_verdict"].null_count() == b.height - 1
    counts = win_tie_loss(c).filter(pl.col("scope") == "layer").row(0, named=True)
    assert (counts["win"], counts["tie"], counts["loss"], counts["comparisons"]) == (1, 0, 1, 2)


def test_grid_rows_carry_intervals_majority_and_flags(tmp_path):
    g = _grid(tmp_path)
    assert (g["test_macro_f1_lo"] <= g["test_macro_f1"]).all() and (g["test_macro_f1"] <= g["test_macro_f1_hi"]).all()
    assert g["majority_macro_f1"].n_unique() == 1  # one test split per dataset
    assert g["flag"].null_count() >= 1  # the probe with signal is a clean row
    assert g.filter(pl.col("source") == "sae1").filter(pl.col("layer") == 1)["flag"][0] is None


def _ksparse_file(folder, source, x, y, split, ks=(1, 2, 5), binarize="raw", pooling="mean"):
    from saeprobe.probes import fit_probe as fp

    probes, arrays = [], {}
    for k in ks:
        result, _, _ = fp(x[:, :k], y, split, n_classes=2, seed=0, **PROBE)
        result.update(k=k, ranking="mean_diff", features=list(range(k)))
        arrays.update(predictions.finish(result, y, split, np.arange(len(y)), 2, **BOOT, prefix=f"k{k}."))
        probes.append(result)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pooling}__{binarize}.mean_diff.json"
    predictions.save(layout.predictions_of(path), arrays)
    write_json(path, {**_cell(source, pooling=pooling, binarize=binarize), "ranking": "mean_diff", "probes": probes})
    return path


def test_ksparse_tables_and_binarize_vs_ksparse(tmp_path):
    x, y, split = _problem()
    files = [_ksparse_file(tmp_path / "sae", "sae1", x, y, split), _ksparse_file(tmp_path / "hid", "hidden", x[:, ::-1], y, split)]
    df = ksparse_table(files)
    assert df.height == 6 and df["features"].to_list()[:3] == [[0], [0, 1], [0, 1, 2, 3, 4]]
    c = ksparse_comparisons(df, **BOOT)
    assert c.filter(pl.col("ranking") == "mean_diff")["k"].to_list() == [1, 2, 5]
    # One ranking run: the symmetric rows (over every ranking) are the same comparisons.
    best_rows = c.filter(pl.col("ranking") == "best")
    assert best_rows["k"].to_list() == [1, 2, 5]
    assert best_rows["difference"].to_list() == c.filter(pl.col("ranking") == "mean_diff")["difference"].to_list()
    assert c["verdict"][0] == "win"  # feature 0 carries the signal, the reversed hidden dims put it last
    # A binarized all-feature probe of the same store and pooling, with 1.5 active features per document.
    folder = tmp_path / "grid"
    xb = sp.csr_matrix((x > 1.0).astype(float))
    path = _write(folder, "mean__gt1", _cell("sae1", binarize="gt1"), xb, y, split)
    g = grid([path])
    g = g.with_columns(mean_active_features=pl.lit(1.5))
    versus = binarize_vs_ksparse(g, df, **BOOT)
    assert versus.height == 3 and versus["threshold"].to_list() == [1.0] * 3
    assert versus.filter("matched")["k"].to_list() == [2]  # smallest k >= 1.5
    s = summary(_grid(tmp_path / "g2"), comparisons(_grid(tmp_path / "g2"), **BOOT), df, **BOOT)
    assert "sae · k-sparse k=1" in s["entry"].to_list()
    md = summary_markdown(s, comparisons(_grid(tmp_path / "g2"), **BOOT), c, 0.95)
    assert "Win / tie / loss" in md and "k-sparse" in md


def test_tfidf_predictions_pattern_is_predictions_of_its_result():
    assert layout.predictions_of(layout.TFIDF) == layout.TFIDF_PREDICTIONS
    with pytest.raises(ValueError):
        layout.predictions_of("x.parquet")
