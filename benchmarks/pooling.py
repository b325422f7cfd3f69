"""One-pass pooling benchmark: every pooling of a store in one read, against one read per pooling.

The ``pool`` stage reads each feature store (SAE codes or hidden-state activations of one
model, dataset, source and layer) once and pools it every way the config asks
(:func:`saeprobe.pooling.pool_store_all`). Before, each pooling was its own job that read the
whole store. This benchmark pools the same store both ways in one process and prints, for each,
the wall time, the CPU time and the bytes read (``/proc/self/io`` ``rchar``: every byte the
process read, from disk or from the page cache; the store's chunks are decompressed after
reading, so this counts compressed bytes). A job per pooling also paid the ~2 s import
start-up each, which this in-process comparison leaves out.

    python benchmarks/pooling.py STORE [--layer L] [--poolings mean,max,sum,last,top20]

STORE is a code store (``results/codes/...zarr``) or, with ``--layer``, an activation store.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from saeprobe.pooling import pool_store_all
from saeprobe.store import ActivationStore, CodeStore


def read_chars() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no rchar line")


def measure(store_path: Path, poolings: list[str], layer: int | None) -> dict[str, Any]:
    def open_store():
        return ActivationStore(store_path) if layer is not None else CodeStore(store_path)

    def timed(groups: list[list[str]]) -> dict[str, Any]:
        r0, w0, c0 = read_chars(), time.perf_counter(), time.process_time()
        for group in groups:
            pool_store_all(open_store(), group, layer=layer)
        return {"wall_s": round(time.perf_counter() - w0, 3), "cpu_s": round(time.process_time() - c0, 3),
                "read_mb": round((read_chars() - r0) / 1e6, 2), "passes": len(groups)}

    timed([poolings[:1]])  # warm the page cache and the imports, so both ways start equal
    one = timed([poolings])
    each = timed([[p] for p in poolings])
    return {"store": str(store_path), "poolings": poolings, "one_pass": one, "pass_per_pooling": each,
            "read_ratio": round(each["read_mb"] / max(one["read_mb"], 1e-9), 2),
            "wall_ratio": round(each["wall_s"] / max(one["wall_s"], 1e-9), 2)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", type=Path)
    ap.add_argument("--layer", type=int, help="an activation store's layer (omit for a code store)")
    ap.add_argument("--poolings", default="mean,max,sum,last,top20")
    args = ap.parse_args(argv)
    poolings = args.poolings.split(",")
    if args.layer is not None:
        poolings = [p for p in poolings if not p.startswith("top")]  # top<N> is for SAE codes only
    print(json.dumps(measure(args.store, poolings, args.layer), indent=2))


if __name__ == "__main__":
    main()
