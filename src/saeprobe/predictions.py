"""Per-document predictions of a fitted probe, stored beside its result, and the uncertainty of its scores.

Every probe of the workflow (grid, k-sparse, baselines, TF-IDF) keeps the predicted class and
the class probabilities of each validation and test document in a ``.predictions.npz`` file
next to its result JSON, so intervals, paired comparisons (:mod:`saeprobe.comparisons`) and
later ensembles need no refit. :func:`finish` turns a fitted probe's raw predictions into that
file's arrays and adds to each scored split of its result:

- ``<metric>_ci``: the 95 % (``level``) stratified percentile-bootstrap interval over the
  split's documents for macro F1, accuracy and AUROC (:func:`saeprobe.bootstrap.score_intervals`;
  the resamples depend only on the split's labels and ``seed``, so every probe on a dataset is
  resampled identically);
- ``majority_macro_f1`` / ``majority_accuracy``: the majority-class predictor's scores on the
  split, and ``chance_macro_f1`` / ``chance_accuracy``: uniform random guessing
  (:func:`saeprobe.bootstrap.majority_scores`, :func:`~saeprobe.bootstrap.chance_scores`);
- ``predicted_classes``: how many classes the probe predicts at all (1 = degenerate).

File layout (``np.savez``): for each stored probe ``<prefix>`` ('' for a single probe, e.g.
``k5.`` for the k-sparse probe with k = 5) and split ``s``: ``<prefix><s>.doc_id`` (n,) int64,
``<prefix><s>.y`` (n,) int64 true labels, ``<prefix><s>.pred`` (n,) int64,
``<prefix><s>.proba`` (n, n_classes) float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from saeprobe.bootstrap import chance_scores, majority_scores, score_intervals
from saeprobe.errors import DataError
from saeprobe.io import atomic_path, reading

SCORED_SPLITS = ("validation", "test")


def finish(result: dict[str, Any], y: np.ndarray, split: np.ndarray, doc_id: np.ndarray, n_classes: int, *,
           resamples: int, level: float, seed: int, prefix: str = "") -> dict[str, np.ndarray]:
    """Move ``result["predictions"]`` out of ``result`` into arrays to save; add intervals and baselines.

    Args:
        result: a probe result with ``predictions`` = {split: (pred (n,), proba (n, n_classes))}
            for the scored splits, rows in document order of ``split == <split>`` (as
            :func:`saeprobe.probes.fit_probe` and :func:`saeprobe.baselines.fit_baseline` return).
        y, split, doc_id: (n_docs,) labels, split names and document ids of the whole dataset.
        resamples, level, seed: the bootstrap (``bootstrap`` config section; ``seed`` = the run's).
        prefix: key prefix of this probe in the file (several probes in one file).
    Returns:
        The arrays of :func:`save` (keys as in the module docstring). ``result`` is changed in place.
    Raises:
        DataError: a split's predictions do not have one row per document of that split.
    """
    out: dict[str, np.ndarray] = {}
    for name, (pred, proba) in result.pop("predictions").items():
        mask = split == name
        pred, proba = np.asarray(pred, dtype=np.int64), np.asarray(proba, dtype=np.float64)
        if len(pred) != int(mask.sum()) or proba.shape != (len(pred), n_classes):
            raise DataError(f"{name} predictions have {len(pred)} rows and probabilities {proba.shape}; expected "
                            f"{int(mask.sum())} rows and ({int(mask.sum())}, {n_classes})")
        truth = np.asarray(y)[mask].astype(np.int64)
        scores = result[name]
        ci = score_intervals(truth, pred, proba, n_classes, n_resamples=resamples, seed=seed, level=level)
        for metric in ("macro_f1", "accuracy", "auroc"):
            scores[f"{metric}_ci"] = ci[metric]
        scores["bootstrap"] = {k: ci[k] for k in ("n_resamples", "level", "method")}
        scores.update({f"majority_{k}": v for k, v in majority_scores(truth, n_classes).items()})
        scores.update({f"chance_{k}": v for k, v in chance_scores(truth, n_classes).items()})
        scores["predicted_classes"] = int(len(np.unique(pred)))
        out.update({f"{prefix}{name}.doc_id": np.asarray(doc_id)[mask].astype(np.int64), f"{prefix}{name}.y": truth,
                    f"{prefix}{name}.pred": pred, f"{prefix}{name}.proba": proba.astype(np.float32)})
    return out


def save(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays of :func:`finish` (one or several probes) as one ``.npz`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load(path: str | Path, prefix: str = "", split: str = "test") -> dict[str, np.ndarray]:
    """One probe's stored predictions on ``split``: ``doc_id``, ``y``, ``pred``, ``proba`` arrays.

    Raises:
        CacheError: the file is missing, truncated or fails its zip CRC (:func:`saeprobe.io.reading`).
        KeyError: the file holds no such probe or split.
    """
    with reading(path), np.load(path) as npz:
        keys = ("doc_id", "y", "pred", "proba")
        missing = [k for k in keys if f"{prefix}{split}.{k}" not in npz.files]
        if missing:
            raise KeyError(f"{path}: no {split} predictions of probe {prefix or '(single)'!r}")
        return {k: npz[f"{prefix}{split}.{k}"] for k in keys}
