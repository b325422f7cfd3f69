"""Choosing among candidates scored by cross-validation: the one-standard-error rule.

A CV curve is often flat within its noise: on a templated hate-speech set the CV macro F1 of an SAE
probe at C = 0.1 and C = 1 differed by 0.001-0.009, and the SAE − hidden verdict read "tie" at one
and "win" at the other. An argmax over such a curve lets an arbitrary tie-break decide the result.
The **one-standard-error rule** (Breiman, Friedman, Olshen and Stone 1984, *Classification and
Regression Trees* §3.4.3; Hastie, Tibshirani and Friedman, *The Elements of Statistical Learning*,
2nd ed., §7.10) instead takes the candidates whose CV mean is within one standard error of the
best one (the *band*), and among them the most regularised (simplest) candidate.

The standard error of a candidate's CV mean is ``std / sqrt(folds)`` (the fold scores' standard
deviation, numpy's ``ddof=0`` as stored in every result's ``cv_macro_f1_std``, over the number of
folds). Every CV-chosen choice in saeprobe goes through :func:`one_se_band` /
:func:`one_se_choice`: C of the logistic-regression probes, the strong baselines'
hyper-parameters, and the "best" configuration of the tables; a verdict is only reported when it
holds for every candidate of the band (:mod:`saeprobe.comparisons`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Floating-point slack when comparing a CV mean with the band's lower edge (scores are means of fold
# macro F1s; two equal curves must fall in the band together, whatever the summation order).
_EPS = 1e-12


def standard_error(std: Any, folds: Any) -> np.ndarray:
    """Standard error of a CV mean: ``std / sqrt(folds)`` (elementwise; float64).

    Args:
        std: fold-score standard deviation(s), ddof=0. folds: number(s) of folds, >= 1.
    Raises:
        ValueError: a fold count below 1.
    """
    folds = np.asarray(folds, dtype=np.float64)
    if np.any(folds < 1):
        raise ValueError(f"the number of CV folds must be >= 1, got {folds}")
    return np.asarray(std, dtype=np.float64) / np.sqrt(folds)


def one_se_band(means: Sequence[float] | np.ndarray, ses: Sequence[float] | np.ndarray) -> np.ndarray:
    """(n,) bool: the candidates whose CV mean is within one standard error of the best candidate's.

    Args:
        means: (n,) CV means; NaN (no score) is never in the band. ses: (n,) their standard errors
            (NaN counts as 0).
    Returns:
        ``means >= best_mean - se``, where ``se`` is the standard error of the best candidate (the
        largest SE among candidates that tie for the best mean, so the band never hinges on which of
        them comes first). All False when every mean is NaN or n = 0.
    Raises:
        ValueError: ``means`` and ``ses`` differ in shape.
    """
    means, ses = np.asarray(means, dtype=np.float64), np.asarray(ses, dtype=np.float64)
    if means.shape != ses.shape or means.ndim != 1:
        raise ValueError(f"means and ses must be 1-D arrays of one shape, got {means.shape} and {ses.shape}")
    finite = ~np.isnan(means)
    if not finite.any():
        return np.zeros(len(means), dtype=bool)
    top = np.nanmax(means)
    # Candidates that tie for the best mean: take the widest SE, so the band cannot hinge on which is "first".
    at_top = finite & (means >= top - _EPS)
    se = float(np.nanmax(np.where(at_top, np.nan_to_num(ses, nan=0.0), -np.inf)))
    return finite & (means >= top - se - _EPS)


def one_se_choice(means: Sequence[float] | np.ndarray, ses: Sequence[float] | np.ndarray,
                  complexity: Sequence[Any] | None = None) -> int:
    """Index of the candidate the one-standard-error rule picks.

    Args:
        means, ses: as for :func:`one_se_band`.
        complexity: (n,) sortable keys (numbers or tuples), lower = more regularised / simpler
            (e.g. C itself for logistic regression, the number of features for a configuration).
            None = the index order (the first candidate is the simplest).
    Returns:
        Among the band, the lowest ``complexity``; ties by the higher mean, then the earlier index.
    Raises:
        ValueError: no candidate has a CV mean, or ``complexity`` has the wrong length.
    """
    band = one_se_band(means, ses)
    if not band.any():
        raise ValueError("no candidate has a CV score to choose on")
    means = np.asarray(means, dtype=np.float64)
    if complexity is None:
        complexity = list(range(len(means)))
    if len(complexity) != len(means):
        raise ValueError(f"complexity has {len(complexity)} entries for {len(means)} candidates")
    candidates = [i for i in range(len(means)) if band[i]]
    return min(candidates, key=lambda i: (complexity[i], -means[i], i))
