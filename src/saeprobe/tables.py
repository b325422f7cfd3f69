"""Aggregation of probe results into the run's tables (polars).

- ``grid``: one row per probe (model × dataset × feature source × layer × pooling ×
  binarization × probe kind, plus TF-IDF per dataset) with CV and test scores, the test
  scores' bootstrap intervals, the majority-class and chance scores of the test split, and a
  ``flag`` on degenerate rows.
- ``best``: per dataset, model, family and probe kind the configuration chosen on the **CV**
  macro F1 (train split) by the one-standard-error rule (:func:`cv_bands`), never on test; the
  test macro F1 of the chosen configuration is reported, with the paired comparisons of
  :mod:`saeprobe.comparisons`.
- ``best_on_test``: the test-score argmax (MOSAIC's procedure), in its own table, so the
  optimism of test-set selection is visible and never read first.

Every "best" configuration of saeprobe (this table, the comparisons, the summary, the k-sparse
tables, the figures, the top features, the SAE table, the behaviour table) is chosen by
:func:`cv_bands` / :func:`cv_choice`: one function, one rule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from saeprobe import layout
from saeprobe.errors import DataError
from saeprobe.grid import HIDDEN, parse_binarize
from saeprobe.io import atomic_path, folder_files, read_json
from saeprobe.selection import one_se_band, one_se_choice, standard_error

log = logging.getLogger("saeprobe")

GRID_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "model": pl.String, "family": pl.String, "probe": pl.String, "source": pl.String,
    "layer": pl.Int64, "pooling": pl.String, "binarize": pl.Float64, "C": pl.Float64, "params": pl.String,
    "cv_macro_f1": pl.Float64, "cv_macro_f1_std": pl.Float64, "cv_macro_f1_se": pl.Float64,
    "test_macro_f1": pl.Float64, "test_macro_f1_lo": pl.Float64, "test_macro_f1_hi": pl.Float64,
    "test_accuracy": pl.Float64, "test_accuracy_lo": pl.Float64, "test_accuracy_hi": pl.Float64,
    "test_auroc": pl.Float64, "test_auroc_lo": pl.Float64, "test_auroc_hi": pl.Float64,
    "majority_macro_f1": pl.Float64, "majority_accuracy": pl.Float64, "chance_macro_f1": pl.Float64,
    "validation_macro_f1": pl.Float64, "n_train": pl.Int64, "n_test": pl.Int64, "n_features": pl.Int64,
    "mean_active_features": pl.Float64, "predicted_classes": pl.Int64, "test_missing_classes": pl.Int64,
    "flag": pl.String, "result": pl.String,
}
GRID_COLUMNS = list(GRID_SCHEMA)

# A probe whose documents have fewer active features than this on average is flagged (its
# features are degenerate: e.g. mean pooling binarized at > 1.0 leaves 0.09-1.25 per document).
MIN_ACTIVE_FEATURES = 2.0
PROBE_ORDER = {"logreg": 0, "pca_logreg": 1, "knn": 2, "hist_gradient_boosting": 3, "mlp": 4, "decision_tree": 5}
FAMILY_ORDER = {"sae": 0, "hidden": 1, "tfidf": 2}


def flags(family: str, mean_active: float | None, predicted_classes: int | None, test_f1: float | None,
          majority_f1: float | None, *, check_active: bool = True) -> str | None:
    """Why a probe's row should not be read as a result, comma-separated, or None.

    - ``few_active_features``: SAE features with fewer than :data:`MIN_ACTIVE_FEATURES` active
      per train document on average (``check_active=False``: not checked, e.g. for a k-sparse
      probe, whose k bounds its active features by construction);
    - ``one_class_predicted``: the probe predicts a single class on the test split;
    - ``at_or_below_majority``: its test macro F1 is not above the majority-class predictor's.
    """
    out = []
    if check_active and family == "sae" and mean_active is not None and mean_active < MIN_ACTIVE_FEATURES:
        out.append("few_active_features")
    if predicted_classes == 1:
        out.append("one_class_predicted")
    if test_f1 is not None and majority_f1 is not None and test_f1 <= majority_f1:
        out.append("at_or_below_majority")
    return ",".join(out) or None


def cv_standard_error(result: dict[str, Any], where: str) -> float:
    """Standard error of a result's CV macro F1: its ``cv_macro_f1_se``, or, in results written
    before that key existed, ``cv_macro_f1_std / sqrt(cv_folds)`` (:func:`saeprobe.selection.standard_error`).

    Args:
        result: a probe result (grid, baseline, TF-IDF, or one k of a k-sparse file).
        where: the file (and probe) it was read from, for the error message.
    Raises:
        DataError: neither ``cv_macro_f1_se`` nor both ``cv_macro_f1_std`` and ``cv_folds``.
    """
    if result.get("cv_macro_f1_se") is not None:
        return float(result["cv_macro_f1_se"])
    if result.get("cv_macro_f1_std") is None or result.get("cv_folds") is None:
        raise DataError(f"{where}: no 'cv_macro_f1_se' and no 'cv_macro_f1_std' with 'cv_folds': expected a probe "
                        "result written by saeprobe (its CV standard error chooses the best configuration)")
    return float(standard_error(result["cv_macro_f1_std"], result["cv_folds"]))


def _ci(scores: dict[str, Any], metric: str) -> tuple[float | None, float | None]:
    ci = scores.get(f"{metric}_ci")
    return (ci[0], ci[1]) if ci else (None, None)


def _row(result: dict[str, Any], path: str) -> dict[str, Any]:
    test, val = result.get("test", {}), result.get("validation") or {}
    source = result["source"]
    family = "tfidf" if source == "tfidf" else "hidden" if source == HIDDEN else "sae"
    binarize = result.get("binarize")
    row = {
        "dataset": result["dataset"], "model": result.get("model"), "family": family,
        "probe": result.get("baseline") or "logreg", "source": source, "layer": result.get("layer"),
        "pooling": result.get("pooling"), "binarize": None if binarize in (None, "raw") else parse_binarize(binarize),
        "C": result.get("C"), "params": json.dumps(result["params"], sort_keys=True) if result.get("params") else None,
        "cv_macro_f1": result["cv_macro_f1"], "cv_macro_f1_std": result["cv_macro_f1_std"],
        "cv_macro_f1_se": cv_standard_error(result, str(path)),
        "majority_macro_f1": test.get("majority_macro_f1"), "majority_accuracy": test.get("majority_accuracy"),
        "chance_macro_f1": test.get("chance_macro_f1"),
        "validation_macro_f1": val.get("macro_f1"), "n_train": result["n_train"], "n_test": test.get("n"),
        "n_features": result["n_features"], "mean_active_features": result.get("mean_active_features"),
        "predicted_classes": test.get("predicted_classes"),
        # Classes of the dataset absent from its test split (each scores 0 in the macro F1).
        "test_missing_classes": len(test.get("missing_classes", [])),
        "result": str(path),
    }
    for metric in ("macro_f1", "accuracy", "auroc"):
        row[f"test_{metric}"] = test.get(metric)
        row[f"test_{metric}_lo"], row[f"test_{metric}_hi"] = _ci(test, metric)
    row["flag"] = flags(family, row["mean_active_features"], row["predicted_classes"], row["test_macro_f1"],
                        row["majority_macro_f1"])
    return row


def grid(paths: Iterable[str | Path]) -> pl.DataFrame:
    """All probe results as one frame (schema: :data:`GRID_SCHEMA`).

    One row per probe: the linear probes of the grid (``probe = logreg``), the TF-IDF baseline,
    and the strong baselines (``probe`` = the baseline's name, ``params`` its CV-chosen
    hyper-parameters as JSON). ``binarize`` is the threshold as the config writes it (null = not
    binarized); ``cv_macro_f1_se`` the standard error of the CV mean (:func:`cv_standard_error`);
    ``*_lo``/``*_hi`` the bootstrap interval (:mod:`saeprobe.predictions`);
    ``majority_*``/``chance_*`` what the majority-class and uniform-guessing predictors score on
    the same test split; ``flag`` see :func:`flags`; ``result`` the result JSON (its predictions
    file: :func:`saeprobe.layout.predictions_of`).

    Args:
        paths: result JSON files, or unit folders (:data:`saeprobe.layout.PROBES`,
            :data:`~saeprobe.layout.BASELINES`), whose ``*.json`` cell results are read.
    """
    rows = [_row(read_json(p), str(p)) for p in folder_files(paths, "json")]
    df = pl.DataFrame([{k: r.get(k) for k in GRID_SCHEMA} for r in rows], schema=GRID_SCHEMA, orient="row")
    return df.sort(["dataset", _rank("family", FAMILY_ORDER), "model", "source", "layer", "pooling", "binarize",
                    _rank("probe", PROBE_ORDER)], nulls_last=True, maintain_order=True)


def _rank(column: str, order: dict[str, int]) -> pl.Expr:
    return pl.col(column).replace_strict(order, default=len(order), return_dtype=pl.Int8)


def _values(part: pl.DataFrame, column: str, missing: float) -> np.ndarray:
    """``part[column]`` as float64 with nulls (and a missing column) as ``missing``."""
    if column not in part.columns:
        return np.full(part.height, missing)
    return part[column].cast(pl.Float64).fill_null(missing).fill_nan(missing).to_numpy()


def cv_bands(df: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """Per group of ``keys``, the rows CV cannot tell apart from the group's best, and the one chosen.

    The one-standard-error rule (:mod:`saeprobe.selection`): a group's **band** is its rows whose
    ``cv_macro_f1`` is within one standard error (``cv_macro_f1_se`` of the best row) of the
    best; the **chosen** row is the simplest in the band: fewest ``n_features``, then fewest
    ``mean_active_features`` (either column absent or null: not simpler than any other), then
    the higher CV mean, then table order. The test score is never read.

    Args:
        df: rows with ``cv_macro_f1``, ``cv_macro_f1_se`` and the ``keys`` columns (e.g. the grid,
            the k-sparse table). keys: the grouping columns; ``[]`` = one group.
    Returns:
        The band rows of every group, in ``df``'s order, with two more columns (replacing any of
        that name): ``band_size`` (Int64, the rows in that group's band) and ``chosen`` (Boolean,
        exactly one per group).
        A group in which no row has a CV score has no band; it is dropped and logged.
    Raises:
        KeyError: a required column is missing.
    """
    missing = [c for c in ("cv_macro_f1", "cv_macro_f1_se", *keys) if c not in df.columns]
    if missing:
        raise KeyError(f"choosing on CV needs the columns {missing}; got {df.columns}")
    indexed = df.drop(["band_size", "chosen"], strict=False).with_row_index("_row")  # replaced when already there
    parts = indexed.partition_by(list(keys), maintain_order=True) if keys and df.height else [indexed]
    rows, sizes, chosen, dropped = [], [], [], 0
    for part in parts:
        if part.is_empty():
            continue
        means, ses = _values(part, "cv_macro_f1", np.nan), _values(part, "cv_macro_f1_se", np.nan)
        band = one_se_band(means, ses)
        if not band.any():
            dropped += 1
            continue
        complexity = list(zip(_values(part, "n_features", np.inf), _values(part, "mean_active_features", np.inf),
                              strict=True))
        pick = one_se_choice(means, ses, complexity)
        index = part["_row"].to_numpy()
        rows += index[band].tolist()
        sizes += [int(band.sum())] * int(band.sum())
        chosen += (index[band] == index[pick]).tolist()
    if dropped:
        log.warning("%d group(s) of %s have no CV macro F1 on any row: no configuration chosen there", dropped,
                    ", ".join(keys) or "the table")
    picked = pl.DataFrame({"_row": rows, "band_size": sizes, "chosen": chosen},
                          schema={"_row": pl.UInt32, "band_size": pl.Int64, "chosen": pl.Boolean})
    return indexed.join(picked, on="_row", how="inner").sort("_row").drop("_row")


def cv_choice(df: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """Per group of ``keys``, the row :func:`cv_bands` chooses (one-standard-error rule), with its
    ``band_size``; groups in order of first appearance in ``df``."""
    return cv_bands(df, keys).filter(pl.col("chosen")).drop("chosen")


SELECTIONS = {"cv": "cv_macro_f1", "test": "test_macro_f1"}
BEST_KEYS = ["dataset", "model", "family", "probe"]
BEST_COLUMNS = [
    "dataset", "family", "probe", "model", "source", "layer", "pooling", "binarize", "cv_macro_f1", "cv_macro_f1_se",
    "band_size", "test_macro_f1", "test_macro_f1_lo", "test_macro_f1_hi", "test_accuracy", "test_auroc",
    "majority_macro_f1", "n_features", "mean_active_features", "C", "params", "flag", "result",
]


def best(grid_df: pl.DataFrame, selected_on: str = "cv") -> pl.DataFrame:
    """One configuration per (dataset, model, family, probe).

    Args:
        selected_on: ``cv`` (saeprobe's method: :func:`cv_choice`, the one-standard-error rule on
            the CV macro F1 of the train split; ``band_size`` = how many configurations CV cannot
            tell apart from the best) or ``test`` (MOSAIC's: the argmax of the test macro F1
            itself, ties → fewer features, then table order; ``band_size`` null — it overstates
            what a user would get, reproduced only to compare with the paper's numbers and
            written to its own table).
    Returns:
        One row per (dataset, model, family, probe), columns :data:`BEST_COLUMNS` and
        ``selected_on``; ``test_macro_f1`` is the chosen configuration's test score either way.
    Raises:
        ValueError: unknown ``selected_on``.
    """
    if selected_on not in SELECTIONS:
        raise ValueError(f"selected_on must be one of {sorted(SELECTIONS)}, got {selected_on!r}")
    if selected_on == "cv":
        picked = cv_choice(grid_df, BEST_KEYS)
    else:
        ranked = grid_df.sort(["test_macro_f1", "n_features"], descending=[True, False], nulls_last=True,
                              maintain_order=True)
        picked = ranked.group_by(BEST_KEYS, maintain_order=True).first().with_columns(
            band_size=pl.lit(None, dtype=pl.Int64))
    return picked.sort(["dataset", _rank("family", FAMILY_ORDER), _rank("probe", PROBE_ORDER), "model"],
                       nulls_last=True, maintain_order=True).select(
        *BEST_COLUMNS, pl.lit(selected_on).alias("selected_on"))


SPLIT_SCHEMA: dict[str, Any] = {
    "model": pl.String, "dataset": pl.String, "source": pl.String, "family": pl.String, "layer": pl.Int64,
    "pooling": pl.String, "binarize": pl.String, "split_seed": pl.Int64, "C": pl.Float64, "cv_macro_f1": pl.Float64,
    "test_macro_f1": pl.Float64, "test_accuracy": pl.Float64, "test_auroc": pl.Float64, "n_train": pl.Int64,
    "n_test": pl.Int64,
}


def grid_splits(paths: Iterable[str | Path], grid_df: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per cell, test macro F1 mean ± std over the dataset's own split and the re-drawn ones (``probe.split_seeds``).

    Args:
        paths: probe unit folders; their ``*.splits.parquet`` files (one row per split: ``split_seed``
            null = the dataset's own split, else the seed of a re-drawn one) are read.
    Returns:
        One row per cell: its columns, ``splits`` (count, the own split included), ``own_split``
        (whether it is among them; files written before it was are not), mean/std/min/max of test
        macro F1 and the mean CV macro F1 over those splits, and ``test_macro_f1_own`` (the own
        split's, null without it).
    """
    keys = ["dataset", "model", "family", "source", "layer", "pooling", "binarize"]
    files = folder_files(paths, "splits.parquet")
    if not files:
        return pl.DataFrame(schema={**{k: SPLIT_SCHEMA[k] for k in keys}, "binarize": pl.Float64, "splits": pl.UInt32,
                                    "own_split": pl.Boolean, "test_macro_f1_mean": pl.Float64, "test_macro_f1_std": pl.Float64,
                                    "min": pl.Float64, "max": pl.Float64, "cv_macro_f1_mean": pl.Float64,
                                    "test_macro_f1_own": pl.Float64})
    df = pl.concat([pl.read_parquet(f).cast(SPLIT_SCHEMA) for f in files])  # type: ignore[arg-type]
    own = pl.col("split_seed").is_null()
    return (df.group_by(keys, maintain_order=True)
            .agg(pl.len().alias("splits"), own.any().alias("own_split"),
                 pl.col("test_macro_f1").mean().alias("test_macro_f1_mean"),
                 pl.col("test_macro_f1").std().alias("test_macro_f1_std"), pl.col("test_macro_f1").min().alias("min"),
                 pl.col("test_macro_f1").max().alias("max"), pl.col("cv_macro_f1").mean().alias("cv_macro_f1_mean"),
                 pl.col("test_macro_f1").filter(own).first().alias("test_macro_f1_own"))
            .with_columns(pl.col("binarize").map_elements(parse_binarize, return_dtype=pl.Float64))
            .sort(keys, nulls_last=True))


SAE_ATTRIBUTE_SCHEMA: dict[str, Any] = {
    "sae_architecture": pl.String, "sae_width": pl.Int64, "sae_k": pl.Float64, "sae_sparsity": pl.Float64,
}


def with_sae_attributes(df: pl.DataFrame, attributes: dict[str, dict[str, Any]]) -> pl.DataFrame:
    """``df`` with the columns of :data:`SAE_ATTRIBUTE_SCHEMA` right after ``source``, looked up by
    ``source`` in ``attributes`` (:func:`saeprobe.grid.sae_attributes`: SAE name → attributes).

    Rows whose source is not an SAE (``hidden``, ``tfidf``) get nulls. Idempotent: columns already
    there are replaced.

    Raises:
        KeyError: ``df`` has no ``source`` column.
    """
    if "source" not in df.columns:
        raise KeyError(f"with_sae_attributes needs a 'source' column, got {df.columns}")
    base = df.drop(list(SAE_ATTRIBUTE_SCHEMA), strict=False)
    added = [pl.col("source").replace_strict({name: attrs.get(col) for name, attrs in attributes.items()},
                                             default=None, return_dtype=dtype).alias(col)
             for col, dtype in SAE_ATTRIBUTE_SCHEMA.items()]
    at = base.columns.index("source") + 1
    order = [*base.columns[:at], *SAE_ATTRIBUTE_SCHEMA, *base.columns[at:]]
    return base.with_columns(added).select(order)


def markdown(df: pl.DataFrame, float_precision: int = 3) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (polars' own MARKDOWN formatting)."""
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, float_precision=float_precision, tbl_width_chars=10000):
        return str(df) + "\n"


def write_table(df: pl.DataFrame, stem: str | Path, title: str = "", md: str | None = None,
                md_exclude: Iterable[str] = ()) -> None:
    """Write ``df`` as ``stem``.parquet, .csv and .md, each atomically.

    The Markdown is ``md`` when given, else ``title`` over :func:`markdown` of ``df`` less the
    ``md_exclude`` columns (kept in the parquet and CSV: e.g. :data:`SAE_ATTRIBUTE_SCHEMA` on a
    table already too wide to read). List columns are written as space-separated text in the CSV
    and Markdown.
    """
    stem = Path(stem)
    with atomic_path(stem.with_suffix(".parquet")) as tmp:
        df.write_parquet(tmp)
    # CSV holds no nested data: a list column (e.g. k-sparse feature ids) becomes space-separated text.
    flat = df.with_columns(pl.col(c).list.eval(pl.element().cast(pl.String)).list.join(" ")
                           for c, dtype in df.schema.items() if isinstance(dtype, pl.List))
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        flat.write_csv(tmp)
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text(md if md is not None else (f"# {title}\n\n" if title else "")
                       + markdown(flat.drop(list(md_exclude), strict=False)))


def stage_times(benchmark_dir: str | Path = layout.BENCHMARKS) -> pl.DataFrame:
    """Wall time per stage from Snakemake's ``benchmark:`` files (one TSV per job).

    Returns:
        One row per stage (rule): jobs, total and longest wall seconds, peak max RSS (MB).
    """
    rows = []
    for tsv in sorted(Path(benchmark_dir).rglob("*.tsv")):
        bench = pl.read_csv(tsv, separator="\t", null_values=["-", "NA"], infer_schema_length=0)
        stage = tsv.relative_to(benchmark_dir).parts[0]
        rows.append({"stage": stage, "s": float(bench["s"][-1]), "max_rss": float(bench["max_rss"][-1] or 0)})
    if not rows:
        return pl.DataFrame(schema={"stage": pl.String, "jobs": pl.UInt32, "total_s": pl.Float64,
                                    "longest_s": pl.Float64, "peak_rss_mb": pl.Float64})
    return (
        pl.DataFrame(rows)
        .group_by("stage", maintain_order=True)
        .agg(pl.len().alias("jobs"), pl.col("s").sum().alias("total_s"), pl.col("s").max().alias("longest_s"),
             pl.col("max_rss").max().alias("peak_rss_mb"))
        .sort("total_s", descending=True)
    )


if __name__ == "__main__":  # python -m saeprobe.tables [BENCHMARK_DIR]: per-stage wall time
    import sys

    print(markdown(stage_times(*sys.argv[1:2]), float_precision=1))
