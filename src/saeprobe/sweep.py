"""Probe training-set size sweeps (data-size curves).

**Sweep**: per size n (train examples per class, capped at what a class has; ``None`` = the
whole train split) and repeat r, a stratified subsample of the train split is drawn
(:func:`subsample`), a probe is fitted on it with C chosen by CV on the subsample
(folds = min(cv_folds, smallest class count)) and scored on the *full* test split. The
subsample depends only on the labels, the split, ``seed``, ``n`` and ``r`` — never on the
features — so every feature source (SAE, hidden states, TF-IDF) of a dataset is fitted on
exactly the same documents and their curves are comparable. Subsamples are nested: for a
given repeat, the size-n subsample is contained in the size-m subsample for every m > n.

Output frames, files and the aggregated table: :mod:`saeprobe.sweep_tables`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from saeprobe.errors import DataError
from saeprobe.probes import as_features, fit_probe, fit_tfidf
from saeprobe.transfer import train_problem

log = logging.getLogger("saeprobe")

# Salt mixed into the sweep's subsample seed so it never coincides with other uses of `seed`.
_SWEEP_SALT = 0x5EE9
UNUSED = "unused"  # split name of rows a sweep's probe neither fits nor scores


def subsample(y: np.ndarray, split: np.ndarray, n_per_class: int | None, repeat: int, seed: int) -> np.ndarray:
    """A seeded stratified subsample of the train split: at most ``n_per_class`` rows of each class.

    One permutation of the train rows is drawn from (``seed``, ``repeat``); each class keeps its
    first ``n_per_class`` rows in that order (all of them when it has fewer, or when
    ``n_per_class`` is None). Hence the subsample depends only on labels, split, seed, n and
    repeat (identical for every feature source), and sizes are nested within a repeat.

    Returns:
        (n_docs,) bool mask of the chosen train rows.
    Raises:
        ValueError: n_per_class < 1 or repeat < 0.
    """
    if n_per_class is not None and n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1 or None, got {n_per_class}")
    if repeat < 0:
        raise ValueError(f"repeat must be >= 0, got {repeat}")
    y, split = np.asarray(y), np.asarray(split)
    train = np.flatnonzero(split == "train")
    mask = np.zeros(len(y), dtype=bool)
    if n_per_class is None:
        mask[train] = True
        return mask
    order = np.random.default_rng([seed, repeat, _SWEEP_SALT]).permutation(train)
    for c in np.unique(y[train]):
        mask[order[y[order] == c][:n_per_class]] = True
    return mask


def subsample_id(mask: np.ndarray) -> str:
    """Short fingerprint of a subsample (equal across feature sources iff the same documents)."""
    return hashlib.sha1(np.flatnonzero(mask).astype(np.int64).tobytes()).hexdigest()[:12]


def sweep(fit: Callable[[np.ndarray], dict[str, Any]], y: np.ndarray, split: np.ndarray, *,
          sizes: Iterable[int | None], repeats: int, seed: int) -> list[dict[str, Any]]:
    """Fit ``fit`` on a subsample per (size, repeat); return one row per pair.

    Args:
        fit: takes a split array (subsampled rows 'train', all test rows 'test', the rest
            'unused') and returns a :func:`saeprobe.probes.fit_probe`-style result with ``C``,
            ``n_train`` and ``test`` metrics. Equal subsamples (e.g. a size at or above every
            class count, or the whole split in every repeat) are fitted once and reused.
        y: (n_docs,) int labels. split: (n_docs,) split names.
    Returns:
        Rows with n_per_class (None = whole train split), repeat, n_train, n_test, test_macro_f1,
        test_accuracy, C, subsample (fingerprint).
    Raises:
        DataError: no test rows; a subsample with a single class or a class with one example.
        ValueError: repeats < 1 or a size < 1.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    y, split = np.asarray(y), np.asarray(split)
    test = split == "test"
    if not test.any():
        raise DataError("the sweep needs test rows; the dataset has none")
    cache: dict[bytes, dict[str, Any]] = {}
    rows = []
    for n in sizes:
        for r in range(repeats):
            mask = subsample(y, split, n, r, seed)
            key = mask.tobytes()
            if key not in cache:
                problem = train_problem(y[mask])
                if problem:
                    raise DataError(f"sweep size {n if n is not None else 'all'} per class, repeat {r}: {problem}")
                result = fit(np.where(mask, "train", np.where(test, "test", UNUSED)))
                cache[key] = result
                log.info("n_per_class=%s repeat %d: %d train rows, C=%g, test macro F1 %.3f",
                         n, r, int(mask.sum()), result["C"], result["test"]["macro_f1"])
            result = cache[key]
            rows.append({"n_per_class": n, "repeat": r, "n_train": int(mask.sum()), "n_test": result["test"]["n"],
                         "test_macro_f1": result["test"]["macro_f1"], "test_accuracy": result["test"]["accuracy"],
                         "C": result["C"], "subsample": subsample_id(mask)})
    return rows


def sweep_features(x: Any, y: np.ndarray, split: np.ndarray, *, sizes: Iterable[int | None], repeats: int,
                   n_classes: int, probe: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """:func:`sweep` of the CV-selected probe (:func:`fit_probe`) on pooled features ``x``."""
    x = as_features(x)
    return sweep(lambda s: fit_probe(x, y, s, n_classes=n_classes, seed=seed, **probe)[0], y, split,
                 sizes=sizes, repeats=repeats, seed=seed)


def sweep_tfidf(texts: list[str], y: np.ndarray, split: np.ndarray, *, sizes: Iterable[int | None], repeats: int,
                n_classes: int, tfidf: dict[str, Any], probe: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """:func:`sweep` of the TF-IDF baseline (:func:`fit_tfidf`; vocabulary fitted on each subsample only)."""
    tfidf = {k: v for k, v in tfidf.items() if k != "enabled"}
    return sweep(lambda s: fit_tfidf(texts, y, s, n_classes=n_classes, seed=seed, **tfidf, **probe), y, split,
                 sizes=sizes, repeats=repeats, seed=seed)
