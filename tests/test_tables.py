"""Tables: best configurations are chosen on CV score, never on test; stage timing summary."""

import json

import numpy as np
import polars as pl
import pytest

from saeprobe.io import write_json
from saeprobe.tables import MIN_ACTIVE_FEATURES, best, flags, grid, markdown, stage_times, with_sae_attributes


def _result(source, cv, test, layer=1, pooling="sum", binarize="raw", model="m"):
    return {"dataset": "d", "model": None if source == "tfidf" else model, "source": source, "layer": layer,
            "pooling": pooling, "binarize": binarize, "C": 1.0, "cv_macro_f1": cv, "cv_macro_f1_std": 0.01,
            "cv_folds": 5, "n_train": 10, "n_features": 5, "test": {"macro_f1": test, "accuracy": test, "auroc": None, "n": 4}}


def test_best_is_chosen_on_cv_not_test(tmp_path):
    results = [
        _result("sae1", cv=0.80, test=0.60, pooling="sum"),
        _result("sae1", cv=0.70, test=0.95, pooling="max"),  # better on test, worse on CV: must not win
        _result("hidden", cv=0.75, test=0.70, pooling="last"),
        _result("hidden", cv=0.60, test=0.90, pooling="mean"),
        _result("tfidf", cv=0.65, test=0.66, layer=None, pooling=None, binarize=None),
    ]
    paths = []
    for i, r in enumerate(results):
        write_json(tmp_path / f"{i}.json", r)
        paths.append(tmp_path / f"{i}.json")
    g = grid(paths)
    assert g.height == 5 and set(g["family"]) == {"sae", "hidden", "tfidf"}
    b = best(g)
    assert b["family"].to_list() == ["sae", "hidden", "tfidf"]
    assert b["pooling"].to_list()[:2] == ["sum", "last"]
    assert b["test_macro_f1"].to_list() == [0.60, 0.70, 0.66]
    md = markdown(b)
    assert md.splitlines()[0].startswith("| dataset") and "sae1" in md
    # MOSAIC's selection on test, in its own table, picks the test-optimal rows.
    mosaic = best(g, "test")
    assert mosaic["selected_on"].to_list() == ["test"] * 3
    assert mosaic["pooling"].to_list()[:2] == ["max", "mean"]
    assert mosaic["test_macro_f1"].to_list() == [0.95, 0.90, 0.66]
    # Binarization as the config writes it: null (raw) or the threshold.
    assert g["binarize"].dtype == pl.Float64 and g["binarize"].null_count() == g.height


def test_baseline_rows_are_their_own_probe_kind(tmp_path):
    rows = [_result("hidden", cv=0.70, test=0.70), {**_result("hidden", cv=0.90, test=0.50), "baseline": "knn",
                                                     "params": {"n_neighbors": 15}, "C": None}]
    paths = []
    for i, r in enumerate(rows):
        write_json(tmp_path / f"{i}.json", r)
        paths.append(tmp_path / f"{i}.json")
    g = grid(paths)
    assert g["probe"].to_list() == ["logreg", "knn"]
    assert json.loads(g.filter(pl.col("probe") == "knn")["params"][0]) == {"n_neighbors": 15}
    # A better-CV baseline does not replace the linear probe: best keeps one row per probe kind.
    assert sorted(best(g)["probe"].to_list()) == ["knn", "logreg"]


def test_flags_mark_degenerate_rows():
    assert flags("sae", MIN_ACTIVE_FEATURES - 0.5, 2, 0.8, 0.4) == "few_active_features"
    assert flags("hidden", 0.5, 2, 0.8, 0.4) is None  # dense hidden states are never "few active"
    assert flags("sae", 30.0, 1, 0.4, 0.4) == "one_class_predicted,at_or_below_majority"
    assert flags("sae", 30.0, 2, 0.81, 0.4) is None


def test_stage_times(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rule, name, s in (("pool", "a", 2.0), ("pool", "b", 3.0), ("fit_probe", "c", 1.0)):
        (tmp_path / rule).mkdir(exist_ok=True)
        (tmp_path / rule / f"{name}.tsv").write_text(header + f"{s}\t0:00:0{int(s)}\t100.0\t1\t1\t1\t0\t0\t50\t1\n")
    t = stage_times(tmp_path)
    assert t.row(0, named=True) == {"stage": "pool", "jobs": 2, "total_s": 5.0, "longest_s": 3.0, "peak_rss_mb": 100.0}
    assert json.dumps(t.to_dicts())  # plain types
    assert stage_times(tmp_path / "none").height == 0


def test_grid_splits_mean_and_std_over_redrawn_splits(tmp_path):
    from saeprobe.cell_tables import frame, write_parquet
    from saeprobe.tables import SPLIT_SCHEMA, grid_splits

    folder = tmp_path / "unit"
    folder.mkdir()
    cell = dict(model="m", dataset="d", source="s", layer=1, pooling="mean", binarize="gt1")
    rows = [dict(split_seed=s, C=1.0, cv_macro_f1=0.7, test_macro_f1=f, test_accuracy=f, test_auroc=None, n_train=80,
                 n_test=20) for s, f in ((1, 0.6), (2, 0.8))]
    write_parquet(frame(rows, cell, SPLIT_SCHEMA), folder / "mean__gt1.splits.parquet")
    (folder / "mean__gt1.json").write_text("{}")  # the cell's own result is not a split file
    out = grid_splits([folder]).row(0, named=True)
    assert out["splits"] == 2 and out["test_macro_f1_mean"] == pytest.approx(0.7)
    assert out["test_macro_f1_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1)) and out["binarize"] == 1.0


def test_grid_splits_include_the_datasets_own_split(tmp_path):
    """T11: the dataset's own split is one of grid_splits' rows (split_seed null, counted in `splits`), as
    config/README.md says; it is not refitted (fit_probe's result on it is reused)."""
    from saeprobe.cell_tables import frame, write_parquet
    from saeprobe.probes import fit_on_splits, fit_probe
    from saeprobe.tables import SPLIT_SCHEMA, grid_splits

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 160)
    x = rng.normal(size=(160, 4)) + np.eye(2, 4)[y]
    own_split = np.where(np.arange(160) < 120, "train", "test")
    redrawn = {seed: np.random.default_rng(seed).permutation(own_split) for seed in (1, 2)}
    kw = dict(Cs=[0.1, 1.0], cv_folds=3, n_classes=2, seed=0)
    own, _, _ = fit_probe(x, y, own_split, **kw)
    rows = fit_on_splits(x, y, redrawn, own=own, **kw)
    assert [r["split_seed"] for r in rows] == [None, 1, 2]
    assert rows[0]["test_macro_f1"] == own["test"]["macro_f1"] and rows[0]["C"] == own["C"]
    folder = tmp_path / "unit"
    folder.mkdir()
    cell = dict(model="m", dataset="d", source="s", layer=1, pooling="mean", binarize="raw")
    write_parquet(frame(rows, cell, SPLIT_SCHEMA), folder / "mean__raw.splits.parquet")
    out = grid_splits([folder]).row(0, named=True)
    assert out["splits"] == 3 and out["own_split"] is True
    assert out["test_macro_f1_own"] == own["test"]["macro_f1"]
    assert out["test_macro_f1_mean"] == pytest.approx(np.mean([r["test_macro_f1"] for r in rows]))


def test_sae_attributes_are_joined_on_source_after_it_and_nulls_elsewhere():
    df = pl.DataFrame({"dataset": ["d"] * 4, "source": ["s_w64_k4", "hidden", "tfidf", "scope"], "test_macro_f1": [.1, .2, .3, .4]})
    attrs = {"s_w64_k4": {"sae_architecture": "batchtopk", "sae_width": 64, "sae_k": 4.0, "sae_sparsity": 4.0},
             "scope": {"sae_architecture": None, "sae_width": 16384, "sae_k": None, "sae_sparsity": None},
             "unused": {"sae_architecture": "topk", "sae_width": 8, "sae_k": 2.0, "sae_sparsity": 2.0}}
    out = with_sae_attributes(df, attrs)
    assert out.columns == ["dataset", "source", "sae_architecture", "sae_width", "sae_k", "sae_sparsity", "test_macro_f1"]
    assert out.schema["sae_architecture"] == pl.String and out.schema["sae_width"] == pl.Int64
    assert out.schema["sae_k"] == pl.Float64 and out.schema["sae_sparsity"] == pl.Float64
    assert out.row(0, named=True) == {"dataset": "d", "source": "s_w64_k4", "sae_architecture": "batchtopk",
                                      "sae_width": 64, "sae_k": 4.0, "sae_sparsity": 4.0, "test_macro_f1": .1}
    assert out.filter(pl.col("source").is_in(["hidden", "tfidf"])).select(pl.all().exclude("dataset", "source",
                                                                                          "test_macro_f1")).null_count().row(0) == (2, 2, 2, 2)
    assert out["sae_width"].to_list() == [64, None, None, 16384]
    assert out["test_macro_f1"].to_list() == [.1, .2, .3, .4]  # row order kept
    assert with_sae_attributes(out, attrs).equals(out)  # idempotent
    assert with_sae_attributes(df.clear(), attrs).columns == out.columns
    with pytest.raises(KeyError, match="source"):
        with_sae_attributes(df.drop("source"), attrs)


def _grid_of(tmp_path, results):
    tmp_path.mkdir(exist_ok=True)
    for i, r in enumerate(results):
        write_json(tmp_path / f"{i}.json", r)
    return grid([tmp_path / f"{i}.json" for i in range(len(results))])


def test_best_picks_the_simplest_configuration_within_one_standard_error(tmp_path):
    # CV SE = std / sqrt(folds) = 0.04 / 2 = 0.02: the 1024-wide SAE (CV 0.80) is not distinguishable from
    # the 64-wide one (CV 0.79); the 64-wide one is simpler (fewer features) and is chosen, its test score whatever it is.
    wide = {**_result("sae_wide", cv=0.80, test=0.90), "cv_macro_f1_std": 0.04, "cv_folds": 4, "n_features": 1024}
    narrow = {**_result("sae_narrow", cv=0.79, test=0.60), "cv_macro_f1_std": 0.04, "cv_folds": 4, "n_features": 64}
    far = {**_result("sae_tiny", cv=0.70, test=0.99), "cv_macro_f1_std": 0.04, "cv_folds": 4, "n_features": 16}
    g = _grid_of(tmp_path, [wide, narrow, far])
    # The choice does not depend on row order.
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1]):
        assert best(g[order])["source"].to_list() == ["sae_narrow"]
    assert g["cv_macro_f1_se"].to_list() == pytest.approx([0.02] * 3)
    picked = best(g).row(0, named=True)
    assert (picked["source"], picked["band_size"], picked["cv_macro_f1_se"]) == ("sae_narrow", 2, pytest.approx(0.02))
    # Equal feature counts: fewer active features per document is simpler.
    dense = {**wide, "source": "sae_a", "n_features": 64, "mean_active_features": 30.0}
    sparse_codes = {**narrow, "source": "sae_b", "n_features": 64, "mean_active_features": 3.0}
    g2 = _grid_of(tmp_path / "two", [dense, sparse_codes])
    assert best(g2)["source"].to_list() == ["sae_b"] and best(g2[[1, 0]])["source"].to_list() == ["sae_b"]
    # Outside the band (SE 0.001): the best CV row is chosen, as before.
    tight = [{**r, "cv_macro_f1_std": 0.002} for r in (wide, narrow)]
    assert best(_grid_of(tmp_path / "tight", tight))["source"].to_list() == ["sae_wide"]
    # MOSAIC's test selection keeps the test argmax (its optimism is what that table shows).
    assert best(g, "test")["source"].to_list() == ["sae_tiny"] and best(g, "test")["band_size"].null_count() == 1


def test_cv_standard_error_prefers_the_stored_key_and_names_a_file_without_either(tmp_path):
    from saeprobe.errors import DataError

    stored = {**_result("sae1", cv=0.8, test=0.8), "cv_macro_f1_se": 0.123}
    assert _grid_of(tmp_path, [stored])["cv_macro_f1_se"].to_list() == [0.123]
    bare = {k: v for k, v in _result("sae1", cv=0.8, test=0.8).items() if k != "cv_folds"}
    write_json(tmp_path / "bare.json", bare)
    with pytest.raises(DataError, match=r"bare\.json: no 'cv_macro_f1_se'"):
        grid([tmp_path / "bare.json"])
