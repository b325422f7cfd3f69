"""SAE encoding throughput and code size: saeprobe's encode stage vs bare ``sae.encode``.

- ``encode_store``: :func:`saeprobe.sae.encode_store` as the ``encode_sae`` stage calls it
  (activation store in, sparse CSR code store out, quality statistics on the way).
- ``bare``: ``sae.encode`` over the same activations held in memory as a float32 tensor on the
  SAE's device, in batches of the same size, results discarded.

Code size: bytes of the whole code store on disk (indices, values, indptr, special, index) per
token, against the 4 x d_sae bytes per token of the same codes stored dense in float32.

SAEs are random, built from a config (no download): TopK with the config's ``k``, or JumpReLU
whose threshold is set on the activations themselves so that about ``l0`` features fire per
token (Gemma Scope's canonical SAEs have L0 around 50-100).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from saeprobe.sae import encode_batch_size, encode_store
from saeprobe.store import ActivationStore


def topk_sae(d_in: int, d_sae: int, k: int, device: torch.device, seed: int = 0) -> Any:
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    return TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device=str(device)))


def jumprelu_sae(d_in: int, d_sae: int, sample: torch.Tensor, l0: int, device: torch.device, seed: int = 0) -> Any:
    """A random JumpReLU SAE whose (scalar) threshold makes about ``l0`` features fire per token of ``sample``."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device=str(device)))
    with torch.no_grad():
        sae.W_enc.normal_(0, 1 / np.sqrt(d_in))
        sae.W_dec.copy_(sae.W_enc.T)
        pre = sample.to(device).float() @ sae.W_enc  # b_dec and b_enc are zero
        kth = torch.topk(pre, min(l0, d_sae), dim=1).values[:, -1]
        sae.threshold.fill_(float(kth.median()))
    return sae


def build_sae(kind: str, d_in: int, d_sae: int, *, k: int, l0: int, sample: torch.Tensor, device: torch.device) -> Any:
    if kind == "topk":
        return topk_sae(d_in, d_sae, k, device)
    if kind == "jumprelu":
        return jumprelu_sae(d_in, d_sae, sample, l0, device)
    raise ValueError(f"unknown SAE kind {kind!r} (topk, jumprelu)")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_encoding(sae: Any, store_path: Path, layer: int, out: Path, device: torch.device, *, batch_size: int,
                   repeats: int) -> dict[str, Any]:
    """Time encode_store and bare sae.encode (interleaved, ``repeats`` times) on one layer of a store."""
    store = ActivationStore(store_path)
    n = store.n_tokens
    heldout = np.arange(int(store.doc_id.max()) + 1) % 5 == 0  # a fixed fifth of the documents
    x = torch.from_numpy(store.rows(layer, 0, n)).to(device)
    d_sae = int(sae.cfg.d_sae)
    step = encode_batch_size(batch_size, d_sae)
    walls: dict[str, list[float]] = {"encode_store": [], "bare": []}
    stats: dict[str, Any] = {}
    with torch.inference_mode():
        sae.encode(x[:step])  # warm-up
    for r in range(repeats):
        group_path = out / f"codes_{r}.zarr"
        sync(device)
        t0 = time.perf_counter()
        stats = encode_store(sae, store, layer, zarr.open_group(str(group_path), mode="w"), heldout_docs=heldout,
                             batch_size=batch_size)
        sync(device)
        walls["encode_store"].append(time.perf_counter() - t0)
        size = sum(p.stat().st_size for p in group_path.rglob("*") if p.is_file())
        if r < repeats - 1:
            import shutil

            shutil.rmtree(group_path, ignore_errors=True)
        sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, n, step):
                sae.encode(x[i : i + step])
        sync(device)
        walls["bare"].append(time.perf_counter() - t0)
    per_token = size / n
    return {
        "d_in": int(sae.cfg.d_in), "d_sae": d_sae, "tokens": n, "batch_tokens": step,
        "l0": stats["quality"].get("l0"), "explained_variance": stats["quality"].get("explained_variance"),
        "encode_store_wall_s": walls["encode_store"], "bare_wall_s": walls["bare"],
        "encode_store_vectors_per_s": n / float(np.median(walls["encode_store"])),
        "bare_vectors_per_s": n / float(np.median(walls["bare"])),
        "code_bytes_per_token": per_token, "dense_fp32_bytes_per_token": 4.0 * d_sae,
        "code_vs_dense": per_token / (4.0 * d_sae),
        "code_arrays_bytes": {name: _array_bytes(group_path / name) for name in ("indices", "values", "indptr", "special")},
    }


def _array_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
