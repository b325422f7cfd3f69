"""Cross-lingual transfer matrices and training-set size sweeps (saeprobe.transfer, saeprobe.sweep and their tables).

Synthetic features whose answer is known: feature 0 separates the classes with the same sign in
'en' and 'fr' and the opposite sign in 'de', so a probe trained on en transfers to fr and fails
on de. Then one snakemake-CLI run on a tiny random Gemma 2 and a multilingual subset.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import yaml

from saeprobe.errors import DataError
from saeprobe.pooling import save_pooled
from saeprobe.cell_tables import frame, read_report, write_parquet
from saeprobe.pooling import load_cell
from saeprobe.sweep import subsample, subsample_id, sweep, sweep_features, sweep_tfidf
from saeprobe.sweep_tables import SWEEP_SCHEMA, sweep_markdown, sweep_summary, sweep_table
from saeprobe.transfer import transfer_matrix
from saeprobe.transfer_tables import TRANSFER_SCHEMA, transfer_markdown, transfer_table
from tests.conftest import DATA, ROOT

PROBE = {"Cs": [0.1, 1.0], "cv_folds": 3}
CELL = {"model": "m", "dataset": "d", "source": "hidden", "layer": 1, "pooling": "mean", "binarize": "raw"}


def _multilingual(seed=0, per_lang=100, langs=("en", "de", "fr"), flipped=("de",), d=6):
    """Binary labels; feature 0 = ±2 by class, sign flipped in the `flipped` languages."""
    rng = np.random.default_rng(seed)
    n = per_lang * len(langs)
    lang = np.repeat(np.array(langs, dtype=object), per_lang)
    y = rng.integers(0, 2, n)
    sign = np.where(np.isin(lang, flipped), -1.0, 1.0)
    x = rng.normal(size=(n, d))
    x[:, 0] += 2.0 * sign * (2 * y - 1)
    split = np.tile(np.array(["train"] * (per_lang * 7 // 10) + ["test"] * (per_lang - per_lang * 7 // 10)), len(langs))
    return x, y, split, lang


def _matrix(rows):
    return {(r["train_lang"], r["test_lang"]): r for r in rows}


# --------------------------------------------------------------------------- transfer


def test_flipped_language_transfers_badly_and_matrix_is_square():
    x, y, split, lang = _multilingual()
    rows, report = transfer_matrix(x, y, split, lang, n_classes=2, probe=PROBE, seed=0)
    m = _matrix(rows)
    assert len(rows) == 9 and set(m) == {(a, b) for a in ("de", "en", "fr") for b in ("de", "en", "fr")}
    for a in ("en", "de", "fr"):
        assert m[(a, a)]["macro_f1"] > 0.85, a  # in-language
    assert m[("en", "fr")]["macro_f1"] > 0.85 and m[("fr", "en")]["macro_f1"] > 0.85
    assert m[("en", "de")]["macro_f1"] < 0.2 and m[("de", "en")]["macro_f1"] < 0.2
    assert all(r["n_train"] == 70 and r["n_test"] == 30 for r in rows)
    assert report["n_train_langs"] == 3 and report["skipped_train_langs"] == {}
    # One probe per train language: its C and CV score are the same in every column of its row.
    for a in ("en", "de", "fr"):
        assert len({(m[(a, b)]["C"], m[(a, b)]["cv_macro_f1"]) for b in ("en", "de", "fr")}) == 1
    md = transfer_markdown(frame(rows, CELL, TRANSFER_SCHEMA))
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0].split("|")[2:5] == [" de    ", " en    ", " fr    "]
    assert len(table) == 2 + 3 + 1  # header, rule, 3 train languages, the majority-class row
    assert table[-1].startswith("| majority class")
    assert all(r["majority_macro_f1"] < 0.5 and r["flag"] in (None, "at_or_below_majority") for r in rows)
    assert f"{m[('en', 'de')]['macro_f1']:.3f}" in table[3]


@pytest.mark.parametrize("sparse", [False, True])
def test_selection_sees_only_the_train_language_train_rows(sparse):
    x, y, split, lang = _multilingual(seed=1)
    x = np.abs(x) if sparse else x
    xs = sp.csr_matrix(x) if sparse else x
    rows, _ = transfer_matrix(xs, y, split, lang, n_classes=2, probe=PROBE, seed=0)
    # Scramble every test row and every train row of de and fr: en's probe must not change.
    rng = np.random.default_rng(5)
    x2, y2 = x.copy(), y.copy()
    touched = (split == "test") | (lang != "en")
    x2[touched] = np.abs(rng.normal(size=(touched.sum(), x.shape[1]))) * 50
    y2[touched] = rng.permutation(y2[touched])
    rows2, _ = transfer_matrix(sp.csr_matrix(x2) if sparse else x2, y2, split, lang, n_classes=2, probe=PROBE, seed=0)
    m, m2 = _matrix(rows), _matrix(rows2)
    assert (m[("en", "en")]["C"], m[("en", "en")]["cv_macro_f1"]) == (m2[("en", "en")]["C"], m2[("en", "en")]["cv_macro_f1"])
    assert m[("de", "de")]["cv_macro_f1"] != m2[("de", "de")]["cv_macro_f1"]  # de's train rows did change
    assert m[("en", "en")]["macro_f1"] != m2[("en", "en")]["macro_f1"]  # en's test rows changed


def test_languages_that_cannot_train_are_skipped_and_counted():
    x, y, split, lang = _multilingual(langs=("en", "de", "xx", "yy", "zz"))
    split = split.copy()
    y = y.copy()
    split[lang == "xx"] = "test"  # xx: no train rows
    y[(lang == "yy") & (split == "train")] = 1  # yy: a single class in train
    zz_train = np.flatnonzero((lang == "zz") & (split == "train"))
    y[zz_train] = 0
    y[zz_train[0]] = 1  # zz: label 1 has one train example
    lang = lang.copy()
    lang[:3] = None  # three rows without a language
    rows, report = transfer_matrix(x, y, split, lang, n_classes=2, probe=PROBE, seed=0)
    assert set(report["skipped_train_langs"]) == {"xx", "yy", "zz"}
    assert "no train rows" in report["skipped_train_langs"]["xx"]
    assert "single class" in report["skipped_train_langs"]["yy"]
    assert "single train example" in report["skipped_train_langs"]["zz"]
    assert report["n_rows_without_lang"] == 3 and report["n_train_langs"] == 2 and report["n_test_langs"] == 5
    assert {r["train_lang"] for r in rows} == {"en", "de"}
    assert {r["test_lang"] for r in rows} == {"en", "de", "xx", "yy", "zz"}
    assert _matrix(rows)[("en", "en")]["n_train"] == 67  # 3 en train rows lost their language


def test_transfer_errors():
    x, y, split, lang = _multilingual()
    with pytest.raises(DataError, match="no language can train"):
        transfer_matrix(x, np.zeros_like(y), split, lang, n_classes=2, probe=PROBE, seed=0)
    with pytest.raises(DataError, match="lang column is empty"):
        transfer_matrix(x, y, split, [None] * len(y), n_classes=2, probe=PROBE, seed=0)
    with pytest.raises(DataError, match="no language has test rows"):
        transfer_matrix(x, y, np.full(len(y), "train"), lang, n_classes=2, probe=PROBE, seed=0)
    with pytest.raises(DataError, match="features have 300 rows, labels 299"):
        transfer_matrix(x, y[:-1], split, lang, n_classes=2, probe=PROBE, seed=0)


# --------------------------------------------------------------------------- sweep subsamples


def _labels(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat([0, 1, 2], [50, 30, 8]))  # class 2 is small
    split = np.where(rng.random(len(y)) < 0.75, "train", "test")
    return y, split


def test_subsample_is_stratified_capped_and_train_only():
    y, split = _labels()
    counts = np.bincount(y[split == "train"])
    for n in (2, 5, 20, 1000):
        mask = subsample(y, split, n, 0, seed=42)
        assert not mask[split != "train"].any()
        np.testing.assert_array_equal(np.bincount(y[mask], minlength=3), np.minimum(counts, n))
    np.testing.assert_array_equal(subsample(y, split, None, 3, seed=42), split == "train")


def test_subsample_is_seeded_nested_and_varies_by_repeat():
    y, split = _labels()
    a = subsample(y, split, 5, 0, seed=42)
    np.testing.assert_array_equal(a, subsample(y, split, 5, 0, seed=42))  # deterministic
    assert not np.array_equal(a, subsample(y, split, 5, 1, seed=42))  # another repeat, another draw
    assert not np.array_equal(a, subsample(y, split, 5, 0, seed=7))  # another seed, another draw
    for r in range(3):  # nested within a repeat
        small, big = subsample(y, split, 3, r, seed=42), subsample(y, split, 10, r, seed=42)
        assert (big | small).sum() == big.sum()
    with pytest.raises(ValueError, match="n_per_class"):
        subsample(y, split, 0, 0, seed=42)


def test_sweep_uses_the_same_documents_for_every_source():
    rng = np.random.default_rng(0)
    y, split = _labels()
    dense = rng.normal(size=(len(y), 8)) + np.eye(3, 8)[y] * 2
    sparse = sp.csr_matrix(np.maximum(rng.normal(size=(len(y), 20)), 0))
    texts = [f"word{c} filler {i}" for i, c in enumerate(y)]
    kw = dict(sizes=[4, None], repeats=2, n_classes=3, probe=PROBE, seed=3)
    a = sweep_features(dense, y, split, **kw)
    b = sweep_features(sparse, y, split, **kw)
    c = sweep_tfidf(texts, y, split, tfidf={"enabled": True, "ngram_max": 1, "max_features": None,
                                            "stop_words": None, "min_df": 1}, **kw)
    key = [(r["n_per_class"], r["repeat"], r["n_train"], r["subsample"]) for r in a]
    assert key == [(r["n_per_class"], r["repeat"], r["n_train"], r["subsample"]) for r in b]
    assert key == [(r["n_per_class"], r["repeat"], r["n_train"], r["subsample"]) for r in c]
    n_test = int((split == "test").sum())
    assert all(r["n_test"] == n_test for r in a + b + c)  # always the full test split
    assert [r["n_train"] for r in a[:2]] == [12, 12]
    assert min(r["test_macro_f1"] for r in c) == 1.0  # the class word gives TF-IDF the answer
    assert a[-1]["subsample"] == a[-2]["subsample"]  # whole split: the same in every repeat
    assert a == sweep_features(dense, y, split, **kw)  # deterministic


def test_sweep_fits_each_distinct_subsample_once():
    y, split = _labels()
    seen = []

    def fit(s, labels):
        seen.append(s.copy())
        assert set(s) <= {"train", "test", "unused"} and (s == "test").sum() == (split == "test").sum()
        np.testing.assert_array_equal(labels, y)  # the size regime fits on the true labels
        return {"C": 1.0, "test": {"n": int((s == "test").sum()), "macro_f1": 0.5, "accuracy": 0.5}}

    counts = np.bincount(y[split == "train"])
    rows = sweep(fit, y, split, sizes=[3, int(counts.max()), None], repeats=2, seed=0)
    assert len(rows) == 6
    assert len(seen) == 2 + 1  # size 3 twice; the capped size equals the whole split, fitted once
    assert rows[2]["subsample"] == rows[4]["subsample"] and rows[2]["n_per_class"] == counts.max()


def test_sweep_errors_name_the_size(caplog):
    y, split = _labels()
    with pytest.raises(DataError, match="needs test rows"):
        sweep(lambda s: {}, y, np.full(len(y), "train"), sizes=[4], repeats=1, seed=0)
    y1 = y.copy()
    y1[np.flatnonzero((y == 2) & (split == "train"))[1:]] = 0  # class 2 keeps one train example
    report = {}
    with caplog.at_level(logging.WARNING, logger="saeprobe"):  # a draw that cannot be fitted is skipped, not fatal
        assert sweep(lambda s: {}, y1, split, sizes=[4], repeats=1, seed=0, report=report) == []
    assert "sweep size 4 per class, repeat 0" in caplog.text and "label 2 has a single train example" in caplog.text
    assert report["n_skipped_draws"] == 1 and "label 2 has a single train example" in report["skipped_draws"][0]["reason"]
    assert "drop 4 from sweep.sizes" in caplog.text


# --------------------------------------------------------------------------- outputs and tables


def test_tables_from_written_cells(tmp_path):
    x, y, split, lang = _multilingual()
    rows, report = transfer_matrix(x, y, split, lang, n_classes=2, probe=PROBE, seed=0)
    paths = []
    for source in ("hidden", "sae1"):
        p = tmp_path / f"{source}.parquet"
        write_parquet(frame(rows, {**CELL, "source": source}, TRANSFER_SCHEMA), p, report)
        paths.append(p)
    assert read_report(paths[0])["languages"] == ["de", "en", "fr"]
    df = transfer_table(paths)
    assert df.height == 18 and set(df["family"]) == {"hidden", "sae"}
    assert transfer_markdown(df).count("## d · m ·") == 2

    srows = [{"n_per_class": n, "repeat": r, "n_train": 2 * (n or 50), "n_test": 10, "test_macro_f1": f,
              "test_accuracy": f, "C": 1.0, "subsample": subsample_id(np.ones(3, bool))}
             for n, r, f in [(4, 0, 0.5), (4, 1, 0.7), (None, 0, 0.9), (None, 1, 0.9)]]
    p = tmp_path / "sweep.parquet"
    write_parquet(frame(srows, CELL, SWEEP_SCHEMA), p)
    tf = tmp_path / "tfidf.parquet"
    write_parquet(frame(srows[:2], {"dataset": "d", "source": "tfidf"}, SWEEP_SCHEMA), tf)
    sw = sweep_table([p, tf])
    summary = sweep_summary(sw).filter(pl.col("family") == "hidden")
    assert summary["mean"].to_list() == pytest.approx([0.6, 0.9])
    assert summary["std"].to_list()[0] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    md = sweep_markdown(sw)
    assert "| 4 " in md and "| all " in md
    assert f"0.600 ± {np.std([0.5, 0.7], ddof=1):.3f}" in md and "0.900 ± 0.000" in md
    assert "| tfidf  | -     | tfidf  | -     | -       | -        |" in md


def test_load_cell_binarizes_and_checks_row_count(tmp_path):
    save_pooled(tmp_path / "ok" / "sum.npz", sp.csr_matrix(np.array([[0.5, 2.0], [0.0, 1.5], [3.0, 0.0]])))
    x = load_cell(tmp_path / "ok", "sum", "gt1", 3)
    np.testing.assert_array_equal(x.toarray(), [[0, 1], [0, 1], [1, 0]])  # binarized > 1
    save_pooled(tmp_path / "bad" / "mean.npz", np.zeros((2, 4), np.float32))
    with pytest.raises(DataError, match="bad/mean.npz: 2 rows but the dataset has 3 documents"):
        load_cell(tmp_path / "bad", "mean", "raw", 3)


# --------------------------------------------------------------------------- workflow


@pytest.mark.workflow
def test_workflow_builds_transfer_and_sweep_tables(tmp_path, tiny_gemma2):
    src = pl.read_parquet(DATA / "tweet_sentiment_multilingual.parquet")
    small = pl.concat([src.filter((pl.col("lang") == lg) & (pl.col("split") == s)).group_by("label", maintain_order=True)
                       .head(n // 3) for lg in ("en", "de", "fr") for s, n in (("train", 42), ("test", 18))])
    small.write_parquet(tmp_path / "tweets.parquet")
    cfg = {
        "seed": 0, "device": "cpu",
        "datasets": {"tweets": {"path": str(tmp_path / "tweets.parquet"), "lang_column": "lang", "grid": False}},
        "models": {"tiny_gemma2": {"path": str(tiny_gemma2), "layers": [1], "max_length": 48, "token_budget": 2048}},
        "probe": {"Cs": [0.1, 1.0], "cv_folds": 3},
        "transfer": {"datasets": ["tweets"], "hidden_poolings": ["mean"]},
        "sweep": {"datasets": ["tweets"], "sizes": [4, None], "repeats": 2, "hidden_poolings": ["mean"]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "--show-failed-logs",
           "results/tables/transfer.md", "results/tables/sweep.md"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    tables = tmp_path / "results" / "tables"
    transfer = pl.read_parquet(tables / "transfer.parquet")
    assert transfer.height == 9 and set(transfer["train_lang"]) == {"de", "en", "fr"}
    assert (transfer["n_train"] == 42).all() and (transfer["n_test"] == 18).all()
    assert transfer["macro_f1"].is_between(0, 1).all() and set(transfer["family"]) == {"hidden"}
    md = (tables / "transfer.md").read_text()
    assert "## tweets · tiny_gemma2 · hidden · layer 1 · mean · raw" in md and "| train \\ test" in md
    assert "| majority class" in md  # each test language's majority-class score under its matrix
    sweeps = pl.read_parquet(tables / "sweep.parquet")
    assert set(sweeps["source"]) == {"hidden", "tfidf"} and sweeps.height == 2 * 2 * 2
    small_rows = sweeps.filter(pl.col("n_per_class") == 4)
    assert (small_rows["n_train"] == 12).all()
    ids = small_rows.group_by("repeat").agg(pl.col("subsample").n_unique())["subsample"]
    assert (ids == 1).all()  # hidden states and TF-IDF saw the same documents
    assert (sweeps.filter(pl.col("n_per_class").is_null())["n_train"] == 126).all()
    assert "## tweets" in (tables / "sweep.md").read_text() and Path(tables / "sweep.csv").exists()
