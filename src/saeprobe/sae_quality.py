"""SAE quality beside probe quality: SAEBench's core metrics per SAE and layer, on held-out documents.

Reconstruction (every SAE): on up to ``sae_quality.max_tokens`` non-special tokens of documents
outside the train split (validation and test) of the SAE's datasets, L0, explained variance,
MSE and dead fraction (:func:`saeprobe.sae.measure`), plus the **dense fraction**: the share of
latents firing on more than ``dense_threshold`` of those tokens (SAEBench core uses 10 %).

Downstream loss (causal LMs only; Karvonen et al. 2025, SAEBench §3 "core"): the SAE's
reconstruction is spliced into the residual stream at the SAE's hook point — the output of
block L (``block_output``), or the input of block L (``mosaic``), docs/DESIGN.md §5 — by a
forward hook replacing that tensor at non-special, non-pad positions (BOS keeps its clean
activation, as the SAE never saw it); next-token cross-entropy is measured clean, spliced
and with those positions zero-ablated, and

    loss recovered = (CE_zero − CE_spliced) / (CE_zero − CE_clean)

(1 = as good as the model, 0 = as bad as deleting the residual stream), with the per-token
KL(clean ‖ spliced) of the next-token distributions. An encoder (MiniLM) has no LM head: its
loss columns are null.

The run's table ``tables/saes.*`` (:func:`sae_table`) puts these beside each SAE's best
probe per dataset (all-feature grid probe and k-sparse probe, both chosen on CV macro F1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from saeprobe.io import read_json
from saeprobe.tables import cv_choice

if TYPE_CHECKING:  # torch is imported by the functions that compute: the table job (sae_table) needs none of it
    import torch

log = logging.getLogger("saeprobe")


# --------------------------------------------------------------------------- reconstruction


def firing_fractions(sae: Any, x: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """Per latent, the share of the rows of ``x`` (n, d_in) on which its code is non-zero: (d_sae,) float64."""
    import torch

    device = next(sae.parameters()).device
    counts = torch.zeros(int(sae.cfg.d_sae), dtype=torch.float64, device=device)
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            counts += (sae.encode(x[i : i + batch_size].to(device)) != 0).sum(0, dtype=torch.float64)
    return (counts / max(len(x), 1)).cpu().numpy()


def reconstruction(sae: Any, x: torch.Tensor, dense_threshold: float) -> dict[str, float]:
    """:func:`saeprobe.sae.measure` of ``sae`` on held-out vectors ``x`` (n, d_in) float32, plus
    ``dense_fraction`` (share of latents firing on > ``dense_threshold`` of the rows) and
    ``dense_threshold`` itself."""
    from saeprobe.sae import measure

    out = measure(sae, x)
    freq = firing_fractions(sae, x)
    out["dense_fraction"] = float((freq > dense_threshold).mean()) if len(x) else float("nan")
    out["dense_threshold"] = dense_threshold
    return out


# --------------------------------------------------------------------------- spliced loss


def _splice_hook(block: torch.nn.Module, convention: str, replace: Any) -> Any:
    """Register a hook on ``block`` that passes its output (``block_output``) or its input (``mosaic``)
    through ``replace(tensor) -> tensor``; returns the handle."""
    if convention == "block_output":
        def post(module: Any, args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (replace(output[0]), *output[1:])
            return replace(output)

        return block.register_forward_hook(post)

    def pre(module: Any, args: Any, kwargs: Any) -> Any:
        if args:
            return (replace(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": replace(kwargs["hidden_states"])}

    return block.register_forward_pre_hook(pre, with_kwargs=True)


def spliced_loss(model: torch.nn.Module, sae: Any, docs: Sequence[tuple[np.ndarray, np.ndarray]], layer: int,
                 convention: str = "block_output", *, max_tokens: int, token_budget: int = 8192,
                 pad_id: int = 0) -> dict[str, Any]:
    """Cross-entropy of ``model`` clean, with ``sae``'s reconstruction spliced in at ``layer``, and zero-ablated.

    Args:
        model: a causal LM (``AutoModelForCausalLM``-like: ``model(input_ids, attention_mask).logits``).
        sae: anything with ``encode`` / ``decode`` over (n, d_model) float32 tensors (an SAELens SAE).
        docs: (token ids (n,) int64, special-token mask (n,) bool) per document, in the order used;
            documents are taken until ``max_tokens`` predicted tokens are reached.
        layer, convention: the hook point (see the module docstring).
        token_budget: padded tokens per forward batch.
    Returns:
        ``ce_clean``, ``ce_spliced``, ``ce_zero`` (nats per predicted token, mean over every real
        next-token target), ``loss_recovered`` (NaN when CE_zero = CE_clean), ``kl_div`` (mean
        KL(clean ‖ spliced) per token, nats), ``n_loss_tokens``, ``n_loss_docs``.
    """
    import torch

    from saeprobe.models import blocks

    block = blocks(model)[layer]
    device = next(model.parameters()).device
    chosen, total = [], 0
    for ids, special in docs:
        if len(ids) < 2 or total >= max_tokens:
            continue
        chosen.append((ids, special))
        total += len(ids) - 1
    sums = {"clean": 0.0, "spliced": 0.0, "zero": 0.0, "kl": 0.0}
    n = 0
    state: dict[str, Any] = {}

    def replace(h: torch.Tensor) -> torch.Tensor:
        mode, keep = state["mode"], state["splice"]
        if mode == "clean":
            return h
        if mode == "zero":
            new = torch.zeros_like(h)
        else:
            flat = h[keep].float()
            new = h.clone()
            new[keep] = sae.decode(sae.encode(flat)).to(h.dtype)
            return new
        return torch.where(keep.unsqueeze(-1), new, h)

    handle = _splice_hook(block, convention, replace)
    try:
        with torch.inference_mode():
            i = 0
            while i < len(chosen):
                width = len(chosen[i][0])
                j = i + 1
                while j < len(chosen) and max(width, len(chosen[j][0])) * (j + 1 - i) <= token_budget:
                    width = max(width, len(chosen[j][0]))
                    j += 1
                batch = chosen[i:j]
                i = j
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                splice = torch.zeros((len(batch), width), dtype=torch.bool)
                for r, (t, s) in enumerate(batch):
                    ids[r, : len(t)] = torch.from_numpy(np.asarray(t, dtype=np.int64))
                    mask[r, : len(t)] = 1
                    splice[r, : len(t)] = ~torch.from_numpy(np.asarray(s, dtype=bool))
                ids, mask, splice = ids.to(device), mask.to(device), splice.to(device)
                target = ids[:, 1:]
                real = mask[:, 1:].bool()
                logp = {}
                for mode in ("clean", "spliced", "zero"):
                    state.update(mode=mode, splice=splice)
                    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                    logp[mode] = torch.log_softmax(logits, -1)
                    nll = -logp[mode].gather(-1, target.unsqueeze(-1)).squeeze(-1)
                    sums[mode] += float(nll[real].sum(dtype=torch.float64))
                kl = (logp["clean"].exp() * (logp["clean"] - logp["spliced"])).sum(-1)
                sums["kl"] += float(kl[real].sum(dtype=torch.float64))
                n += int(real.sum())
    finally:
        handle.remove()
    if n == 0:
        return {"ce_clean": None, "ce_spliced": None, "ce_zero": None, "loss_recovered": None, "kl_div": None,
                "n_loss_tokens": 0, "n_loss_docs": 0}
    ce = {k: sums[k] / n for k in ("clean", "spliced", "zero")}
    gap = ce["zero"] - ce["clean"]
    return {"ce_clean": ce["clean"], "ce_spliced": ce["spliced"], "ce_zero": ce["zero"],
            "loss_recovered": (ce["zero"] - ce["spliced"]) / gap if gap != 0 else float("nan"),
            "kl_div": sums["kl"] / n, "n_loss_tokens": n, "n_loss_docs": len(chosen)}


# --------------------------------------------------------------------------- the run's table

SAES_SCHEMA: dict[str, Any] = {
    "sae": pl.String, "model": pl.String, "layer": pl.Int64, "architecture": pl.String, "width": pl.Int64,
    "k": pl.Float64, "sparsity_key": pl.String, "sparsity": pl.Float64, "l0": pl.Float64,
    "explained_variance": pl.Float64, "mse": pl.Float64, "dead_fraction": pl.Float64, "dense_fraction": pl.Float64,
    "n_tokens": pl.Int64, "ce_clean": pl.Float64, "ce_spliced": pl.Float64, "ce_zero": pl.Float64,
    "loss_recovered": pl.Float64, "kl_div": pl.Float64, "n_loss_tokens": pl.Int64, "saved_l0_over_k": pl.Float64,
    "dataset": pl.String, "grid_test_macro_f1": pl.Float64, "grid_test_macro_f1_lo": pl.Float64,
    "grid_test_macro_f1_hi": pl.Float64, "grid_cv_macro_f1": pl.Float64, "grid_pooling": pl.String,
    "grid_binarize": pl.Float64, "ksparse_test_macro_f1": pl.Float64, "ksparse_test_macro_f1_lo": pl.Float64,
    "ksparse_test_macro_f1_hi": pl.Float64, "ksparse_k": pl.Int64, "ksparse_ranking": pl.String,
}
QUALITY_KEYS = ("l0", "explained_variance", "mse", "dead_fraction", "dense_fraction", "n_tokens", "ce_clean",
                "ce_spliced", "ce_zero", "loss_recovered", "kl_div", "n_loss_tokens")


def sae_table(quality_files: Sequence[str | Path], grid: pl.DataFrame, ksparse: pl.DataFrame | None = None) -> pl.DataFrame:
    """``tables/saes``: one row per (SAE, layer, dataset it is probed on in the grid), schema :data:`SAES_SCHEMA`.

    Quality columns come from the ``sae_quality`` files (held-out documents; loss columns null
    for non-causal models); ``grid_*``: the SAE's all-feature logistic probe chosen on CV macro
    F1 by the one-standard-error rule (:func:`saeprobe.tables.cv_choice`) over poolings and
    binarizations (its test macro F1 reported, with its bootstrap interval
    ``*_lo``/``*_hi``); ``ksparse_*``: the same over
    k-sparse probes (rankings and k), when the k-sparse stage ran on this SAE. An SAE probed on
    no dataset gets one row with null dataset.
    """
    grid = grid.filter((pl.col("family") == "sae") & (pl.col("probe") == "logreg"))
    best_grid = cv_choice(grid, ["source", "layer", "dataset"]) if grid.height else grid
    best_k = None
    if ksparse is not None and ksparse.height:
        best_k = cv_choice(ksparse.filter(pl.col("family") == "sae"), ["source", "layer", "dataset"])
    rows = []
    for path in quality_files:
        q = read_json(path)
        base = {"sae": q["sae"], "model": q["model"], "layer": q["layer"], "architecture": q["architecture"],
                "width": q["width"], "k": q.get("k"), "sparsity_key": q.get("sparsity_key"),
                "sparsity": q.get("sparsity"), "saved_l0_over_k": q.get("saved_l0_over_k"),
                **{key: q["quality"].get(key) for key in QUALITY_KEYS}}
        probes = best_grid.filter((pl.col("source") == q["sae"]) & (pl.col("layer") == q["layer"])) if best_grid.height else best_grid
        if not probes.height:
            rows.append({**base, "dataset": None})
        for p in probes.iter_rows(named=True):
            row = {**base, "dataset": p["dataset"], "grid_test_macro_f1": p["test_macro_f1"],
                   "grid_test_macro_f1_lo": p["test_macro_f1_lo"], "grid_test_macro_f1_hi": p["test_macro_f1_hi"],
                   "grid_cv_macro_f1": p["cv_macro_f1"], "grid_pooling": p["pooling"], "grid_binarize": p["binarize"]}
            if best_k is not None:
                kb = best_k.filter((pl.col("source") == q["sae"]) & (pl.col("layer") == q["layer"])
                                   & (pl.col("dataset") == p["dataset"]))
                if kb.height:
                    r = kb.row(0, named=True)
                    row.update(ksparse_test_macro_f1=r["test_macro_f1"], ksparse_test_macro_f1_lo=r["test_macro_f1_lo"],
                               ksparse_test_macro_f1_hi=r["test_macro_f1_hi"], ksparse_k=r["k"],
                               ksparse_ranking=r["ranking"])
            rows.append(row)
    df = pl.DataFrame([{c: r.get(c) for c in SAES_SCHEMA} for r in rows], schema=SAES_SCHEMA, orient="row")
    return df.sort(["model", "layer", "architecture", "width", "l0", "sae", "dataset"], nulls_last=True)
