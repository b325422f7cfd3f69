"""Paired comparisons of probes on the same test documents: does "SAE beats hidden" hold?

Method: for two probes of one dataset, the difference of their test macro F1 (a − b) and its
``level`` interval from the **paired** stratified bootstrap — both probes' predictions are
scored on the same resampled documents (:func:`saeprobe.bootstrap.paired_difference`), with a
two-sided bootstrap p-value. A comparison is a ``win`` (``loss``) only when its interval lies
above (below) 0, else a ``tie``. No probe is refitted: every probe's per-document test
predictions are stored beside its result (:mod:`saeprobe.predictions`).

What is compared (:func:`comparisons`), the "a" side always the CV-selected SAE linear probe:

- ``scope = best``: per (dataset, model), the best SAE probe against the best of every other
  (family, probe kind) of that dataset — hidden states with the same model's logistic
  regression and each strong baseline, TF-IDF, SAE features under a strong baseline;
- ``scope = layer``: per (dataset, model, layer), the best SAE probe at that layer against the
  best hidden-state probe at that layer — the win/tie/loss count across datasets and layers.

"Best" is always chosen on the CV macro F1 of the train split (:func:`saeprobe.tables.best`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from saeprobe import layout, predictions
from saeprobe.bootstrap import paired_difference
from saeprobe.errors import DataError

COMPARISON_SCHEMA: dict[str, Any] = {
    "dataset": pl.String, "model": pl.String, "scope": pl.String, "layer": pl.Int64, "metric": pl.String,
    "a": pl.String, "a_test_macro_f1": pl.Float64, "b_family": pl.String, "b_probe": pl.String, "b": pl.String,
    "b_test_macro_f1": pl.Float64, "difference": pl.Float64, "ci_lo": pl.Float64, "ci_hi": pl.Float64,
    "p_value": pl.Float64, "verdict": pl.String, "n_test": pl.Int64,
}


def describe(row: dict[str, Any]) -> str:
    """A short readable name of a grid row: ``source L<layer> <pooling>[ >t] [probe]``, ``tfidf``, ``… k=<k>``."""
    if row["family"] == "tfidf":
        return "tfidf"
    parts = [row["source"], f"L{row['layer']}", row["pooling"]]
    if row.get("binarize") is not None:
        parts.append(f">{row['binarize']:g}")
    if row.get("probe") not in (None, "logreg"):
        parts.append(row["probe"])
    if row.get("k") is not None:
        parts.append(f"k={row['k']}" + (f" {row['ranking']}" if row.get("ranking") else ""))
    return " ".join(str(p) for p in parts)


def _predictions(row: dict[str, Any]) -> dict[str, np.ndarray]:
    return predictions.load(layout.predictions_of(row["result"]), prefix=row.get("predictions_prefix") or "")


def paired(a: dict[str, Any], b: dict[str, Any], *, resamples: int, level: float, seed: int,
           metric: str = "macro_f1") -> dict[str, Any]:
    """Paired bootstrap difference (a − b) of two grid rows' test ``metric``.

    Args:
        a, b: rows with ``result`` (the result JSON; its predictions file is read) and optionally
            ``predictions_prefix`` (a probe inside a multi-probe file, e.g. k-sparse ``k5.``).
    Returns:
        difference, ci_lo, ci_hi, p_value, verdict (win/loss/tie), n_test.
    Raises:
        DataError: the two probes were not scored on the same test documents with the same labels.
        CacheError: a predictions file is missing or damaged.
    """
    pa, pb = _predictions(a), _predictions(b)
    if not (np.array_equal(pa["doc_id"], pb["doc_id"]) and np.array_equal(pa["y"], pb["y"])):
        raise DataError(f"{a['result']} and {b['result']} were not scored on the same test documents: "
                        "a paired comparison needs the same split")
    d = paired_difference(pa["y"], (pa["pred"], pa["proba"]), (pb["pred"], pb["proba"]), pa["proba"].shape[1],
                          metric=metric, n_resamples=resamples, seed=seed, level=level)
    return {"difference": d["difference"], "ci_lo": d["ci"][0], "ci_hi": d["ci"][1], "p_value": d["p_value"],
            "verdict": d["verdict"], "n_test": int(len(pa["y"]))}


def _best_of(df: pl.DataFrame) -> dict[str, Any] | None:
    """The CV-best row of ``df`` (ties: fewer features, then the earlier row), or None."""
    if df.is_empty():
        return None
    return df.sort(["cv_macro_f1", "n_features"], descending=[True, False], nulls_last=True,
                   maintain_order=True).row(0, named=True)


def comparisons(grid_df: pl.DataFrame, *, resamples: int, level: float, seed: int) -> pl.DataFrame:
    """Every paired comparison of the module docstring, one row each (schema :data:`COMPARISON_SCHEMA`)."""
    rows = []

    def add(a: dict[str, Any], b: dict[str, Any] | None, scope: str, layer: int | None) -> None:
        if b is None:
            return
        rows.append({"dataset": a["dataset"], "model": a["model"], "scope": scope, "layer": layer, "metric": "macro_f1",
                     "a": describe(a), "a_test_macro_f1": a["test_macro_f1"], "b_family": b["family"],
                     "b_probe": b["probe"], "b": describe(b), "b_test_macro_f1": b["test_macro_f1"],
                     **paired(a, b, resamples=resamples, level=level, seed=seed)})

    sae = grid_df.filter((pl.col("family") == "sae") & (pl.col("probe") == "logreg"))
    for (dataset, model), part in sae.group_by(["dataset", "model"], maintain_order=True):
        a = _best_of(part)
        assert a is not None
        others = grid_df.filter((pl.col("dataset") == dataset)
                                & ((pl.col("model") == model) | (pl.col("family") == "tfidf"))
                                & ~((pl.col("family") == "sae") & (pl.col("probe") == "logreg")))
        for _, group in others.group_by(["family", "probe"], maintain_order=True):
            add(a, _best_of(group), "best", None)
        hidden = grid_df.filter((pl.col("dataset") == dataset) & (pl.col("model") == model)
                                & (pl.col("family") == "hidden") & (pl.col("probe") == "logreg"))
        for layer in sorted(part["layer"].unique().to_list()):
            a_layer = _best_of(part.filter(pl.col("layer") == layer))
            assert a_layer is not None
            add(a_layer, _best_of(hidden.filter(pl.col("layer") == layer)), "layer", layer)
    return pl.DataFrame(rows, schema=COMPARISON_SCHEMA, orient="row")


def with_comparisons(best_df: pl.DataFrame, comparisons_df: pl.DataFrame) -> pl.DataFrame:
    """``best_df`` (CV-selected) with, on each SAE linear-probe row, its paired difference against
    the best hidden-state linear probe of the same model (``vs_hidden_*``) and against TF-IDF
    (``vs_tfidf_*``): difference, ci_lo, ci_hi, p_value and verdict."""
    out = best_df
    for name, family in (("vs_hidden", "hidden"), ("vs_tfidf", "tfidf")):
        part = comparisons_df.filter((pl.col("scope") == "best") & (pl.col("b_family") == family)
                                     & (pl.col("b_probe") == "logreg"))
        part = part.select("dataset", "model", *[pl.col(c).alias(f"{name}_{c}")
                                                 for c in ("difference", "ci_lo", "ci_hi", "p_value", "verdict")])
        part = part.with_columns(family=pl.lit("sae"), probe=pl.lit("logreg"))
        out = out.join(part, on=["dataset", "model", "family", "probe"], how="left", nulls_equal=True,
                       maintain_order="left")
    return out


def win_tie_loss(comparisons_df: pl.DataFrame) -> pl.DataFrame:
    """Counts of win / tie / loss of the SAE probe per (scope, b_family, b_probe), over datasets, models and layers."""
    if comparisons_df.is_empty():
        return pl.DataFrame(schema={"scope": pl.String, "against": pl.String, "win": pl.UInt32, "tie": pl.UInt32,
                                    "loss": pl.UInt32, "comparisons": pl.UInt32})
    against = pl.concat_str(pl.col("b_family"), pl.lit(" · "), pl.col("b_probe"))
    return (comparisons_df.with_columns(against=against)
            .group_by(["scope", "against"], maintain_order=True)
            .agg((pl.col("verdict") == v).sum().alias(v) for v in ("win", "tie", "loss"))
            .with_columns(comparisons=pl.col("win") + pl.col("tie") + pl.col("loss")))

