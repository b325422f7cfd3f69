"""Stored predictions, intervals on every score, paired comparisons, k-sparse tables and the summary.

Probes are fitted for real on small synthetic problems and written as the workflow writes them
(result JSON + predictions file), then gathered by the table code.
"""

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from saeprobe import layout, predictions
from saeprobe.comparisons import COMPARISON_SCHEMA, comparisons, paired, win_tie_loss, with_comparisons
from saeprobe.errors import DataError
from saeprobe.io import read_json, write_json
from saeprobe.ksparse_tables import binarize_vs_ksparse, ksparse_comparisons, ksparse_markdown, ksparse_table
from saeprobe.probes import fit_probe
from saeprobe.summary import summary, summary_markdown
from saeprobe.tables import GRID_SCHEMA, best, grid

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


def _ksparse_file(folder, source, x, y, split, ks=(1, 2, 5), binarize="raw", pooling="mean", ranking="mean_diff"):
    """A k-sparse result file as the ksparse stage writes it; the "ranking" is ``x``'s column order (k = its first k)."""
    from saeprobe.probes import fit_probe as fp

    probes, arrays = [], {}
    for k in ks:
        result, _, _ = fp(x[:, :k], y, split, n_classes=2, seed=0, **PROBE)
        result.update(k=k, ranking=ranking, features=list(range(k)))
        arrays.update(predictions.finish(result, y, split, np.arange(len(y)), 2, **BOOT, prefix=f"k{k}."))
        probes.append(result)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pooling}__{binarize}.{ranking}.json"
    predictions.save(layout.predictions_of(path), arrays)
    write_json(path, {**_cell(source, pooling=pooling, binarize=binarize), "ranking": ranking, "probes": probes})
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


# ------------------------------------------------------------------ verdicts robust to the CV choice (issue 21)


def _set_cv(path, cv, std=0.03, folds=3):
    """Give a stored result the CV score a flat CV curve would (its predictions stay the probe's own)."""
    result = read_json(path)
    result.update(cv_macro_f1=cv, cv_macro_f1_std=std, cv_folds=folds, cv_macro_f1_se=std / np.sqrt(folds))
    write_json(path, result)


def _flat(tmp_path, cv_good, cv_weak, cv_hidden=0.7):
    """Two SAE configurations (strong signal; weak signal) and a hidden-state probe with the weak signal.

    SAE good − hidden is a win, SAE weak − hidden a tie (checked by the tests); their CV scores are set."""
    x, y, split = _problem()
    rng = np.random.default_rng(5)
    weak, hidden = x.copy(), x.copy()
    weak[:, 0] = 0.5 * x[:, 0] + rng.normal(size=len(y))
    hidden[:, 0] = 0.5 * x[:, 0] + rng.normal(size=len(y))
    folder = tmp_path / "probes"
    paths = {"good": _write(folder, "good", _cell("sae1", pooling="mean"), x, y, split),
             "weak": _write(folder, "weak", _cell("sae1", pooling="max"), weak, y, split),
             "hidden": _write(folder, "hidden", _cell("hidden"), hidden, y, split)}
    for name, cv in (("good", cv_good), ("weak", cv_weak), ("hidden", cv_hidden)):
        _set_cv(paths[name], cv)
    return grid([folder]), paths


def test_a_flat_cv_curve_gives_the_same_verdict_whichever_tie_break(tmp_path):
    g, paths = _flat(tmp_path, cv_good=0.85, cv_weak=0.85)
    hidden = {"result": str(paths["hidden"])}
    # The two SAE configurations CV cannot tell apart give different verdicts against hidden states ...
    assert paired({"result": str(paths["good"])}, hidden, **BOOT)["verdict"] == "win"
    assert paired({"result": str(paths["weak"])}, hidden, **BOOT)["verdict"] == "tie"
    # ... so the verdict is the same ("unstable") whichever of them a tie-break (row order) picks.
    either = [comparisons(order, **BOOT).sort("scope") for order in (g, g.reverse())]
    assert either[0]["verdict"].to_list() == either[1]["verdict"].to_list()
    for c in either:
        assert c["verdict"].to_list() == ["unstable", "unstable"]  # scope best and scope layer
        assert c["band_a"].to_list() == [2, 2] and c["band_b"].to_list() == [1, 1]
        assert c["band_verdicts"].to_list() == ["win 1, tie 1"] * 2


def test_a_verdict_within_one_standard_error_is_unstable_and_counted_apart(tmp_path):
    # CV 0.86 vs 0.85 with SE 0.017: within one SE, so "win" holds for one of them only.
    g, paths = _flat(tmp_path, cv_good=0.86, cv_weak=0.85)
    c = comparisons(g, **BOOT)
    row = c.filter(pl.col("scope") == "best").row(0, named=True)
    # The difference and interval are the chosen pair's (equal complexity: the higher CV, "good"); the verdict is not.
    chosen = paired({"result": str(paths["good"])}, {"result": str(paths["hidden"])}, **BOOT)
    assert (row["difference"], row["ci_lo"], row["ci_hi"]) == (chosen["difference"], chosen["ci_lo"], chosen["ci_hi"])
    assert row["verdict"] == "unstable" and chosen["verdict"] == "win"
    counts = win_tie_loss(c).filter(pl.col("scope") == "best").row(0, named=True)
    assert (counts["win"], counts["tie"], counts["unstable"], counts["comparisons"]) == (0, 0, 1, 1)
    b = with_comparisons(best(g), c).filter(pl.col("family") == "sae").row(0, named=True)
    assert (b["vs_hidden_verdict"], b["vs_hidden_band_verdicts"], b["band_size"]) == ("unstable", "win 1, tie 1", 2)
    # Outside one SE (a tight CV estimate) only the CV-best configuration counts: its verdict is reported.
    for name, cv in (("good", 0.86), ("weak", 0.80)):
        _set_cv(paths[name], cv, std=0.003)
    tight = comparisons(grid([tmp_path / "probes"]), **BOOT).filter(pl.col("scope") == "best").row(0, named=True)
    assert (tight["verdict"], tight["band_a"], tight["band_verdicts"]) == ("win", 1, "win 1")


def test_band_pairs_that_agree_keep_their_verdict_and_every_pair_is_counted(tmp_path):
    x, y, split = _problem()
    rng = np.random.default_rng(2)
    folder = tmp_path / "probes"
    paths = [_write(folder, f"sae{i}", _cell("sae1", pooling=p), x + 0.05 * rng.normal(size=x.shape), y, split)
             for i, p in enumerate(("mean", "max", "sum"))]
    paths.append(_write(folder, "hidden", _cell("hidden"), rng.normal(size=x.shape), y, split))
    paths.append(_write(folder, "hidden2", _cell("hidden", pooling="max"), rng.normal(size=x.shape), y, split))
    for p in paths:
        _set_cv(p, 0.8)
    c = comparisons(grid([folder]), **BOOT).filter(pl.col("scope") == "best").row(0, named=True)
    assert (c["band_a"], c["band_b"], c["verdict"], c["band_verdicts"]) == (3, 2, "win", "win 6")


def test_paired_scores_reuse_gives_the_numbers_of_paired_difference(tmp_path):
    from saeprobe.bootstrap import paired_difference
    from saeprobe.comparisons import PairedScores

    x, y, split = _problem()
    rng = np.random.default_rng(3)
    rows = [{"result": str(_write(tmp_path, f"p{i}", _cell("sae1"), x + rng.normal(size=x.shape) * i, y, split))}
            for i in range(3)]
    scores = PairedScores(**BOOT)
    for a, b in ((0, 1), (1, 2), (0, 2), (2, 0)):
        pa, pb = (predictions.load(layout.predictions_of(rows[i]["result"])) for i in (a, b))
        ref = paired_difference(pa["y"], (pa["pred"], pa["proba"]), (pb["pred"], pb["proba"]), 2,
                                n_resamples=BOOT["resamples"], seed=BOOT["seed"], level=BOOT["level"])
        got = scores.compare(rows[a], rows[b])
        assert (got["difference"], [got["ci_lo"], got["ci_hi"]], got["p_value"], got["verdict"]) == (
            ref["difference"], ref["ci"], ref["p_value"], ref["verdict"])


def _summary_setup(tmp_path):
    """SAE (signal, CV 0.90), hidden states (noise, CV 0.95: best on CV, worst on test), TF-IDF (signal, CV 0.50),
    and SAE / hidden k-sparse probes."""
    x, y, split = _problem()
    noise = np.random.default_rng(1).normal(size=x.shape)
    folder = tmp_path / "probes"
    sae = _write(folder, "sae", _cell("sae1"), x, y, split)
    hidden = _write(folder, "hidden", _cell("hidden"), noise, y, split)
    tfidf = _write(tmp_path / "tfidf", "d", dict(dataset="d", model=None, source="tfidf", layer=None, pooling=None,
                                                  binarize=None), x[:, :3], y, split)
    for path, cv in ((sae, 0.90), (hidden, 0.95), (tfidf, 0.50)):
        _set_cv(path, cv, std=0.001)
    g = grid([folder, tfidf])
    ks = ksparse_table([_ksparse_file(tmp_path / "ks_sae", "sae1", x, y, split),
                        _ksparse_file(tmp_path / "ks_hid", "hidden", noise, y, split)])
    return g, ks


def test_summary_is_ordered_and_headlined_on_cv_never_on_test(tmp_path):
    g, ks = _summary_setup(tmp_path)
    c = comparisons(g, **BOOT)
    s = summary(g, c, ks, **BOOT)
    grid_entries = s.filter(~pl.col("entry").str.contains("k-sparse"))
    assert grid_entries["entry"].to_list() == ["hidden · logreg", "sae · logreg", "tfidf"]
    # Hidden states lead on CV with the lowest test score of the three: the headline names it anyway.
    assert grid_entries["test_macro_f1"][0] < min(grid_entries["test_macro_f1"][1:])
    assert s["cv_macro_f1"].to_list() == sorted(s["cv_macro_f1"].to_list(), reverse=True)
    md = summary_markdown(s, c, ksparse_comparisons(ks, **BOOT), 0.95)
    assert "Highest CV macro F1: **hidden · logreg**" in md and "Highest test" not in md
    assert "CV macro F1" in md.split("## d · m")[1].splitlines()[4]  # the table shows the CV column


def test_every_summary_row_with_a_verdict_has_its_paired_test_including_k_sparse(tmp_path):
    g, ks = _summary_setup(tmp_path)
    s = summary(g, comparisons(g, **BOOT), ks, **BOOT)
    kspars = s.filter(pl.col("entry").str.contains("k-sparse"))
    assert kspars.height == 6  # SAE and hidden, k = 1, 2, 5
    assert kspars.select("sae_minus_this", "ci_lo", "ci_hi", "p_value", "sae_verdict", "band_verdicts").null_count().row(0) \
        == (0,) * 6
    others = s.filter(pl.col("entry") != "sae · logreg")
    assert others["sae_verdict"].null_count() == 0
    # The k-sparse row's test is the paired SAE linear probe − that k-sparse probe.
    row = kspars.filter(pl.col("entry") == "hidden · k-sparse k=5").row(0, named=True)
    sae = g.filter(pl.col("family") == "sae").row(0, named=True)
    k5 = ks.filter((pl.col("family") == "hidden") & (pl.col("k") == 5)).row(0, named=True)
    assert row["sae_minus_this"] == paired(sae, k5, **BOOT)["difference"]


def test_symmetric_ksparse_baseline_is_the_hidden_ranking_with_the_better_cv(tmp_path):
    x, y, split = _problem()
    files = [_ksparse_file(tmp_path / "sae", "sae1", x, y, split),
             # mean_diff puts the hidden signal dimension last, normalized_mean_diff first (better CV at small k).
             _ksparse_file(tmp_path / "hid", "hidden", x[:, ::-1], y, split),
             _ksparse_file(tmp_path / "hid", "hidden", x, y, split, ranking="normalized_mean_diff")]
    df = ksparse_table(files)
    c = ksparse_comparisons(df, **BOOT)
    at1 = {r["ranking"]: r for r in c.filter(pl.col("k") == 1).iter_rows(named=True)}
    assert set(at1) == {"best", "mean_diff"}  # normalized_mean_diff: no SAE probe on that ranking
    assert at1["best"]["hidden"].endswith("k=1 normalized_mean_diff") and at1["mean_diff"]["hidden"].endswith("k=1 mean_diff")
    hid = df.filter((pl.col("family") == "hidden") & (pl.col("k") == 1))
    assert at1["best"]["hidden_cv_macro_f1"] == hid["cv_macro_f1"].max() > hid["cv_macro_f1"].min()
    # Against the stronger baseline SAE no longer wins at k = 1; the summary's k-sparse counts use that row.
    assert at1["mean_diff"]["verdict"] == "win" and at1["best"]["verdict"] == "tie"
    md = summary_markdown(summary(pl.DataFrame(schema=dict(GRID_SCHEMA)), comparisons(pl.DataFrame(schema=dict(GRID_SCHEMA)),
                                  **BOOT), None, **BOOT), pl.DataFrame(schema=COMPARISON_SCHEMA), c, 0.95)
    counts = md.split("### k-sparse")[1]
    first = next(line for line in counts.splitlines() if line.startswith("| 1 "))
    assert [cell.strip() for cell in first.strip("|").split("|")][:4] == ["1", "0", "1", "0"]  # k, win, tie, loss


def test_binarize_vs_ksparse_matches_without_fallback_and_carries_flags(tmp_path):
    x, y, split = _problem()
    df = ksparse_table([_ksparse_file(tmp_path / "sae", "sae1", x, y, split),
                        # A degenerate k-sparse probe: no feature ever active, one class predicted.
                        _ksparse_file(tmp_path / "sae", "sae1", np.zeros_like(x), y, split, pooling="max")])
    folder = tmp_path / "grid"
    _write(folder, "mean__gt1", _cell("sae1", binarize="gt1"), sp.csr_matrix((x > 1.0).astype(float)), y, split)
    _write(folder, "mean__gt0", _cell("sae1", binarize="gt0"), sp.csr_matrix((x > 0.0).astype(float)), y, split)
    _write(folder, "max__gt3", _cell("sae1", pooling="max", binarize="gt3"), sp.csr_matrix((x > 3.0).astype(float)),
           y, split)
    g = grid([folder])
    active = dict(zip(g["binarize"].to_list(), g["mean_active_features"].to_list(), strict=True))
    assert 2 < active[1.0] < 5 and 5 < active[0.0] < 7 and active[3.0] < 1
    versus = binarize_vs_ksparse(g, df, **BOOT)
    by = {t: versus.filter(pl.col("threshold") == t) for t in (0.0, 1.0, 3.0)}
    assert by[1.0].filter("matched")["k"].to_list() == [5] and by[1.0]["matched_note"].null_count() == 3
    # 5-7 active features per document and ks up to 5: no k matches (no fallback to the largest), and it says so.
    assert not by[0.0]["matched"].any()
    assert by[0.0]["matched_note"].unique().to_list() == [f"no k ≥ {active[0.0]:.4g} run (largest 5)"]
    # Flags as in the grid: the degenerate binarized probe and the degenerate k-sparse probes are marked.
    assert by[3.0]["binarized_flag"].unique().to_list() == [g.filter(pl.col("binarize") == 3.0)["flag"][0]]
    assert "few_active_features" in by[3.0]["binarized_flag"][0]
    assert by[3.0]["ksparse_flag"].to_list() == df.filter(pl.col("pooling") == "max")["flag"].to_list()
    assert all("one_class_predicted" in f for f in by[3.0]["ksparse_flag"])


def test_ksparse_markdown_keeps_sae_rows_at_ks_hidden_states_cannot_reach(tmp_path):
    x, y, split = _problem()
    # Hidden states of width 5: their k stops at 5; the SAE runs k = 10 as well.
    df = ksparse_table([_ksparse_file(tmp_path / "sae", "sae1", x, y, split, ks=(1, 2, 5, 10)),
                        _ksparse_file(tmp_path / "hid", "hidden", x[:, ::-1][:, :5], y, split, ks=(1, 2, 5))])
    c = ksparse_comparisons(df, **BOOT)
    assert 10 not in c["k"].to_list()
    md = ksparse_markdown(df, c)
    for ranking in ("best", "mean_diff"):
        section = md.split(f"## d · m · {ranking}")[1].split("## ")[0]
        row = next(line for line in section.splitlines() if line.startswith("| 10 "))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        sae10 = df.filter((pl.col("family") == "sae") & (pl.col("k") == 10)).row(0, named=True)
        assert cells[1].startswith(f"{sae10['test_macro_f1']:.3f} [") and cells[2] == "-" and cells[-1] == "-"
