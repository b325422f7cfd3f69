"""Does a bfloat16 SAE encode change what the probe finds? float32 vs bfloat16 codes of one SAE on one
dataset, through saeprobe's own encode, pooling and probe (``saes.<name>.encode_dtype``).

    python benchmarks/bf16_probe.py --store results/activations/minilm/trec.zarr \\
        --sae results/saes/minilm_topk/layer_4 --data results/data/trec.parquet --layer 4

Prints (markdown) the active-set agreement of the token codes (mean per-token Jaccard of the
active latents, relative error of the values they share), and for each pooling the test macro
F1 of the CV-selected probe on float32 and on bfloat16 codes with their paired difference
(stratified bootstrap over the same test documents, saeprobe.bootstrap), plus the share of
test documents whose predicted class changed. On a CPU bfloat16 matmuls are emulated where
they are not native; agreement, not speed, is the point here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import zarr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    from saeprobe import bootstrap, data
    from saeprobe.pooling import pool_store_all
    from saeprobe.probes import fit_probe, macro_f1
    from saeprobe.sae import encode_store, load_sae
    from saeprobe.store import ActivationStore, CodeStore

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, help="activation store (results/activations/<model>/<dataset>.zarr)")
    ap.add_argument("--sae", required=True, help="SAELens folder (results/saes/<sae>/layer_<L>)")
    ap.add_argument("--data", required=True, help="prepared dataset (results/data/<dataset>.parquet)")
    ap.add_argument("--layer", type=int, required=True)
    ap.add_argument("--poolings", default="mean,top20")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)

    sae = load_sae({"path": args.sae}, args.layer, "cpu")
    store = ActivationStore(args.store)
    frame, _ = data.read(args.data)
    y, split, _ = data.label_arrays(frame)
    heldout = split != "train"
    poolings = args.poolings.split(",")
    pooled, codes = {}, {}
    with tempfile.TemporaryDirectory(prefix="saeprobe-bf16-") as tmp:
        for dtype in ("float32", "bfloat16"):
            group = zarr.open_group(str(Path(tmp) / f"{dtype}.zarr"), mode="w")
            with torch.inference_mode():
                encode_store(sae, store, args.layer, group, heldout_docs=heldout, dtype=dtype)
            code_store = CodeStore(Path(tmp) / f"{dtype}.zarr")
            codes[dtype] = code_store.rows(0, min(code_store.n_tokens, 20000))
            pooled[dtype], _ = pool_store_all(code_store, poolings)
    a, b = (codes[d].tocsr() for d in ("float32", "bfloat16"))
    jaccard = []
    for i in range(a.shape[0]):
        sa, sb = set(a.indices[a.indptr[i]:a.indptr[i + 1]]), set(b.indices[b.indptr[i]:b.indptr[i + 1]])
        jaccard.append(len(sa & sb) / max(1, len(sa | sb)))
    shared = a.multiply(b != 0).tocsr()
    ref = a.multiply(shared != 0).tocsr()
    diff = (b.multiply(shared != 0) - ref).tocsr()
    rel = np.abs(diff.data).max() / np.abs(ref.data).max() if ref.nnz else 0.0
    print(f"SAE {args.sae} ({sae.cfg.architecture()}, width {sae.cfg.d_sae}) on {args.store}, layer {args.layer}\n")
    print(f"- tokens compared: {a.shape[0]}; mean per-token Jaccard of active latents: {np.mean(jaccard):.4f} "
          f"(min {np.min(jaccard):.3f}); largest value error relative to the largest code: {rel:.2e}\n")
    print("| pooling | float32 test F1 | bfloat16 test F1 | bf16 − fp32 [95 % CI] | test predictions changed |")
    print("|---|---|---|---|---|")
    test = split == "test"
    n_classes = int(y.max()) + 1
    for pooling in poolings:
        preds = {}
        for dtype in ("float32", "bfloat16"):
            result, _, _ = fit_probe(pooled[dtype][pooling], y, split, Cs=[0.01, 0.1, 1.0, 10.0], cv_folds=5, seed=args.seed)
            preds[dtype] = result["predictions"]["test"]  # (pred, proba)
        f1 = {d: macro_f1(y[test], preds[d][0], n_classes) for d in preds}
        d = bootstrap.paired_difference(y[test], preds["bfloat16"], preds["float32"], n_classes, seed=args.seed)
        changed = float(np.mean(preds["bfloat16"][0] != preds["float32"][0]))
        print(f"| {pooling} | {f1['float32']:.4f} | {f1['bfloat16']:.4f} | {d['difference']:+.4f} "
              f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] | {changed:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
