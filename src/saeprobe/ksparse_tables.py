"""The k-sparse tables: every k-sparse probe, SAE against hidden states at each k, binarization against selection.

- ``ksparse``: one row per (cell, ranking, k) from the k-sparse result files
  (:data:`saeprobe.layout.KSPARSE`), with the kept feature ids.
- ``ksparse_comparisons``: per (dataset, model, ranking, k), the CV-best SAE k-sparse probe
  against the CV-best hidden-state k-sparse probe at the same k, paired bootstrap difference of
  test macro F1 (:func:`saeprobe.comparisons.paired`).
- ``binarize_vs_ksparse``: the paper's claim that binarization is an efficient alternative to
  feature selection (Gallifant et al. 2025, §3 and Figure 1), tested. Per SAE feature store and
  pooling, each binarized all-feature linear probe of the grid against every k-sparse probe on
  the *raw* features of the same store and pooling: difference (binarized − k-sparse) with its
  paired interval. ``matched`` marks the k that matches the feature count a binarized probe
  sees per document: the smallest configured k at or above its mean active features per
  document.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from saeprobe.comparisons import describe, paired
from saeprobe.grid import parse_binarize
from saeprobe.io import folder_files, read_json
from saeprobe.tables import flags, markdown

KSPARSE_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "model": pl.String, "family": pl.String, "source": pl.String, "layer": pl.Int64,
    "pooling": pl.String, "binarize": pl.Float64, "ranking": pl.String, "k": pl.Int64, "n_features": pl.Int64,
    "C": pl.Float64, "cv_macro_f1": pl.Float64, "cv_macro_f1_std": pl.Float64, "test_macro_f1": pl.Float64,
    "test_macro_f1_lo": pl.Float64, "test_macro_f1_hi": pl.Float64, "test_accuracy": pl.Float64,
    "test_auroc": pl.Float64, "majority_macro_f1": pl.Float64, "mean_active_features": pl.Float64,
    "predicted_classes": pl.Int64, "flag": pl.String, "features": pl.List(pl.Int64), "result": pl.String,
    "predictions_prefix": pl.String,
}


def ksparse_table(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Every k-sparse probe of the result files (or unit folders) ``paths`` (schema :data:`KSPARSE_SCHEMA`)."""
    rows = []
    for path in folder_files(paths, "json"):
        cell = read_json(path)
        family = "hidden" if cell["source"] == "hidden" else "sae"
        for probe in cell["probes"]:
            test = probe["test"]
            rows.append({
                "dataset": cell["dataset"], "model": cell["model"], "family": family, "source": cell["source"],
                "layer": cell["layer"], "pooling": cell["pooling"], "binarize": parse_binarize(cell["binarize"]),
                "ranking": cell["ranking"], "k": probe["k"], "n_features": probe["n_features"], "C": probe["C"],
                "cv_macro_f1": probe["cv_macro_f1"], "cv_macro_f1_std": probe["cv_macro_f1_std"],
                "test_macro_f1": test["macro_f1"], "test_macro_f1_lo": test["macro_f1_ci"][0],
                "test_macro_f1_hi": test["macro_f1_ci"][1], "test_accuracy": test["accuracy"], "test_auroc": test["auroc"],
                "majority_macro_f1": test["majority_macro_f1"], "mean_active_features": probe["mean_active_features"],
                "predicted_classes": test["predicted_classes"],
                # Not few_active_features: a k-sparse probe has at most k active features by construction.
                "flag": flags(family, probe["mean_active_features"], test["predicted_classes"], test["macro_f1"],
                              test["majority_macro_f1"], check_active=False),
                "features": probe["features"], "result": str(path), "predictions_prefix": f"k{probe['k']}.",
            })
    df = pl.DataFrame(rows, schema=KSPARSE_SCHEMA, orient="row")
    return df.sort(["dataset", "model", "family", "source", "layer", "pooling", "binarize", "ranking", "k"],
                   nulls_last=True, maintain_order=True)


def _cv_best(df: pl.DataFrame) -> dict[str, Any] | None:
    if df.is_empty():
        return None
    return df.sort(["cv_macro_f1", "mean_active_features"], descending=[True, False], nulls_last=True,
                   maintain_order=True).row(0, named=True)


COMPARISON_COLUMNS = ["difference", "ci_lo", "ci_hi", "p_value", "verdict"]


def ksparse_comparisons(df: pl.DataFrame, *, resamples: int, level: float, seed: int) -> pl.DataFrame:
    """Per (dataset, model, ranking, k): CV-best SAE k-sparse probe − CV-best hidden k-sparse probe (paired)."""
    rows = []
    for (dataset, model, ranking, k), part in df.group_by(["dataset", "model", "ranking", "k"], maintain_order=True):
        a, b = _cv_best(part.filter(pl.col("family") == "sae")), _cv_best(part.filter(pl.col("family") == "hidden"))
        if a is None or b is None:
            continue
        rows.append({"dataset": dataset, "model": model, "ranking": ranking, "k": k, "sae": describe(a),
                     "sae_test_macro_f1": a["test_macro_f1"], "hidden": describe(b), "hidden_test_macro_f1": b["test_macro_f1"],
                     **paired(a, b, resamples=resamples, level=level, seed=seed)})
    schema = {"dataset": pl.String, "model": pl.String, "ranking": pl.String, "k": pl.Int64, "sae": pl.String,
              "sae_test_macro_f1": pl.Float64, "hidden": pl.String, "hidden_test_macro_f1": pl.Float64,
              "difference": pl.Float64, "ci_lo": pl.Float64, "ci_hi": pl.Float64, "p_value": pl.Float64,
              "verdict": pl.String, "n_test": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def binarize_vs_ksparse(grid_df: pl.DataFrame, df: pl.DataFrame, *, resamples: int, level: float,
                        seed: int) -> pl.DataFrame:
    """Binarized all-feature probes of the grid against k-sparse probes on the raw features (see module docstring)."""
    raw = df.filter((pl.col("family") == "sae") & pl.col("binarize").is_null())
    binarized = grid_df.filter((pl.col("family") == "sae") & (pl.col("probe") == "logreg")
                               & pl.col("binarize").is_not_null())
    keys = ["dataset", "model", "source", "layer", "pooling"]
    rows = []
    for b in binarized.iter_rows(named=True):
        part = raw.filter(pl.all_horizontal(pl.col(c) == b[c] for c in keys))
        ks = sorted(part["k"].unique().to_list())
        matched = next((k for k in ks if k >= (b["mean_active_features"] or 0)), ks[-1] if ks else None)
        for a in part.iter_rows(named=True):
            rows.append({**{c: b[c] for c in keys}, "threshold": b["binarize"], "ranking": a["ranking"], "k": a["k"],
                         "matched": a["k"] == matched, "binarized_cv_macro_f1": b["cv_macro_f1"],
                         "binarized_test_macro_f1": b["test_macro_f1"], "binarized_test_macro_f1_lo": b["test_macro_f1_lo"],
                         "binarized_test_macro_f1_hi": b["test_macro_f1_hi"],
                         "binarized_mean_active_features": b["mean_active_features"],
                         "binarized_n_features": b["n_features"], "ksparse_test_macro_f1": a["test_macro_f1"],
                         **paired(b, a, resamples=resamples, level=level, seed=seed)})
    schema = {"dataset": pl.String, "model": pl.String, "source": pl.String, "layer": pl.Int64, "pooling": pl.String,
              "threshold": pl.Float64, "ranking": pl.String, "k": pl.Int64, "matched": pl.Boolean,
              "binarized_cv_macro_f1": pl.Float64, "binarized_test_macro_f1": pl.Float64,
              "binarized_test_macro_f1_lo": pl.Float64, "binarized_test_macro_f1_hi": pl.Float64, "binarized_mean_active_features": pl.Float64,
              "binarized_n_features": pl.Int64, "ksparse_test_macro_f1": pl.Float64, "difference": pl.Float64,
              "ci_lo": pl.Float64, "ci_hi": pl.Float64, "p_value": pl.Float64, "verdict": pl.String, "n_test": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def ksparse_markdown(df: pl.DataFrame, comparisons: pl.DataFrame) -> str:
    """Per dataset and ranking: CV-best test macro F1 [interval] at each k for SAE and hidden, and their paired difference."""
    out = ["# k-sparse probes: test macro F1 against k (CV-best SAE and hidden-state probe at each k)", "",
           "Features ranked on the train split only; the same CV-selected logistic regression on the k best. "
           "Cells: test macro F1 [95% bootstrap interval]; difference = SAE − hidden, paired over the same resampled "
           "test documents (win/loss only when its interval excludes 0).", ""]
    for (dataset, model, ranking), part in comparisons.group_by(["dataset", "model", "ranking"], maintain_order=True):
        sub = df.filter((pl.col("dataset") == dataset) & (pl.col("model") == model) & (pl.col("ranking") == ranking))
        lines = []
        for row in part.iter_rows(named=True):
            k = row["k"]
            cell = {fam: _cv_best(sub.filter((pl.col("family") == fam) & (pl.col("k") == k))) for fam in ("sae", "hidden")}
            lines.append({"k": k, **{fam: (f"{r['test_macro_f1']:.3f} [{r['test_macro_f1_lo']:.3f}, "
                                           f"{r['test_macro_f1_hi']:.3f}]" if r else "-") for fam, r in cell.items()},
                          "SAE − hidden": f"{row['difference']:+.3f} [{row['ci_lo']:+.3f}, {row['ci_hi']:+.3f}]",
                          "p": row["p_value"], "verdict": row["verdict"]})
        out += [f"## {dataset} · {model} · {ranking}", "", markdown(pl.DataFrame(lines))]
    return "\n".join(out)
