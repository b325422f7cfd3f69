"""Probe data regimes: training-set size sweeps (data-size curves), class imbalance and label noise.

**Size sweep**: per size n (train examples per class, capped at what a class has; ``None`` = the
whole train split) and repeat r, a stratified subsample of the train split is drawn
(:func:`subsample`), a probe is fitted on it with C chosen by CV on the subsample
(folds = min(cv_folds, smallest class count)) and scored on the *full* test split. The
subsample depends only on the labels, the split, ``seed``, ``n`` and ``r`` — never on the
features — so every feature source (SAE, hidden states, TF-IDF) of a dataset is fitted on
exactly the same documents and their curves are comparable. Subsamples are nested: for a
given repeat, the size-n subsample is contained in the size-m subsample for every m > n.

**Other regimes** (after sae-probes, Kantamneni et al. 2025), fitted and scored the same way:

- *class imbalance* (binary datasets; label index 1 is the positive class): per positive
  fraction f and repeat r, a train subsample of one fixed size N holding round(f·N) positives
  (:func:`imbalance_subsample`). N is the largest size at which *every* configured fraction is
  achievable from the train split's class counts with at least 2 examples of each class
  (:func:`imbalance_size`), so the fractions differ only in composition, not in size. A
  multiclass dataset skips this regime (logged and counted, not an error).
- *label noise*: per fraction q and repeat r, the whole train split with round(q·n_train) of
  its labels flipped, each to a different class drawn uniformly among the train split's other
  classes (binary: the other class) (:func:`label_noise_sample`). Validation and test labels
  are never changed; a flip that would leave its class with fewer than 2 train examples is
  passed over (the next row in the seeded order is flipped instead), so stratified CV keeps
  working and the flip count stays exact.

Every draw depends only on the labels, the split, ``seed``, the regime's value and the repeat
(:func:`regime_sample` returns the train mask and the labels to fit on), never on the
features, so every feature source and baseline sees the same documents and the same flipped
labels. Test scores always use the true labels of the untouched test split.

**Groups** (``group_column``): the probe's CV folds on a draw keep each group whole
(:func:`saeprobe.probes.fit_cv`). A small draw can then be impossible to cross-validate — a
class in a single train group of the draw — as can any draw with a single class or a class with
one example. Such a draw is **skipped, logged and counted** (:func:`draw_problem`): no row, a
warning naming the regime, value, repeat and reason, and an entry in ``report['skipped_draws']``
(``report['n_skipped_draws']``); a value whose every repeat is skipped is named in
``report['drop']`` with the config key to drop it from. The other draws are fitted as usual.

Output frames, files and the aggregated table: :mod:`saeprobe.sweep_tables`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from saeprobe.bootstrap import majority_scores
from saeprobe.errors import DataError
from saeprobe.probes import _cv, as_features, fit_probe, fit_tfidf
from saeprobe.sweep_tables import CONFIG_KEYS
from saeprobe.transfer import train_problem

log = logging.getLogger("saeprobe")

# Salts mixed into the regimes' seeds so they never coincide with other uses of `seed` (or each other).
_SWEEP_SALT = 0x5EE9
_IMBALANCE_SALT = 0x1B5
_NOISE_SALT = 0x7015E
UNUSED = "unused"  # split name of rows a sweep's probe neither fits nor scores
REGIMES = ("size", "imbalance", "label_noise")
POSITIVE = 1  # label index of the positive class of the imbalance regime (binary datasets)
MIN_PER_CLASS = 2  # stratified CV needs 2 train examples per class


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


def n_positive(fraction: float, n_total: int) -> int:
    """Positives of an imbalance subsample of ``n_total`` rows: round(fraction · n_total) (Python's round)."""
    return round(fraction * n_total)


def _binary_train_counts(y: np.ndarray, split: np.ndarray) -> tuple[int, int]:
    """(negatives, positives) in the train split; DataError unless its labels are 0/1."""
    y_train = np.asarray(y)[np.asarray(split) == "train"]
    if not np.isin(y_train, (0, POSITIVE)).all():
        raise DataError(f"class imbalance needs binary labels (0, 1); train has labels {np.unique(y_train).tolist()}")
    pos = int((y_train == POSITIVE).sum())
    return len(y_train) - pos, pos


def imbalance_size(y: np.ndarray, split: np.ndarray, fractions: Sequence[float]) -> int:
    """The imbalance regime's subsample size N: the largest N at which every fraction is achievable.

    For each fraction f, N must hold round(f·N) positives and N − round(f·N) negatives, at most
    what the train split has of each and at least :data:`MIN_PER_CLASS` of each.

    Raises:
        ValueError: no fractions, or one outside (0, 1).
        DataError: labels not binary, or no such N exists (the fractions are too extreme for the counts).
    """
    fractions = list(fractions)
    if not fractions:
        raise ValueError("imbalance_size needs at least one fraction")
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"positive fractions must lie in (0, 1), got {fractions}")
    neg, pos = _binary_train_counts(y, split)
    for n in range(neg + pos, 2 * MIN_PER_CLASS - 1, -1):
        if all(MIN_PER_CLASS <= n_positive(f, n) <= pos and MIN_PER_CLASS <= n - n_positive(f, n) <= neg
               for f in fractions):
            return n
    raise DataError(f"class imbalance: no train subsample size gives every positive fraction in {fractions} at least "
                    f"{MIN_PER_CLASS} examples of each class from {pos} positive and {neg} negative train rows")


def imbalance_subsample(y: np.ndarray, split: np.ndarray, fraction: float, repeat: int, seed: int,
                        n_total: int) -> np.ndarray:
    """A seeded train subsample of ``n_total`` rows with :func:`n_positive` (fraction, n_total) positives.

    One permutation of the train rows is drawn from (``seed``, ``repeat``); the first positives
    and the first negatives in that order are kept. Within a repeat the positives grow and the
    negatives shrink (each nested) as the fraction rises. ``n_total``: see :func:`imbalance_size`.

    Returns:
        (n_docs,) bool mask of the chosen train rows.
    Raises:
        ValueError: fraction outside (0, 1), repeat < 0.
        DataError: labels not binary; the train split has too few of a class, or a class would get
            fewer than :data:`MIN_PER_CLASS` rows.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"positive fraction must lie in (0, 1), got {fraction}")
    if repeat < 0:
        raise ValueError(f"repeat must be >= 0, got {repeat}")
    y, split = np.asarray(y), np.asarray(split)
    neg, pos = _binary_train_counts(y, split)
    k = n_positive(fraction, n_total)
    if not (MIN_PER_CLASS <= k <= pos and MIN_PER_CLASS <= n_total - k <= neg):
        raise DataError(f"class imbalance {fraction:g} of {n_total} rows needs {k} positive and {n_total - k} negative "
                        f"train rows (at least {MIN_PER_CLASS} each); the train split has {pos} and {neg}")
    order = np.random.default_rng([seed, repeat, _IMBALANCE_SALT]).permutation(np.flatnonzero(split == "train"))
    mask = np.zeros(len(y), dtype=bool)
    mask[order[y[order] == POSITIVE][:k]] = True
    mask[order[y[order] != POSITIVE][:n_total - k]] = True
    return mask


def label_noise_sample(y: np.ndarray, split: np.ndarray, fraction: float, repeat: int,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole train split with round(fraction · n_train) train labels flipped (seeded).

    One permutation of the train rows and one offset per row are drawn from (``seed``,
    ``repeat``); rows are flipped in permutation order, each to the class ``offset`` places on
    among the train split's classes (uniform over the other classes; binary: the other class),
    passing over a row whose class would drop below :data:`MIN_PER_CLASS` train examples. Flips
    are nested: within a repeat, a lower fraction flips a prefix of a higher one's rows.

    Returns:
        (mask: (n_docs,) bool, the train rows; labels: (n_docs,) ``y`` with the flips applied,
        equal to ``y`` outside the train split).
    Raises:
        ValueError: fraction outside [0, 1], repeat < 0.
        DataError: fewer than two classes in train, or not enough flippable rows.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"label noise fraction must lie in [0, 1], got {fraction}")
    if repeat < 0:
        raise ValueError(f"repeat must be >= 0, got {repeat}")
    y, split = np.asarray(y), np.asarray(split)
    mask = split == "train"
    train = np.flatnonzero(mask)
    n_flip = round(fraction * len(train))
    noisy = y.copy()
    if n_flip == 0:
        return mask, noisy
    classes = np.unique(y[train])
    if len(classes) < 2:
        raise DataError(f"label noise needs at least two classes in train, got {classes.tolist()}")
    rng = np.random.default_rng([seed, repeat, _NOISE_SALT])
    order = rng.permutation(train)
    offsets = rng.integers(1, len(classes), size=len(order))
    index = np.searchsorted(classes, y[order])
    counts = np.bincount(index, minlength=len(classes))
    flipped = 0
    for row, c, offset in zip(order, index, offsets, strict=True):
        if flipped == n_flip:
            break
        if counts[c] <= MIN_PER_CLASS:
            continue
        target = (c + offset) % len(classes)
        counts[c] -= 1
        counts[target] += 1
        noisy[row] = classes[target]
        flipped += 1
    if flipped < n_flip:
        raise DataError(f"label noise {fraction:g}: only {flipped} of {n_flip} train labels can be flipped while "
                        f"every class keeps {MIN_PER_CLASS} examples")
    return mask, noisy


def regime_sample(y: np.ndarray, split: np.ndarray, regime: str, value: float | int | None, repeat: int, seed: int, *,
                  imbalance: Sequence[float] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The train rows and the labels to fit on for one (regime, value, repeat) — for any stage or baseline.

    Args:
        regime: 'size' (value = examples per class, None = all), 'imbalance' (value = positive
            fraction; ``imbalance`` = every configured fraction, which fixes the subsample size,
            see :func:`imbalance_size`) or 'label_noise' (value = fraction of train labels flipped).
    Returns:
        (mask: (n_docs,) bool, train rows only; labels: (n_docs,), equal to ``y`` outside the mask).
    """
    if regime == "size":
        return subsample(y, split, None if value is None else int(value), repeat, seed), np.asarray(y)
    if regime == "imbalance":
        if value is None:
            raise ValueError("the imbalance regime needs a positive fraction")
        n_total = imbalance_size(y, split, list(imbalance) or [float(value)])
        return imbalance_subsample(y, split, float(value), repeat, seed, n_total), np.asarray(y)
    if regime == "label_noise":
        if value is None:
            raise ValueError("the label noise regime needs a fraction")
        return label_noise_sample(y, split, float(value), repeat, seed)
    raise ValueError(f"unknown regime {regime!r} (known: {', '.join(REGIMES)})")


def draw_problem(labels: np.ndarray, groups: np.ndarray | None = None) -> str | None:
    """Why the train rows of a draw (labels ``labels``, (n_train,); ``groups`` (n_train,) or None)
    cannot be fitted with a CV-selected probe, or None.

    The checks of the probe itself (:func:`saeprobe.transfer.train_problem`, then
    :func:`saeprobe.probes._cv` with the groups): no rows, a single class, a class with one
    example, and with groups a class in a single train group.
    """
    problem = train_problem(labels)
    if problem or groups is None:
        return problem
    try:
        _cv(np.asarray(labels), 2, 0, np.asarray(groups))
    except DataError as exc:
        return str(exc)
    return None


def _describe(regime: str, value: float | int | None) -> str:
    if regime == "size":
        return f"size {'all' if value is None else int(value)} per class"
    return f"{'class imbalance' if regime == 'imbalance' else 'label noise'} {value:g}"


def subsample_id(mask: np.ndarray, labels: np.ndarray | None = None) -> str:
    """Short fingerprint of a subsample (equal across feature sources iff the same documents);
    with ``labels`` ((n_docs,)), of the documents and their labels (label-noise draws)."""
    digest = hashlib.sha1(np.flatnonzero(mask).astype(np.int64).tobytes())
    if labels is not None:
        digest.update(np.asarray(labels)[mask].astype(np.int64).tobytes())
    return digest.hexdigest()[:12]


def sweep(fit: Callable[[np.ndarray, np.ndarray], dict[str, Any]], y: np.ndarray, split: np.ndarray, *,
          sizes: Iterable[int | None], repeats: int, seed: int, imbalance: Sequence[float] = (),
          label_noise: Sequence[float] = (), n_classes: int | None = None,
          report: dict[str, Any] | None = None, groups: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Fit ``fit`` on a draw per (regime, value, repeat); return one row per triple fitted.

    Args:
        fit: takes a split array (drawn rows 'train', all test rows 'test', the rest 'unused')
            and the labels to fit on (``y`` but for flipped train labels; equal to ``y`` on every
            test row), and returns a :func:`saeprobe.probes.fit_probe`-style result with ``C``,
            ``n_train`` and ``test`` metrics. Equal draws (same rows and labels, e.g. a size at or
            above every class count, the whole split in every repeat, or noise 0) are fitted once.
        y: (n_docs,) int labels. split: (n_docs,) split names.
        sizes: the size regime's examples per class (None = the whole train split).
        imbalance: positive fractions (binary datasets; skipped, logged and counted in
            ``report['skipped']`` otherwise). label_noise: fractions of train labels flipped.
        n_classes: the dataset's number of labels (default: distinct values of ``y``).
        report: a dict to receive the imbalance size N (``imbalance_n``), skipped regimes
            (``skipped``) and the skipped draws: ``n_skipped_draws``, ``skipped_draws`` (one
            {regime, value, n_per_class, repeat, n_train, reason} per draw) and ``drop`` (one
            {regime, value, n_per_class, config_key, reason} per value none of whose repeats could
            be fitted).
        groups: None, or (n_docs,) group of every row (``group_column``): only to find the draws
            grouped CV cannot split (:func:`draw_problem`); ``fit`` applies the groups itself.
    Returns:
        Size rows, then imbalance rows, then label-noise rows (a draw :func:`draw_problem`
        refuses has none; it is logged and counted in ``report``), each with regime, value
        (n_per_class for size, the fraction otherwise), n_per_class (None = whole train split,
        and for the other regimes), repeat, n_train, n_test, test_macro_f1, test_accuracy, C,
        subsample (fingerprint; of rows and labels for label noise), n_positive (imbalance),
        n_flipped (label noise).
    Raises:
        DataError: no test rows; imbalance fractions the class counts cannot give; ``groups``
            not of length n_docs.
        ValueError: repeats < 1, a size < 1, a fraction out of range.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    y, split = np.asarray(y), np.asarray(split)
    test = split == "test"
    if not test.any():
        raise DataError("the sweep needs test rows; the dataset has none")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise DataError(f"groups must be a (n_docs,) = ({len(y)},) array of group ids, got shape {groups.shape}")
    cache: dict[bytes, dict[str, Any] | str] = {}  # a str: why the draw cannot be fitted
    skipped_draws: list[dict[str, Any]] = []
    n_classes_all = int(n_classes) if n_classes is not None else int(y.max()) + 1
    majority = majority_scores(y[test], n_classes_all)["macro_f1"]  # what every row must beat (same test split)

    def run(mask: np.ndarray, labels: np.ndarray, regime: str, value: float | int | None, r: int,
            what: str) -> dict[str, Any] | None:
        """The fit of a draw, or None (logged and recorded in ``skipped_draws``) when it cannot be fitted."""
        key = mask.tobytes() + labels.tobytes()
        if key not in cache:
            problem = draw_problem(labels[mask], None if groups is None else groups[mask])
            if problem:
                cache[key] = problem
            else:
                result = fit(np.where(mask, "train", np.where(test, "test", UNUSED)), labels)
                cache[key] = result
                log.info("%s: %d train rows, C=%g, test macro F1 %.3f", what, int(mask.sum()), result["C"],
                         result["test"]["macro_f1"])
        got = cache[key]
        if isinstance(got, str):
            log.warning("sweep %s, repeat %d (%d train rows): skipped, the draw cannot be cross-validated: %s",
                        _describe(regime, value), r, int(mask.sum()), got)
            skipped_draws.append({"regime": regime, "value": None if value is None else float(value),
                                  "n_per_class": None if regime != "size" or value is None else int(value),
                                  "repeat": r, "n_train": int(mask.sum()), "reason": got})
            return None
        return got

    def row(regime: str, value: float | None, n: int | None, r: int, mask: np.ndarray, result: dict[str, Any],
            sid: str, **extra: Any) -> dict[str, Any]:
        return {"regime": regime, "value": value, "n_per_class": n, "repeat": r, "n_train": int(mask.sum()),
                "n_test": result["test"]["n"], "test_macro_f1": result["test"]["macro_f1"],
                "test_accuracy": result["test"]["accuracy"], "C": result["C"], "subsample": sid, "n_positive": None,
                "n_flipped": None, "majority_macro_f1": majority, **extra}

    rows = []
    for n in sizes:
        for r in range(repeats):
            mask = subsample(y, split, n, r, seed)
            result = run(mask, y, "size", n, r, f"sweep size {n if n is not None else 'all'} per class, repeat {r}")
            if result is not None:
                rows.append(row("size", None if n is None else float(n), n, r, mask, result, subsample_id(mask)))
    imbalance, label_noise = [float(f) for f in imbalance], [float(q) for q in label_noise]
    n_labels = n_classes if n_classes is not None else len(np.unique(y))
    if imbalance and n_labels != 2:
        skipped = len(imbalance) * repeats
        log.info("class imbalance skipped: the dataset has %d classes (binary datasets only); %d rows "
                 "(%d fractions x %d repeats) not fitted", n_labels, skipped, len(imbalance), repeats)
        if report is not None:
            report.setdefault("skipped", {})["imbalance"] = {"rows": skipped, "reason": f"{n_labels} classes, not binary"}
    elif imbalance:
        n_total = imbalance_size(y, split, imbalance)
        if report is not None:
            report["imbalance_n"] = n_total
        for f in imbalance:
            for r in range(repeats):
                mask = imbalance_subsample(y, split, f, r, seed, n_total)
                result = run(mask, y, "imbalance", f, r, f"class imbalance {f:g} positive of {n_total}, repeat {r}")
                if result is not None:
                    rows.append(row("imbalance", f, None, r, mask, result, subsample_id(mask),
                                    n_positive=int((y[mask] == POSITIVE).sum())))
    for q in label_noise:
        for r in range(repeats):
            mask, noisy = label_noise_sample(y, split, q, r, seed)
            if not np.array_equal(noisy[~mask], y[~mask]):  # the contract every score relies on
                raise AssertionError("label noise changed a label outside the train split")
            result = run(mask, noisy, "label_noise", q, r, f"label noise {q:g}, repeat {r}")
            if result is not None:
                rows.append(row("label_noise", q, None, r, mask, result, subsample_id(mask, noisy),
                                n_flipped=int((noisy != y).sum())))
    drop = _impossible_values(skipped_draws, repeats)
    if report is not None:
        report.update(n_skipped_draws=len(skipped_draws), skipped_draws=skipped_draws, drop=drop)
    return rows


def _impossible_values(skipped: list[dict[str, Any]], repeats: int) -> list[dict[str, Any]]:
    """The (regime, value) pairs every repeat of which was skipped, each logged with the config key to drop it from."""
    counts: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
    for draw in skipped:
        counts.setdefault((draw["regime"], draw["value"]), []).append(draw)
    drop = []
    for (regime, value), draws in counts.items():
        if len(draws) < repeats:
            continue
        shown = "null" if value is None else f"{value:g}"
        log.warning("sweep %s: none of its %d repeats can be cross-validated (%s); drop %s from %s",
                    _describe(regime, value), repeats, draws[0]["reason"], shown, CONFIG_KEYS[regime])
        drop.append({"regime": regime, "value": value, "n_per_class": draws[0]["n_per_class"],
                     "config_key": CONFIG_KEYS[regime], "reason": draws[0]["reason"]})
    return drop


def sweep_features(x: Any, y: np.ndarray, split: np.ndarray, *, sizes: Iterable[int | None], repeats: int,
                   n_classes: int, probe: dict[str, Any], seed: int, imbalance: Sequence[float] = (),
                   label_noise: Sequence[float] = (), report: dict[str, Any] | None = None,
                   groups: np.ndarray | None = None) -> list[dict[str, Any]]:
    """:func:`sweep` of the CV-selected probe (:func:`fit_probe`) on pooled features ``x``.

    ``groups``: None, or (n_docs,) group of every row (the prepared ``group`` column): each draw's
    CV folds keep groups whole, and draws that grouped CV cannot split are skipped (:func:`sweep`).
    """
    x = as_features(x)
    return sweep(lambda s, labels: fit_probe(x, labels, s, n_classes=n_classes, seed=seed, groups=groups, **probe)[0],
                 y, split, sizes=sizes, repeats=repeats, seed=seed, imbalance=imbalance, label_noise=label_noise,
                 n_classes=n_classes, report=report, groups=groups)


def sweep_tfidf(texts: list[str], y: np.ndarray, split: np.ndarray, *, sizes: Iterable[int | None], repeats: int,
                n_classes: int, tfidf: dict[str, Any], probe: dict[str, Any], seed: int, imbalance: Sequence[float] = (),
                label_noise: Sequence[float] = (), report: dict[str, Any] | None = None,
                groups: np.ndarray | None = None) -> list[dict[str, Any]]:
    """:func:`sweep` of the TF-IDF baseline (:func:`fit_tfidf`; vocabulary fitted on each draw's train rows only).

    ``groups``: as for :func:`sweep_features`.
    """
    tfidf = {k: v for k, v in tfidf.items() if k != "enabled"}
    return sweep(lambda s, labels: fit_tfidf(texts, labels, s, n_classes=n_classes, seed=seed, groups=groups, **tfidf,
                                             **probe),
                 y, split, sizes=sizes, repeats=repeats, seed=seed, imbalance=imbalance, label_noise=label_noise,
                 n_classes=n_classes, report=report, groups=groups)
