"""The k-sparse tables: every k-sparse probe, SAE against hidden states at each k, binarization against selection.

- ``ksparse``: one row per (cell, ranking, k) from the k-sparse result files
  (:data:`saeprobe.layout.KSPARSE`), with the kept feature ids.
- ``ksparse_comparisons``: SAE k-sparse probe − hidden-state k-sparse probe at the same k,
  paired bootstrap difference of test macro F1 (:mod:`saeprobe.comparisons`). Each side is chosen
  on CV by the one-standard-error rule (:func:`saeprobe.tables.cv_bands`) over its sources,
  layers, poolings and binarizations, and its verdict holds for every pair of the two bands or
  reads ``unstable``. Two kinds of rows:

  - ``ranking = "best"`` — the **symmetric baselines**: per (dataset, model, k), each side chosen
    over **all rankings run** as well, so neither side is held to a ranking that suits it less
    (e.g. ``normalized_mean_diff``, whose normaliser means something else on signed hidden
    states, :mod:`saeprobe.ksparse`). These are the rows the summary's small-k verdicts count.
  - ``ranking`` = one ranking — per (dataset, model, ranking, k), both sides on that ranking: detail.

  A k that only one side reaches (k above the hidden width: the hidden states' k is capped at
  d_model) has no comparison row; :func:`ksparse_markdown` shows its SAE cell with ``-`` for
  hidden.
- ``binarize_vs_ksparse``: the paper's claim that binarization is an efficient alternative to
  feature selection (Gallifant et al. 2025, §3 and Figure 1), tested. Per SAE feature store and
  pooling, each binarized all-feature linear probe of the grid against every k-sparse probe on
  the *raw* features of the same store and pooling: difference (binarized − k-sparse) with its
  paired interval. ``matched`` marks the k that matches the feature count a binarized probe
  sees per document: the smallest k run at or above its mean active features per document;
  when no k run is that large no row is matched and ``matched_note`` says so (``no k ≥ 193.4``).
  ``binarized_flag`` / ``ksparse_flag`` carry each probe's degenerate-row flag
  (:func:`saeprobe.tables.flags`), so a degenerate cell is not read as an ordinary loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from saeprobe.comparisons import BAND_COLUMNS, PairedScores, bands, describe
from saeprobe.grid import parse_binarize
from saeprobe.io import folder_files, read_json
from saeprobe.tables import cv_choice, cv_standard_error, flags, markdown

#: The ``ranking`` of the symmetric rows of ``ksparse_comparisons``: each side chosen over every ranking run.
BEST_RANKING = "best"

KSPARSE_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "model": pl.String, "family": pl.String, "source": pl.String, "layer": pl.Int64,
    "pooling": pl.String, "binarize": pl.Float64, "ranking": pl.String, "k": pl.Int64, "n_features": pl.Int64,
    "C": pl.Float64, "cv_macro_f1": pl.Float64, "cv_macro_f1_std": pl.Float64, "cv_macro_f1_se": pl.Float64,
    "test_macro_f1": pl.Float64,
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
                "cv_macro_f1_se": cv_standard_error(probe, f"{path} (k={probe.get('k')})"),
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


COMPARISON_COLUMNS = ["difference", "ci_lo", "ci_hi", "p_value", "verdict", *BAND_COLUMNS]
COMPARISONS_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "model": pl.String, "ranking": pl.String, "k": pl.Int64, "sae": pl.String,
    "sae_cv_macro_f1": pl.Float64, "sae_test_macro_f1": pl.Float64, "hidden": pl.String,
    "hidden_cv_macro_f1": pl.Float64, "hidden_test_macro_f1": pl.Float64, "difference": pl.Float64,
    "ci_lo": pl.Float64, "ci_hi": pl.Float64, "p_value": pl.Float64, "verdict": pl.String, "band_a": pl.Int64,
    "band_b": pl.Int64, "band_verdicts": pl.String, "n_test": pl.Int64,
}


def with_best_ranking(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` (:data:`KSPARSE_SCHEMA`) with its rows repeated under ``ranking = "best"``
    (:data:`BEST_RANKING`), the ranking they came from kept in ``ranked_by``: grouping by
    ranking then gives, at each k, the choice over every ranking run."""
    return pl.concat([df.with_columns(ranked_by=pl.col("ranking")),
                      df.with_columns(ranked_by=pl.col("ranking"), ranking=pl.lit(BEST_RANKING))])


def ksparse_comparisons(df: pl.DataFrame, *, resamples: int, level: float, seed: int) -> pl.DataFrame:
    """SAE k-sparse − hidden k-sparse at each k, each side CV-chosen (one-SE rule) with band verdicts.

    Rows: per (dataset, model, k) with ``ranking = "best"`` (each side over every ranking,
    source, layer, pooling and binarization: the symmetric baseline), then per (dataset, model,
    ranking, k) (each side over sources, layers, poolings and binarizations). Only ks both sides
    reach. Schema :data:`COMPARISONS_SCHEMA`; ``sae`` / ``hidden`` describe the chosen probes
    (with the ranking that chose their features).
    """
    scores = PairedScores(resamples=resamples, level=level, seed=seed)
    grouped = bands(with_best_ranking(df), ["dataset", "model", "ranking", "k", "family"])
    rows = []
    for (dataset, model, ranking, k, family), a_band in grouped.items():
        b_band = grouped.get((dataset, model, ranking, k, "hidden"))
        if family != "sae" or not b_band:
            continue
        a, b = (next(r for r in band if r["chosen"]) for band in (a_band, b_band))
        rows.append({"dataset": dataset, "model": model, "ranking": ranking, "k": k,
                     "sae": describe({**a, "ranking": a["ranked_by"]}), "sae_cv_macro_f1": a["cv_macro_f1"],
                     "sae_test_macro_f1": a["test_macro_f1"], "hidden": describe({**b, "ranking": b["ranked_by"]}),
                     "hidden_cv_macro_f1": b["cv_macro_f1"], "hidden_test_macro_f1": b["test_macro_f1"],
                     **scores.compare_bands(a_band, b_band)})
    out = pl.DataFrame(rows, schema=COMPARISONS_SCHEMA, orient="row")
    return out.sort([pl.col("ranking") != BEST_RANKING, "dataset", "model", "ranking", "k"], maintain_order=True)


def binarize_vs_ksparse(grid_df: pl.DataFrame, df: pl.DataFrame, *, resamples: int, level: float,
                        seed: int) -> pl.DataFrame:
    """Binarized all-feature probes of the grid against k-sparse probes on the raw features (see module docstring)."""
    scores = PairedScores(resamples=resamples, level=level, seed=seed)
    raw = df.filter((pl.col("family") == "sae") & pl.col("binarize").is_null())
    binarized = grid_df.filter((pl.col("family") == "sae") & (pl.col("probe") == "logreg")
                               & pl.col("binarize").is_not_null())
    keys = ["dataset", "model", "source", "layer", "pooling"]
    rows = []
    for b in binarized.iter_rows(named=True):
        part = raw.filter(pl.all_horizontal(pl.col(c) == b[c] for c in keys))
        active = b["mean_active_features"]
        ks = sorted(part["k"].unique().to_list())
        matched = None if active is None else next((k for k in ks if k >= active), None)
        note = (None if matched is not None or not ks else "mean active features per document not recorded"
                if active is None else f"no k ≥ {active:.4g} run (largest {ks[-1]})")
        for a in part.iter_rows(named=True):
            rows.append({**{c: b[c] for c in keys}, "threshold": b["binarize"], "ranking": a["ranking"], "k": a["k"],
                         "matched": a["k"] == matched, "matched_note": note,
                         "binarized_cv_macro_f1": b["cv_macro_f1"], "binarized_cv_macro_f1_se": b["cv_macro_f1_se"],
                         "binarized_test_macro_f1": b["test_macro_f1"], "binarized_test_macro_f1_lo": b["test_macro_f1_lo"],
                         "binarized_test_macro_f1_hi": b["test_macro_f1_hi"],
                         "binarized_mean_active_features": active, "binarized_n_features": b["n_features"],
                         "binarized_flag": b["flag"], "ksparse_test_macro_f1": a["test_macro_f1"],
                         "ksparse_flag": a["flag"], **scores.compare(b, a)})
    schema = {"dataset": pl.String, "model": pl.String, "source": pl.String, "layer": pl.Int64, "pooling": pl.String,
              "threshold": pl.Float64, "ranking": pl.String, "k": pl.Int64, "matched": pl.Boolean,
              "matched_note": pl.String, "binarized_cv_macro_f1": pl.Float64, "binarized_cv_macro_f1_se": pl.Float64,
              "binarized_test_macro_f1": pl.Float64, "binarized_test_macro_f1_lo": pl.Float64,
              "binarized_test_macro_f1_hi": pl.Float64, "binarized_mean_active_features": pl.Float64,
              "binarized_n_features": pl.Int64, "binarized_flag": pl.String, "ksparse_test_macro_f1": pl.Float64,
              "ksparse_flag": pl.String, "difference": pl.Float64, "ci_lo": pl.Float64, "ci_hi": pl.Float64,
              "p_value": pl.Float64, "verdict": pl.String, "n_test": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _interval(row: dict[str, Any] | None) -> str:
    return (f"{row['test_macro_f1']:.3f} [{row['test_macro_f1_lo']:.3f}, {row['test_macro_f1_hi']:.3f}]"
            if row else "-")


def ksparse_markdown(df: pl.DataFrame, comparisons: pl.DataFrame) -> str:
    """Per dataset, model and ranking (``best`` first: every ranking), the CV-chosen SAE and hidden-state
    k-sparse probe at every k either side ran, and their paired difference where both did.

    A k only the SAE reaches (above the hidden width) keeps its SAE cell, with ``-`` for hidden and no verdict.
    """
    out = ["# k-sparse probes: test macro F1 against k (CV-chosen SAE and hidden-state probe at each k)", "",
           "Features ranked on the train split only; the same CV-selected logistic regression on the k best. At each "
           "k, each side is the configuration chosen on CV by the one-standard-error rule (the simplest within one "
           "standard error of the best CV macro F1); ranking `best` chooses over every ranking run as well (the "
           "symmetric baseline), a named ranking only over that ranking's probes. Cells: test macro F1 [95% bootstrap "
           "interval]; difference = SAE − hidden, paired over the same resampled test documents; verdict win/loss only "
           "when its interval excludes 0 for every pair of configurations CV cannot tell apart, `unstable` when those "
           "pairs disagree (not decided). `-`: that side has no probe at this k (the hidden states' k is capped at "
           "their width).", ""]
    every = with_best_ranking(df)
    chosen = cv_choice(every, ["dataset", "model", "ranking", "k", "family"])
    order = pl.col("ranking") != BEST_RANKING
    for (dataset, model, ranking), part in chosen.sort([order, "dataset", "model", "ranking", "k"],
                                                       maintain_order=True).group_by(["dataset", "model", "ranking"],
                                                                                     maintain_order=True):
        cmp = comparisons.filter((pl.col("dataset") == dataset) & (pl.col("model") == model)
                                 & (pl.col("ranking") == ranking))
        lines = []
        for k in sorted(part["k"].unique().to_list()):
            cell = {fam: next(iter(part.filter((pl.col("family") == fam) & (pl.col("k") == k)).iter_rows(named=True)),
                              None) for fam in ("sae", "hidden")}
            hit = cmp.filter(pl.col("k") == k)
            row = hit.row(0, named=True) if hit.height else None
            line = {"k": k, **{fam: _interval(r) for fam, r in cell.items()}}
            if ranking == BEST_RANKING:
                line.update({f"{fam} ranking": r["ranked_by"] if r else "-" for fam, r in cell.items()})
            line.update({"SAE − hidden": (f"{row['difference']:+.3f} [{row['ci_lo']:+.3f}, {row['ci_hi']:+.3f}]"
                                          if row else "-"),
                         "p": row["p_value"] if row else None, "verdict": row["verdict"] if row else "-",
                         "band pairs": row["band_verdicts"] if row else "-"})
            lines.append(line)
        out += [f"## {dataset} · {model} · {ranking}", "", markdown(pl.DataFrame(lines))]
    return "\n".join(out)
