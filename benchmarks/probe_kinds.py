"""What the trusted-probing stages cost: bootstrap intervals, paired tests, k-sparse probes, strong baselines.

Synthetic data shaped like the default run's largest unit (trec: ~6k documents, 6 classes):
pooled SAE codes (CSR, ``width`` features, ~32 active per document, from
:func:`probe.synthetic_codes`) for the k-sparse rankings, dense hidden-state-like features
(``d`` dims) for the baselines. One thread (``OMP_NUM_THREADS`` etc. set before numpy loads).
Prints a markdown table of wall and CPU seconds per call; asserts nothing.

    python benchmarks/probe_kinds.py [--docs 5000] [--width 2048] [--dim 384] [--classes 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe import synthetic_codes  # noqa: E402

from saeprobe.baselines import BASELINES, fit_baseline  # noqa: E402
from saeprobe.bootstrap import paired_difference, score_intervals  # noqa: E402
from saeprobe.ksparse import RANKINGS, fit_ksparse, rank_features  # noqa: E402

KS = [1, 2, 5, 10, 20, 50, 100, 200, 500]
PROBE = dict(Cs=[0.01, 0.1, 1.0, 10.0], cv_folds=5)


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    k = args.classes
    codes, _, split = synthetic_codes(args.docs, args.width, 32, seed=1)
    y = rng.integers(0, k, args.docs)
    codes = codes.tolil()
    for c in range(k):  # a few class-specific features so the rankings have something to find
        rows = np.flatnonzero(y == c)
        codes[rows, 10 * c] = rng.integers(1, 4, len(rows))
    codes = codes.tocsr()
    hidden = rng.normal(size=(args.docs, args.dim)) + 0.8 * np.eye(k, args.dim)[y]
    test = split == "test"
    n_test = int(test.sum())
    pred = np.where(rng.random(n_test) < 0.7, y[test], rng.integers(0, k, n_test))
    proba = rng.dirichlet(np.ones(k), n_test)
    rows = []
    wall, cpu = timed(lambda: score_intervals(y[test], pred, proba, k, n_resamples=args.resamples))
    rows.append(("score_intervals (macro F1, accuracy, AUROC)", f"{n_test} test docs, B={args.resamples}", wall, cpu))
    other = np.roll(pred, 1)
    wall, cpu = timed(lambda: paired_difference(y[test], (pred, proba), (other, proba), k, n_resamples=args.resamples))
    rows.append(("paired_difference", f"{n_test} test docs, B={args.resamples}", wall, cpu))
    train = split == "train"
    for ranking in RANKINGS:
        wall, cpu = timed(lambda r=ranking: rank_features(codes, y, train, r, n_classes=k))
        rows.append((f"rank_features {ranking}", f"{args.docs} × {args.width} CSR", wall, cpu))
        wall, cpu = timed(lambda r=ranking: fit_ksparse(codes, y, split, ranking=r, ks=KS, n_classes=k, probe=PROBE, seed=0))
        rows.append((f"fit_ksparse {ranking}, k = {KS[0]}…{KS[-1]}", f"{args.docs} × {args.width} CSR", wall, cpu))
    for name in BASELINES:
        wall, cpu = timed(lambda n=name: fit_baseline(n, hidden, y, split, n_classes=k, seed=0))
        rows.append((f"baseline {name} (grid search + refit)", f"{args.docs} × {args.dim} dense", wall, cpu))
    print(f"| call | input ({k} classes) | wall s | CPU s |\n|---|---|---|---|")
    for name, shape, wall, cpu in rows:
        print(f"| {name} | {shape} | {wall:.2f} | {cpu:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
