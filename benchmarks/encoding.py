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

import contextlib
import copy
import time
from collections import Counter
from collections.abc import Iterator
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


@contextlib.contextmanager
def chunk_reads() -> Iterator[Counter[str]]:
    """Count the keys Zarr's LocalStore reads while inside (one ``get`` per chunk decoded)."""
    counts: Counter[str] = Counter()
    original = zarr.storage.LocalStore.get

    async def get(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        counts[key] += 1
        return await original(self, key, *args, **kwargs)

    zarr.storage.LocalStore.get = get  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        zarr.storage.LocalStore.get = original  # type: ignore[method-assign]


def _legacy_copy(store: ActivationStore, layer: int, path: Path) -> ActivationStore:
    """``store`` rewritten in the chunking of stores before: 16,384-row chunks of ``layer_{layer}``."""
    from saeprobe.store import ACTIVATION_COMPRESSOR, CHUNK_TOKENS, AppendWriter, create_array, write_index

    group = zarr.open_group(str(path), mode="w")
    rows = store.rows(layer, 0, store.n_tokens, dtype=None)
    w = AppendWriter(create_array(group, f"layer_{layer}", rows.shape[1:], rows.dtype, CHUNK_TOKENS, ACTIVATION_COMPRESSOR))
    s = AppendWriter(create_array(group, "special", (), bool, CHUNK_TOKENS * 4))
    w.write(rows), s.write(store.special(0, store.n_tokens))
    w.close(), s.close()
    write_index(group, store.offsets, store.doc_id)
    return ActivationStore(path)


def decode_work(sae: Any, store_path: Path, layer: int, out: Path, *, batch_size: int) -> dict[str, Any]:
    """Chunk decodes of ``layer_{layer}`` per stored chunk, and bytes decompressed per token.

    ``before``: the store in the chunking of before (16,384-row chunks) read as encode_store did
    (document blocks of one encode batch each, through ``store.rows``: a chunk spanning k blocks
    is decoded k times); ``after_legacy``: encode_store now on that same store; ``after``:
    encode_store now on the store as extraction writes it now (4,096-row chunks).
    Counted at Zarr's ``LocalStore.get`` (one per chunk read).
    """
    d_sae = int(sae.cfg.d_sae)
    step = encode_batch_size(batch_size, d_sae)
    store = ActivationStore(store_path)
    legacy = _legacy_copy(store, layer, out / "legacy.zarr")
    prefix = f"layer_{layer}/c/"
    res: dict[str, Any] = {"batch_tokens": step}

    def work(s: ActivationStore, counts: Counter[str]) -> dict[str, Any]:
        array = s.group[f"layer_{layer}"]
        rows = int(array.chunks[0])
        decodes = sum(n for k, n in counts.items() if k.startswith(prefix))
        n_chunks = -(-s.n_tokens // rows)
        return {"chunk_rows": rows, "decodes_per_chunk": decodes / n_chunks,
                "bytes_per_token": decodes * rows * int(array.shape[1]) * array.dtype.itemsize / s.n_tokens}

    with chunk_reads() as counts:
        for a, b in legacy.doc_blocks(step):
            legacy.rows(layer, int(legacy.offsets[a]), int(legacy.offsets[b]), dtype=None)
    res["before"] = work(legacy, counts)
    for name, s in (("after_legacy", legacy), ("after", store)):
        with chunk_reads() as counts:
            encode_store(sae, s, layer, zarr.open_group(str(out / f"{name}.zarr"), mode="w"),
                         heldout_docs=np.zeros(int(s.doc_id.max()) + 1, bool), batch_size=batch_size)
        res[name] = work(s, counts)
    return res


def bf16_agreement(sae: Any, x: torch.Tensor) -> dict[str, Any]:
    """How bf16 encoding agrees with float32 on activations ``x`` (n, d_in): mean Jaccard of the
    active latents per token, relative error ‖bf16 − fp32‖ / ‖fp32‖ of the code values (all
    tokens, float64), and the L0 of each."""
    enc = copy.deepcopy(sae).to(torch.bfloat16)
    jac, num, den, l0 = [], 0.0, 0.0, [0, 0]
    with torch.inference_mode():
        for i in range(0, len(x), 1024):
            xb = x[i : i + 1024].float()
            a = sae.encode(xb).double()
            b = enc.encode(xb.to(torch.bfloat16)).double()
            both, either = ((a != 0) & (b != 0)).sum(1), ((a != 0) | (b != 0)).sum(1)
            jac.append((both / either.clamp(min=1)).cpu().numpy())
            num += float(((a - b) ** 2).sum())
            den += float((a**2).sum())
            l0[0] += int((a != 0).sum())
            l0[1] += int((b != 0).sum())
    return {"tokens": len(x), "jaccard": float(np.concatenate(jac).mean()), "rel_error": (num / max(den, 1e-30)) ** 0.5,
            "l0_fp32": l0[0] / len(x), "l0_bf16": l0[1] / len(x)}
