"""Bootstrap uncertainty on a probe's test-split scores, and paired comparisons of two probes.

Method. The unit of resampling is the test document. :func:`stratified_resamples` draws a
*stratified* bootstrap: within each class, that class's count of rows with replacement, so every
resample keeps the class counts of the test split (and so the set of classes the AUROC averages
over). The resamples depend only on ``(y, n_resamples, seed)``: every probe scored on the same test
split sees the same resamples, which is what makes :func:`paired_difference` paired.
:func:`resampled_scores` computes macro F1, accuracy and AUROC for all resamples at once, with
the definitions of :func:`saeprobe.probes.macro_f1` and ``saeprobe.probes._metrics``: a resample is
a vector of row multiplicities, and weighting rows by multiplicity is exactly scoring the resampled
rows. The (B, K, K) confusion matrices are the multiplicities summed over the rows of each
(true, predicted) cell; each AUROC takes one sort of the scores and a cumulative sum of the
negatives' multiplicities in score order (ties get half credit, as in ``roc_auc_score``). There is
no Python loop over resamples (only over the K one-vs-rest classes).
:func:`interval` is the percentile interval (Efron & Tibshirani 1993, *An Introduction to the
Bootstrap*, ch. 13). :func:`paired_difference` is the paired bootstrap comparison of two systems
on the same test items (Koehn 2004, "Statistical significance tests for machine translation
evaluation"; Berg-Kirkpatrick, Burkett & Klein 2012, "An empirical investigation of statistical
significance in NLP"): the difference of the two probes' metric on each shared resample, its
percentile interval, and a two-sided p-value read off the same resampled differences.

Shapes and dtypes. ``y`` and ``pred``: (n,) integer class indices in ``[0, n_classes)``;
``proba``: (n, n_classes) float class probabilities (column c = class c, as
:func:`saeprobe.probes.predict` builds it); resample indices: (B, n) int64 row indices into ``y``.
Returned scores are float64 (B,) arrays or Python floats. Memory: :func:`score_intervals` and
:func:`paired_difference` draw and score the resamples in blocks of about ``_BLOCK_CELLS``
(resample, row) cells (:func:`resample_blocks`), keeping only the (B,) scores, so their peak is a
few times 32 MB whatever B and n are (B = 20,000, n = 1,600: 0.77 GB before, when all B x n
indices were drawn at once; 0.13 GB now, measured with ``tracemalloc``), plus the (n, K)
probabilities and 8 bytes per resample and metric. Only :func:`stratified_resamples`, which returns
the whole (B, n) int64 index array, and :func:`resampled_scores` on such an array are O(B·n).

Bad input raises :class:`saeprobe.errors.DataError` naming what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from saeprobe.errors import DataError

#: Mixed into every seed (``np.random.default_rng([seed, SALT])``) so the bootstrap's stream never
#: coincides with another seeded stream of the workflow that uses the same small integer seed.
SALT = 0x5AE_B007

METRICS = ("macro_f1", "accuracy", "auroc")
METHOD = "stratified percentile bootstrap"

# Resamples are scored in blocks of about this many (resample, row) cells (int32 multiplicities: 16 MB).
_BLOCK_CELLS = 1 << 22


# --------------------------------------------------------------------------------------------
# Input checks


def _count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DataError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _labels(values: Any, name: str, n_classes: int | None = None, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise DataError(f"{name}: expected a non-empty 1-D array of integer class labels, got dtype {arr.dtype} "
                        f"and shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise DataError(f"{name}: expected {n} labels (one per row of y), got {len(arr)}")
    arr = arr.astype(np.int64)
    if n_classes is not None and (arr.min() < 0 or arr.max() >= n_classes):
        raise DataError(f"{name}: expected class indices in [0, {n_classes}), got values in [{arr.min()}, {arr.max()}]")
    return arr


def _proba(values: Any, n: int, n_classes: int, name: str = "proba") -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n, n_classes) or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{name}: expected a numeric array of shape (n, n_classes) = ({n}, {n_classes}), "
                        f"got dtype {arr.dtype} and shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise DataError(f"{name}: expected finite probabilities, got NaN or infinite values")
    return arr


def _prediction(y: Any, pred: Any, proba: Any, n_classes: Any, prefix: str = "") -> tuple[np.ndarray, ...]:
    n_classes = _count(n_classes, "n_classes", 2)
    y = _labels(y, "y", n_classes)
    return y, _labels(pred, f"{prefix}pred", n_classes, len(y)), _proba(proba, len(y), n_classes, f"{prefix}proba")


def _level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise DataError(f"level: expected a number in (0, 1), got {level!r}")
    return float(level)


def _indices(idx: Any, n: int) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.ndim != 2 or 0 in arr.shape or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"idx: expected a (n_resamples, m) integer array of row indices with n_resamples, m >= 1, "
                        f"got dtype {arr.dtype} and shape {arr.shape}")
    if arr.min() < 0 or arr.max() >= n:
        raise DataError(f"idx: expected row indices in [0, {n}), got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64, copy=False)


# --------------------------------------------------------------------------------------------
# Resampling and vectorised scores


def stratified_resamples(y: Any, n_resamples: int, seed: int) -> np.ndarray:
    """Seeded stratified bootstrap resamples of the rows of ``y``.

    Within each class, that class's count of rows is drawn uniformly with replacement, so each
    resample keeps the class counts of ``y``. Column ``j`` of every resample is a row of class
    ``y[j]`` (``y[idx] == y`` row by row). The result depends only on ``(y, n_resamples, seed)``
    (through ``np.random.default_rng([seed, SALT])``), and the first ``k`` resamples are the same
    whatever ``n_resamples >= k`` is. It is the concatenation of :func:`resample_blocks`.

    Args:
        y: (n,) integer labels (any integer values; only equality matters here).
        n_resamples: B >= 1. seed: integer >= 0.
    Returns:
        (B, n) int64 row indices into ``y`` (8·B·n bytes: use :func:`resample_blocks` to score
        many resamples in bounded memory).
    Raises:
        DataError: ``y`` is not a non-empty 1-D integer array, ``n_resamples < 1``, or ``seed`` is
        not a non-negative integer.
    """
    y = _labels(y, "y")
    n_resamples = _count(n_resamples, "n_resamples", 1)
    _count(seed, "seed", 0)
    out = np.empty((n_resamples, len(y)), dtype=np.int64)
    start = 0
    for block in resample_blocks(y, n_resamples, seed):
        out[start:start + len(block)] = block
        start += len(block)
    return out


def resample_blocks(y: Any, n_resamples: int, seed: int, block: int | None = None) -> Iterator[np.ndarray]:
    """:func:`stratified_resamples` drawn ``block`` resamples at a time: the same rows, in order.

    Each block's uniforms are the next ``block x n`` numbers of the one generator
    ``np.random.default_rng([seed, SALT])`` (numpy fills a (B, n) draw row by row from the same
    stream), so the blocks concatenated are exactly ``stratified_resamples(y, n_resamples, seed)``
    whatever the block size, and memory is O(block·n) instead of O(B·n).

    Args:
        y: (n,) integer labels. n_resamples: B >= 1. seed: integer >= 0.
        block: resamples per block (>= 1); default ``_BLOCK_CELLS // n`` (at least 1).
    Yields:
        (b, n) int64 row indices into ``y``, b = ``block`` except for a shorter last block.
    Raises:
        DataError: as :func:`stratified_resamples` (when the first block is asked for).
    """
    y = _labels(y, "y")
    n_resamples = _count(n_resamples, "n_resamples", 1)
    seed = _count(seed, "seed", 0)
    step = max(1, _BLOCK_CELLS // len(y)) if block is None else _count(block, "block", 1)
    _, cls = np.unique(y, return_inverse=True)
    counts = np.bincount(cls)
    order = np.argsort(cls, kind="stable")              # rows grouped by class
    first = (np.cumsum(counts) - counts)[cls]          # where row j's class starts in `order`
    size = counts[cls]                                 # row j's class count
    rng = np.random.default_rng([seed, SALT])
    for start in range(0, n_resamples, step):
        u = rng.random((min(step, n_resamples - start), len(y)))
        u *= size
        draw = u.astype(np.int64)
        del u
        np.minimum(draw, size - 1, out=draw)           # u * size can round up to size when u ~ 1
        draw += first
        idx = order[draw]
        del draw                                       # not held while the consumer scores the block
        yield idx


def _multiplicities(idx: np.ndarray, n: int) -> np.ndarray:
    """(n, B) int32, row-major by data row: how many times each row of ``y`` appears in each resample.

    Rows first, because the AUROC gathers rows in score order (a contiguous copy per row)."""
    b = len(idx)
    flat = (idx * b + np.arange(b, dtype=np.int64)[:, None]).ravel()
    return np.bincount(flat, minlength=n * b).reshape(n, b).astype(np.int32)


def _weighted_auroc(score: np.ndarray, positive: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """(B,) AUROC of ``score`` for the rows ``positive`` against the rest, row i counted ``wt[i, b]`` times.

    The Mann-Whitney form: the weight of (positive, negative) pairs ranked correctly plus half the
    weight of tied pairs, over (positive weight) x (negative weight) — what ``roc_auc_score``'s
    trapezoidal ROC area equals. One sort of the negatives' scores; per resample, a cumulative sum
    of the negatives' multiplicities in score order, read at each positive's score.
    """
    neg_rows = np.flatnonzero(~positive)
    neg_rows = neg_rows[np.argsort(score[neg_rows], kind="stable")]
    neg_sorted = score[neg_rows]
    pos_score = score[positive]
    below = np.searchsorted(neg_sorted, pos_score, side="left")   # negatives strictly below
    upto = np.searchsorted(neg_sorted, pos_score, side="right")   # ... plus those tied
    cum = np.empty((wt.shape[1], len(neg_rows) + 1), dtype=np.int32)  # [resample, negatives below]
    cum[:, 0] = 0
    cum[:, 1:] = wt[neg_rows].T
    np.cumsum(cum[:, 1:], axis=1, out=cum[:, 1:])       # int32 cumsum along rows: exact and fast
    w_pos = wt[positive]                                 # (n_pos, B)
    pairs = np.einsum("bi,ib->b", cum[:, below], w_pos, dtype=np.float64)
    if not np.array_equal(below, upto):                  # half credit for positive-negative ties
        pairs = 0.5 * (pairs + np.einsum("bi,ib->b", cum[:, upto], w_pos, dtype=np.float64))
    return pairs / (w_pos.sum(0, dtype=np.float64) * cum[:, -1])


def present_class_proba(proba: np.ndarray, present: np.ndarray) -> np.ndarray:
    """(n, len(present)) float64: ``proba``'s columns of the ``present`` classes, each row renormalised to sum to 1.

    A row with zero probability on every present class (e.g. a softmax that underflowed to
    exactly 0 outside the classes absent from the split) carries no ranking among the present
    classes: it gets the uniform distribution over them (a tie in every one-vs-rest ranking),
    not a row of zeros, which ``roc_auc_score`` rejects ("Target scores need to be
    probabilities for multiclass roc_auc"). The one renormalisation of :func:`saeprobe.probes._metrics`
    and of the resampled AUROC here. Any positive row sum, however small (subnormal
    included), is divided out exactly (a floor such as 1e-300 left such rows summing to < 1).
    """
    p = np.asarray(proba, dtype=np.float64)[:, present]
    total = p.sum(1, keepdims=True)
    zero = total[:, 0] <= 0
    out = np.divide(p, total, out=np.zeros_like(p), where=~zero[:, None])
    out[zero] = 1.0 / len(present)
    return out


def _mixed_classes() -> DataError:
    return DataError("idx: expected every resample to hold the same classes (AUROC averages over the classes present); "
                     "draw the resamples with stratified_resamples")


def _block_scores(y: np.ndarray, pred: np.ndarray, proba: np.ndarray, idx: np.ndarray, n_classes: int) -> dict:
    b, m = idx.shape
    k = n_classes
    wt = _multiplicities(idx, len(y))
    # Confusion matrices [resample, true, pred]: the multiplicities summed over the rows of each (true, pred) cell.
    code = y * k + pred
    cells, cell_of_row = np.unique(code, return_inverse=True)
    rows = np.argsort(cell_of_row, kind="stable")
    starts = np.searchsorted(cell_of_row[rows], np.arange(len(cells)))
    cm = np.zeros((k * k, b))
    cm[cells] = np.add.reduceat(wt[rows], starts, axis=0, dtype=np.float64)
    cm = cm.T.reshape(b, k, k)
    tp = np.einsum("bii->bi", cm)
    true_n, pred_n = cm.sum(2), cm.sum(1)
    denom = true_n + pred_n                                   # 2 tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present_mask = true_n > 0
    if not (present_mask == present_mask[:1]).all():
        raise _mixed_classes()
    present = np.flatnonzero(present_mask[0])
    out: dict[str, Any] = {"macro_f1": f1.mean(1), "accuracy": tp.sum(1) / m, "present": tuple(present.tolist())}
    if len(present) < 2:
        out["auroc"] = None
    elif n_classes == 2:
        out["auroc"] = _weighted_auroc(proba[:, 1], y == 1, wt)
    else:
        # One-vs-rest over the classes present, probabilities renormalised over them (as probes._metrics).
        p = present_class_proba(proba, present)
        if len(present) == 2:
            out["auroc"] = _weighted_auroc(p[:, 1], y == present[1], wt)
        else:
            out["auroc"] = np.mean([_weighted_auroc(p[:, j], y == c, wt) for j, c in enumerate(present)], axis=0)
    return out


def resampled_scores(y: Any, pred: Any, proba: Any, idx: Any, n_classes: int) -> dict[str, np.ndarray | None]:
    """Macro F1, accuracy and AUROC of one probe on every resample, vectorised over resamples.

    Resample ``b`` is the rows ``idx[b]``; its scores equal
    ``saeprobe.probes._metrics(y[idx[b]], pred[idx[b]], proba[idx[b]], n_classes)``: macro F1 over
    all ``n_classes`` labels with ``zero_division=0`` (:func:`saeprobe.probes.macro_f1`), accuracy,
    and AUROC — binary on ``proba[:, 1]`` when ``n_classes == 2``, otherwise one-vs-rest macro over
    the classes present with probabilities renormalised over them (two present: the binary AUROC of
    them), ties counted half.

    Args:
        y, pred: (n,) integer class indices in ``[0, n_classes)``. proba: (n, n_classes) finite floats.
        idx: (B, m) integer row indices into ``y``, e.g. from :func:`stratified_resamples`. Every
            resample must hold the same set of classes (stratified resamples do).
        n_classes: K >= 2, the dataset's number of classes.
    Returns:
        {"macro_f1": (B,) float64, "accuracy": (B,) float64, "auroc": (B,) float64, or None when
        fewer than two classes are present}.
    Raises:
        DataError: wrong dtype, shape or length of an input, labels outside ``[0, n_classes)``,
        non-finite ``proba``, indices out of range, or resamples holding different sets of classes.
    """
    y, pred, proba = _prediction(y, pred, proba, n_classes)
    return _scores(y, pred, proba, _indices(idx, len(y)), int(n_classes))


def _scores(y: np.ndarray, pred: np.ndarray, proba: np.ndarray, idx: np.ndarray, n_classes: int) -> dict:
    """:func:`resampled_scores` on checked inputs, in blocks of resamples."""
    step = max(1, _BLOCK_CELLS // max(len(y), idx.shape[1]))
    return _stream_scores(y, [(pred, proba)], (idx[i:i + step] for i in range(0, len(idx), step)), n_classes)[0]


def _stream_scores(y: np.ndarray, probes: list[tuple[np.ndarray, np.ndarray]], blocks: Iterable[np.ndarray],
                   n_classes: int) -> list[dict]:
    """Scores of each probe ``(pred, proba)`` on every resample of ``blocks`` (each block scored by all
    probes, then dropped): per probe {metric: (B,) float64 or None}."""
    parts: list[list[dict]] = [[] for _ in probes]
    for blk in blocks:
        for out, (pred, proba) in zip(parts, probes):
            out.append(_block_scores(y, pred, proba, blk, n_classes))
    first = parts[0][0]["present"]
    if any(blk["present"] != first for out in parts for blk in out):
        raise _mixed_classes()
    return [{key: None if out[0][key] is None else np.concatenate([blk[key] for blk in out]) for key in METRICS}
            for out in parts]


def _full_set_scores(y: np.ndarray, pred: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float | None]:
    scores = _block_scores(y, pred, proba, np.arange(len(y))[None, :], n_classes)
    return {key: None if scores[key] is None else float(scores[key][0]) for key in METRICS}


# --------------------------------------------------------------------------------------------
# Intervals and comparisons


def interval(values: Any, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of ``values``.

    Quantiles use numpy's default linear interpolation between order statistics. BCa is not used:
    the percentile interval is what a reader can re-derive from the resampled values alone, and it
    is stable at B=1000, where BCa's bias-correction and acceleration estimates (the latter a
    jackknife over the test documents) add Monte-Carlo noise to the tails it moves.

    Args:
        values: (B,) finite resampled statistics, B >= 1. level: coverage, 0 < level < 1.
    Returns:
        (lo, hi) as Python floats.
    Raises:
        DataError: ``values`` is empty, not 1-D or not finite, or ``level`` is outside (0, 1).
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"values: expected a non-empty 1-D array of finite numbers ({exc})") from None
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise DataError(f"values: expected a non-empty 1-D array of finite numbers, got shape {arr.shape}")
    alpha = (1 - _level(level)) / 2
    lo, hi = np.quantile(arr, [alpha, 1 - alpha])
    return float(lo), float(hi)


def score_intervals(y: Any, pred: Any, proba: Any, n_classes: int, *, n_resamples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, Any]:
    """Percentile intervals of a probe's macro F1, accuracy and AUROC over stratified bootstrap resamples.

    Args:
        y, pred: (n,) integer class indices in ``[0, n_classes)``. proba: (n, n_classes) finite floats.
        n_classes: K >= 2. n_resamples: B >= 1. seed: integer >= 0 (the resamples depend only on
        ``(y, n_resamples, seed)``). level: interval coverage in (0, 1).
    Returns:
        {"macro_f1": [lo, hi], "accuracy": [lo, hi], "auroc": [lo, hi] or None (fewer than two
        classes in ``y``), "n_resamples": B, "level": level, "method": "stratified percentile bootstrap"}.
    Raises:
        DataError: as :func:`resampled_scores`, :func:`stratified_resamples` and :func:`interval`.
    """
    y, pred, proba = _prediction(y, pred, proba, n_classes)
    level = _level(level)
    scores = _stream_scores(y, [(pred, proba)], resample_blocks(y, n_resamples, seed), int(n_classes))[0]
    out: dict[str, Any] = {key: None if scores[key] is None else list(interval(scores[key], level)) for key in METRICS}
    out.update(n_resamples=int(n_resamples), level=level, method=METHOD)
    return out


def paired_difference(y: Any, a: tuple[Any, Any], b: tuple[Any, Any], n_classes: int, *, metric: str = "macro_f1",
                      n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Paired bootstrap comparison of probes ``a`` and ``b`` scored on the same rows: ``metric(a) - metric(b)``.

    Both probes are scored on the same stratified resamples, and ``d`` is the (B,) array of their
    per-resample differences. ``ci`` is the percentile interval of ``d``. The two-sided p-value is
    ``min(1, 2 * min(P(d <= 0), P(d >= 0)))`` with P the add-one fraction of resamples,
    ``(#{d <= 0} + 1) / (B + 1)`` (Davison & Hinkley 1997, §4.4: a bootstrap p-value is never 0;
    the smallest is ``2 / (B + 1)``): how often the resampled difference falls on the far side of
    0, doubled (with every ``d == 0`` it is exactly 1).
    This is the p-value dual to the percentile interval — ``p < 1 - level`` when the interval
    excludes 0, up to the quantile interpolation — rather than Koehn's one-sided win fraction or
    Berg-Kirkpatrick et al.'s test against the resampled differences shifted to mean 0. The verdict
    is "win" when the interval lies above 0, "loss" when below, "tie" otherwise. A probe compared
    with itself gives difference 0, ci [0, 0], p 1, "tie" (the per-resample scores are identical).

    Args:
        y: (n,) integer class indices in ``[0, n_classes)``.
        a, b: ``(pred, proba)`` of each probe: (n,) integer predictions, (n, n_classes) finite floats.
        n_classes: K >= 2. metric: "macro_f1", "accuracy" or "auroc". n_resamples, seed, level: as
            :func:`score_intervals`.
    Returns:
        {"metric": metric, "difference": a - b on the full set (float), "ci": [lo, hi], "p_value": float,
        "verdict": "win" | "loss" | "tie"}.
    Raises:
        DataError: an unknown metric, "auroc" with fewer than two classes in ``y``, ``a`` or ``b``
        not a (pred, proba) pair, or input errors as :func:`score_intervals`.
    """
    if metric not in METRICS:
        raise DataError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    pairs = []
    for name, probe in (("a", a), ("b", b)):
        if not isinstance(probe, (tuple, list)) or len(probe) != 2:
            raise DataError(f"{name}: expected a (pred, proba) pair")
        pairs.append(_prediction(y, probe[0], probe[1], n_classes, prefix=f"{name}."))
    y = pairs[0][0]
    level = _level(level)
    full = [_full_set_scores(y, pred, proba, int(n_classes))[metric] for _, pred, proba in pairs]
    resampled = [scores[metric] for scores in _stream_scores(
        y, [(pred, proba) for _, pred, proba in pairs], resample_blocks(y, n_resamples, seed), int(n_classes))]
    if full[0] is None:
        raise DataError("metric: expected a metric defined on y; AUROC needs at least two classes in y")
    return {"metric": metric, **compare_scores(full[0], full[1], resampled[0], resampled[1], level=level)}


def compare_scores(full_a: float, full_b: float, resampled_a: Any, resampled_b: Any, *,
                   level: float = 0.95) -> dict[str, Any]:
    """The comparison of :func:`paired_difference` from both probes' scores, already computed.

    For many comparisons among the same probes (e.g. every pair of two sets of candidates,
    :mod:`saeprobe.comparisons`), each probe's scores are computed once
    (:func:`resampled_scores` on the same :func:`stratified_resamples`) and every pair is then
    this function: the same difference, interval, p-value and verdict as
    :func:`paired_difference` on those probes.

    Args:
        full_a, full_b: each probe's metric on the full set. resampled_a, resampled_b: (B,) each
            probe's metric on the same B resamples, in the same order. level: as :func:`interval`.
    Returns:
        {"difference": full_a - full_b, "ci": [lo, hi], "p_value": float, "verdict": "win" | "loss" | "tie"}.
    Raises:
        DataError: the two resampled arrays differ in shape, or as :func:`interval`.
    """
    ra, rb = np.asarray(resampled_a, dtype=np.float64), np.asarray(resampled_b, dtype=np.float64)
    if ra.shape != rb.shape:
        raise DataError(f"resampled scores: expected two arrays of one shape (the same resamples), got {ra.shape} "
                        f"and {rb.shape}")
    d = ra - rb
    lo, hi = interval(d, level)
    b = len(d)
    p = min(1.0, 2.0 * min(float((np.sum(d <= 0) + 1) / (b + 1)), float((np.sum(d >= 0) + 1) / (b + 1))))
    verdict = "win" if lo > 0 else "loss" if hi < 0 else "tie"
    return {"difference": float(full_a) - float(full_b), "ci": [lo, hi], "p_value": p, "verdict": verdict}


# --------------------------------------------------------------------------------------------
# Reference points


def majority_scores(y: Any, n_classes: int, majority_class: int | None = None) -> dict[str, Any]:
    """Macro F1 and accuracy on ``y`` of the predictor that always answers one class.

    With ``m`` that class, ``n_m`` its count in ``y`` and ``n = len(y)``: accuracy ``n_m / n``;
    macro F1 ``(2 n_m / (n + n_m)) / n_classes`` (class m: precision ``n_m / n``, recall 1; every
    other class scores 0, as in :func:`saeprobe.probes.macro_f1`).

    Args:
        y: (n,) integer class indices in ``[0, n_classes)``. n_classes: K >= 2.
        majority_class: the class answered; default the most frequent class of ``y`` (the smallest
            index on a tie). Pass the train split's majority class for a train-fitted baseline.
    Returns:
        {"majority_class": m, "macro_f1": float, "accuracy": float}.
    Raises:
        DataError: bad ``y`` or ``n_classes``, or ``majority_class`` outside ``[0, n_classes)``.
    """
    n_classes = _count(n_classes, "n_classes", 2)
    y = _labels(y, "y", n_classes)
    counts = np.bincount(y, minlength=n_classes)
    if majority_class is None:
        m = int(np.argmax(counts))
    else:
        m = _count(majority_class, "majority_class", 0)
        if m >= n_classes:
            raise DataError(f"majority_class: expected a class index in [0, {n_classes}), got {m}")
    n, n_m = len(y), int(counts[m])
    return {"majority_class": m, "macro_f1": 2 * n_m / (n + n_m) / n_classes, "accuracy": n_m / n}


def chance_scores(y: Any, n_classes: int) -> dict[str, float]:
    """Expected accuracy and macro F1 on ``y`` of guessing each class uniformly at random.

    Accuracy is ``1 / K``. For macro F1, class c with prevalence ``p_c`` in ``y`` gets expected
    precision ``p_c`` and recall ``1 / K``, so ``F1_c = 2 p_c (1/K) / (p_c + 1/K)`` (0 for an absent
    class), and the macro F1 is the mean of ``F1_c`` over all K classes. This is the F1 of the
    expected precision and recall — the large-n value, not the exact finite-n expectation of F1.

    Args:
        y: (n,) integer class indices in ``[0, n_classes)``. n_classes: K >= 2.
    Returns:
        {"macro_f1": float, "accuracy": float}.
    Raises:
        DataError: bad ``y`` or ``n_classes``.
    """
    n_classes = _count(n_classes, "n_classes", 2)
    y = _labels(y, "y", n_classes)
    prevalence = np.bincount(y, minlength=n_classes) / len(y)
    guess = 1 / n_classes
    f1 = 2 * prevalence * guess / (prevalence + guess)
    return {"macro_f1": float(f1.mean()), "accuracy": guess}


if __name__ == "__main__":  # timing: PYTHONPATH=src python -m saeprobe.bootstrap
    import time

    rng = np.random.default_rng(0)
    n = 1500
    for k in (2, 6):
        y_demo = rng.integers(0, k, n)
        proba_demo = rng.dirichlet(np.ones(k), n)
        pred_demo = proba_demo.argmax(1)
        wall, cpu = [], []
        for _ in range(20):
            start, start_cpu = time.perf_counter(), time.process_time()
            score_intervals(y_demo, pred_demo, proba_demo, k, n_resamples=1000)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        print(f"score_intervals, n={n}, K={k}, B=1000 (20 runs): wall median {np.median(wall) * 1e3:.1f} ms, "
              f"best {min(wall) * 1e3:.1f} ms; CPU median {np.median(cpu) * 1e3:.1f} ms, best {min(cpu) * 1e3:.1f} ms")
