"""Extraction throughput: saeprobe's stage vs a naive MOSAIC-style loop vs a bare forward pass.

Three ways to turn the same documents into stored residual-stream activations, timed on the
same model, data and machine:

- ``saeprobe``: :func:`saeprobe.activations.extract` exactly as the ``extract_activations``
  stage calls it (length-sorted batches under a token budget, hooks with early stop after the
  deepest layer, no padding stored, cast on the device, Zarr writes on a writer thread).
- ``naive``: batches of ``batch_size`` documents in file order padded to the longest, a full
  forward pass with ``output_hidden_states=True``, and one ``np.savez_compressed`` file per
  document holding its requested layers (float32, real tokens) — the MOSAIC-style anchor.
- ``bare``: the forward pass alone over saeprobe's own batches (same padding, same early stop),
  tensors built beforehand, nothing copied or written — the ceiling for our I/O and bookkeeping.

Plus the FLOP ceiling: measured dense matmul FLOP/s in the compute dtype, divided by
2 x (non-embedding parameters of the blocks up to the deepest requested layer) per token.
Attention's sequence-length-dependent FLOPs are not in that count (reported separately as an
estimate from the batch shapes), so for small models with long documents the "ceiling" is
optimistic and model FLOP utilisation (MFU) understates how busy the machine is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn

from saeprobe.activations import LayerCapture, extract, plan_batches
from saeprobe.models import blocks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Repeated timings of one variant: wall and process-CPU seconds per run."""

    tokens: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    def summary(self) -> dict[str, Any]:
        w = np.array(self.wall)
        return {
            "tokens": self.tokens, "runs": len(w), "wall_s": self.wall, "cpu_s": self.cpu,
            "tokens_per_s": self.tokens / float(np.median(w)), "tokens_per_s_best": self.tokens / float(w.min()),
            "tokens_per_cpu_s": self.tokens / float(np.median(self.cpu)), **self.extra,
        }


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


# --------------------------------------------------------------------------- variants


def run_saeprobe(model: nn.Module, ids: Sequence[np.ndarray], special: Sequence[np.ndarray], layers: Sequence[int],
                 folder: Path, *, token_budget: int, store_dtype: str, convention: str = "block_output") -> dict[str, Any]:
    """The extraction stage's call (workflow/scripts/extract_activations.py), into ``folder``."""
    group = zarr.open_group(str(folder), mode="w")
    return extract(model, ids, special, group, layers, convention=convention, token_budget=token_budget,
                   store_dtype=store_dtype)


def saeprobe_batches(ids: Sequence[np.ndarray], token_budget: int, pad_id: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """saeprobe's padded batches (plan_batches), built as CPU tensors."""
    lengths = np.array([len(x) for x in ids])
    out = []
    for batch in plan_batches(lengths, token_budget):
        width = int(lengths[batch].max())
        x = np.full((len(batch), width), pad_id, dtype=np.int64)
        m = np.zeros((len(batch), width), dtype=np.int64)
        for row, doc in enumerate(batch):
            x[row, : lengths[doc]] = ids[doc]
            m[row, : lengths[doc]] = 1
        out.append((torch.from_numpy(x), torch.from_numpy(m)))
    return out


def run_bare(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], layers: Sequence[int],
             device: torch.device) -> None:
    """Forward passes only (hooks + early stop, as saeprobe), on tensors already on the device."""
    cap = LayerCapture(model, layers)
    try:
        with torch.inference_mode():
            for x, m in batches:
                cap.run(model, x, m)
    finally:
        cap.remove()


def run_naive(model: nn.Module, ids: Sequence[np.ndarray], layers: Sequence[int], folder: Path, device: torch.device,
              *, batch_size: int = 32, pad_id: int = 0) -> None:
    """MOSAIC-style: file-order batches padded to the longest, full forward with all hidden
    states, one compressed .npz per document (its requested layers, real tokens, float32)."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            docs = ids[start : start + batch_size]
            width = max(len(d) for d in docs)
            x = np.full((len(docs), width), pad_id, dtype=np.int64)
            m = np.zeros((len(docs), width), dtype=np.int64)
            for row, d in enumerate(docs):
                x[row, : len(d)] = d
                m[row, : len(d)] = 1
            out = model(input_ids=torch.from_numpy(x).to(device), attention_mask=torch.from_numpy(m).to(device),
                        output_hidden_states=True)
            hs = out.hidden_states
            for row, d in enumerate(docs):
                arrays = {f"layer_{layer}": hs[layer + 1][row, : len(d)].float().cpu().numpy() for layer in layers}
                np.savez_compressed(folder / f"{start + row}.npz", **arrays)


# --------------------------------------------------------------------------- FLOP ceiling


def matmul_flops(device: torch.device, dtype: torch.dtype, size: int | None = None, seconds: float = 2.0) -> float:
    """Measured dense matmul FLOP/s (best of repeated ``size``² x ``size``² products)."""
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    with torch.inference_mode():
        a @ b  # warm-up
        best, spent = float("inf"), 0.0
        while spent < seconds:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(4):
                a @ b
            sync(device)
            dt = (time.perf_counter() - t0) / 4
            best, spent = min(best, dt), spent + 4 * dt
    return 2.0 * size**3 / best


def params_to_layer(model: nn.Module, deepest: int) -> int:
    """Non-embedding parameters of blocks 0..deepest (what a token's forward pass multiplies)."""
    return sum(p.numel() for block in list(blocks(model))[: deepest + 1] for p in block.parameters())


def attention_flops_per_token(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], deepest: int) -> float:
    """Estimate of attention score/value FLOPs per real token (4 x padded length x heads x head_dim per layer)."""
    cfg = model.config
    heads = int(getattr(cfg, "num_attention_heads", 1))
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    total = sum(4.0 * x.shape[1] * heads * head_dim * x.shape[0] * x.shape[1] for x, _ in batches)
    real = sum(int(m.sum()) for _, m in batches)
    return total * (deepest + 1) / max(real, 1)


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"saeprobe-bench-{prefix}-"))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def bench_extraction(model: nn.Module, ids: Sequence[np.ndarray], special: Sequence[np.ndarray], layers: Sequence[int],
                     device: torch.device, dtype: torch.dtype, *, token_budget: int, store_dtype: str, repeats: int,
                     naive_batch: int, keep: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time the three variants, interleaved (saeprobe, bare, naive; then bare, naive, saeprobe; ...),
    ``repeats`` times, after a warm-up.

    Interleaving spreads a busy machine's load over all variants alike, and rotating the order
    keeps any "first in the round" effect off a single variant. The last saeprobe store is
    moved to ``keep`` (the encoding benchmark reads it).
    """
    n_tokens = int(sum(len(x) for x in ids))
    batches_cpu = saeprobe_batches(ids, token_budget)
    batches = [(x.to(device), m.to(device)) for x, m in batches_cpu]
    timings = {name: Timing(n_tokens) for name in ("saeprobe", "bare", "naive")}
    # Warm-up: lazy imports and thread pools of Zarr and codecs on a few documents, then one bare
    # pass over all of saeprobe's batches (on CPU, oneDNN compiles a bfloat16 kernel per new
    # batch shape; without this the variant timed first would pay for all of them).
    few = list(range(min(8, len(ids))))
    folder = temp_dir("warmup")
    run_saeprobe(model, [ids[i] for i in few], [special[i] for i in few], layers, folder / "w.zarr",
                 token_budget=token_budget, store_dtype=store_dtype)
    run_naive(model, [ids[i] for i in few], layers, folder / "naive", device, batch_size=naive_batch)
    remove(folder)
    run_bare(model, batches, layers, device)
    stats: dict[str, Any] = {}
    order = ["saeprobe", "bare", "naive"]
    for r in range(repeats):
        for name in order[r % 3:] + order[: r % 3]:  # rotate who goes first
            if name == "saeprobe":
                folder = temp_dir("extract")
                wall, cpu, stats = timed(lambda f=folder: run_saeprobe(model, ids, special, layers, f, token_budget=token_budget,
                                                                       store_dtype=store_dtype), device)
                timings[name].extra["store_bytes"] = du(folder)
                if r == repeats - 1:
                    remove(keep)
                    shutil.move(str(folder), str(keep))
                else:
                    remove(folder)
            elif name == "bare":
                wall, cpu, _ = timed(lambda: run_bare(model, batches, layers, device), device)
            else:
                folder = temp_dir("naive")
                wall, cpu, _ = timed(lambda f=folder: run_naive(model, ids, layers, f, device, batch_size=naive_batch), device)
                timings[name].extra["store_bytes"] = du(folder)
                remove(folder)
            timings[name].add(wall, cpu)
            log(f"    {name:8s} run {r + 1}: {n_tokens / wall:,.0f} tokens/s")
    lengths = np.array([len(x) for x in ids])
    padded_sorted = sum(x.numel() for x, _ in batches_cpu)
    padded_naive = sum(naive_batch_width * n for naive_batch_width, n in _naive_shapes(lengths, naive_batch))
    result = {name: t.summary() for name, t in timings.items()}
    result["saeprobe"]["padded_tokens"] = padded_sorted
    result["bare"]["padded_tokens"] = padded_sorted
    result["naive"]["padded_tokens"] = padded_naive
    result["max_abs"] = {str(k): v for k, v in stats["max_abs"].items()}
    result["batches"] = len(batches)
    result["attention_flops_per_token"] = attention_flops_per_token(model, batches_cpu, max(layers))
    return result


def _naive_shapes(lengths: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    return [(int(lengths[i : i + batch_size].max()), len(lengths[i : i + batch_size])) for i in range(0, len(lengths), batch_size)]


def du(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- writer throughput

H200_BF16_FLOPS = 989e12  # dense bf16 tensor-core peak of an H200 (SXM)
GEMMA2B_PARAMS = 2.6e9


def h200_tokens_per_s(params: float = GEMMA2B_PARAMS, mfu: float = 0.5) -> float:
    """Estimated forward tokens/s of an H200: ``mfu`` x 989 TFLOP/s bf16 / (2 x ``params``) FLOPs per token."""
    return mfu * H200_BF16_FLOPS / (2.0 * params)


def bench_writer(*, tokens: int, d_model: int = 2304, n_layers: int = 3, batch_tokens: int = 16384,
                 repeats: int = 1, seed: int = 0) -> dict[str, Any]:
    """Writer throughput (GB/s of float16 activations in, to a local Zarr store) on a
    Gemma-2B-shaped stream: ``n_layers`` layers of ``d_model`` float16, ``batch_tokens`` rows per
    batch, data N(0, s_j²) per dimension with log-normal scales s_j (residual streams have a few
    large dimensions; compressibility is that of such data, not of a real model's).

    ``current``: saeprobe's writers (:func:`saeprobe.activations.activation_writers`: 4,096-row
    chunks, 4 per append, one thread per layer); ``before``: 16,384-row chunks, one per append,
    one writer thread for all layers. Each into a local folder (compression and disk) and into
    a Zarr ``MemoryStore`` (compression alone). The producer only submits, so the wall time is
    the writer's.
    """
    from saeprobe.activations import activation_writers
    from saeprobe.store import ACTIVATION_COMPRESSOR, AppendWriter, BackgroundWriter, create_array

    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0, 1, d_model)).astype(np.float32)
    batch = (rng.standard_normal((batch_tokens, d_model), dtype=np.float32) * scale).astype(np.float16)
    n_batches = max(1, tokens // batch_tokens)
    gb = n_batches * batch_tokens * d_model * 2 * n_layers / 1e9

    class Fan:  # before: one writer thread writing each array of a batch in turn
        def __init__(self, writers: dict[str, AppendWriter]) -> None:
            self.writers = writers

        def write(self, rows: dict[str, np.ndarray]) -> None:
            for key, r in rows.items():
                self.writers[key].write(r)

        def close(self) -> int:
            return max(w.close() for w in self.writers.values())

    def run(variant: str, in_memory: bool) -> float:
        folder = temp_dir(f"writer-{variant}")
        group = zarr.open_group(zarr.storage.MemoryStore() if in_memory else str(folder), mode="w")
        layers = list(range(n_layers))
        if variant == "current":
            writer: Any = BackgroundWriter(activation_writers(group, layers, d_model, "float16"))
        else:
            plain = {f"layer_{i}": AppendWriter(create_array(group, f"layer_{i}", (d_model,), "float16", 16384,
                                                             ACTIVATION_COMPRESSOR)) for i in layers}
            plain["special"] = AppendWriter(create_array(group, "special", (), bool, 65536))
            writer = BackgroundWriter({"all": Fan(plain)})  # type: ignore[dict-item]
            writer.submit = lambda rows, w=writer, s=BackgroundWriter.submit: s(w, {"all": rows})  # type: ignore[method-assign]
        special = np.zeros(batch_tokens, bool)
        t0 = time.perf_counter()
        with writer:
            for _ in range(n_batches):
                writer.submit({**{f"layer_{i}": batch for i in layers}, "special": special})
            writer.close()
        wall = time.perf_counter() - t0
        remove(folder)
        return wall

    walls: dict[str, list[float]] = {f"{v}{m}": [] for v in ("current", "before") for m in ("", "_memory")}
    for r in range(repeats):
        for v in (["current", "before"] if r % 2 == 0 else ["before", "current"]):
            for m in ("", "_memory"):
                walls[f"{v}{m}"].append(run(v, bool(m)))
    out = {v: gb / float(np.median(w)) for v, w in walls.items()}
    h200 = h200_tokens_per_s()
    return {"d_model": d_model, "layers": n_layers, "tokens": n_batches * batch_tokens, "gb": gb,
            "writer_gb_per_s": out["current"], "before_gb_per_s": out["before"],
            "writer_memory_gb_per_s": out["current_memory"], "before_memory_gb_per_s": out["before_memory"], "wall_s": walls,
            "h200_tokens_per_s": h200, "h200_gb_per_s": h200 * d_model * 2 * n_layers / 1e9,
            "assumption": "H200 forward = 0.5 x 989 TFLOP/s bf16 / (2 x 2.6e9 params) FLOP per token",
            "cpu_threads": os.cpu_count()}
