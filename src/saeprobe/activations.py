"""Residual-stream extraction: one forward pass per (model, dataset) for all requested layers.

Layer convention (DESIGN.md §5): ``layer L`` is the residual stream *after* decoder/encoder
block L — TransformerLens ``blocks.L.hook_resid_post``, what Gemma Scope's ``layer_L`` SAEs
were trained on, Hugging Face ``hidden_states[L+1]``. It is captured with a forward hook on
block L (``hidden_states[-1]`` is taken after the final norm in many models, so it is never
used). ``layer_convention='mosaic'`` instead captures the *input* of block L, i.e.
``hidden_states[L]`` exactly as the MOSAIC reference code indexed it.

The forward pass stops (by an exception raised from the hook) as soon as the deepest
requested layer has been captured. Documents are sorted by length and batched under a padded
token budget; only real (non-pad) tokens are written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn
from tqdm import tqdm

from saeprobe.models import blocks
from saeprobe.store import CHUNK_TOKENS, AppendWriter, create_array, write_index

log = logging.getLogger("saeprobe")

FLOAT16_MAX = float(np.finfo(np.float16).max)


class _StopForward(Exception):
    """Raised by the capture hook once the deepest layer is captured."""


def plan_batches(lengths: np.ndarray, token_budget: int) -> list[np.ndarray]:
    """Group document indices into batches, longest first, of at most ``token_budget`` padded tokens.

    Args:
        lengths: (n_docs,) token counts.
        token_budget: max of batch_size × longest length (a longer single document is its own batch).
    Returns:
        List of index arrays; their concatenation is a stable length-descending order.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, i = [], 0
    while i < len(order):
        longest = max(int(lengths[order[i]]), 1)
        size = max(1, token_budget // longest)
        batches.append(order[i : i + size])
        i += size
    return batches


class LayerCapture:
    """Forward hooks that capture the residual stream at ``layers`` and stop the pass early."""

    def __init__(self, model: nn.Module, layers: Sequence[int], convention: str = "block_output"):
        self.blocks = blocks(model)
        n = len(self.blocks)
        bad = [layer for layer in layers if not 0 <= layer < n]
        if bad:
            raise ValueError(f"layers {bad} are out of range: the model has {n} blocks (valid layers 0..{n - 1})")
        if convention not in ("block_output", "mosaic"):
            raise ValueError(f"unknown layer convention {convention!r}")
        self.layers = sorted(layers)
        self.convention = convention
        self.captured: dict[int, torch.Tensor] = {}
        self.handles: list[Any] = []
        last = self.layers[-1]
        for layer in self.layers:
            block = self.blocks[layer]
            if convention == "block_output":
                self.handles.append(block.register_forward_hook(self._post_hook(layer, stop=layer == last)))
            else:
                self.handles.append(
                    block.register_forward_pre_hook(self._pre_hook(layer, stop=layer == last), with_kwargs=True)
                )

    def _post_hook(self, layer: int, stop: bool) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.captured[layer] = output[0] if isinstance(output, tuple) else output
            if stop:
                raise _StopForward

        return hook

    def _pre_hook(self, layer: int, stop: bool) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            self.captured[layer] = args[0] if args else kwargs["hidden_states"]
            if stop:
                raise _StopForward

        return hook

    def run(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[int, torch.Tensor]:
        """One forward pass; returns {layer: (batch, seq, d_model) tensor}."""
        self.captured = {}
        try:
            model(input_ids=input_ids, attention_mask=attention_mask)
        except _StopForward:
            pass
        missing = [layer for layer in self.layers if layer not in self.captured]
        if missing:
            raise RuntimeError(f"hooks did not capture layers {missing}")
        return self.captured

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def extract(
    model: nn.Module,
    input_ids: Sequence[np.ndarray],
    special: Sequence[np.ndarray],
    group: zarr.Group,
    layers: Sequence[int],
    *,
    convention: str = "block_output",
    token_budget: int = 16384,
    store_dtype: str = "float16",
    pad_id: int = 0,
    chunk_tokens: int = CHUNK_TOKENS,
) -> dict[str, Any]:
    """Run the model over all documents and write a ragged activation store into ``group``.

    Args:
        model: base transformer in eval mode (its device and dtype are used).
        input_ids: per document, (n_tokens,) int token ids, index = doc_id.
        special: per document, (n_tokens,) bool special-token mask.
        group: empty Zarr group to fill (see :mod:`saeprobe.store`).
        layers: block indices to capture.
    Returns:
        Statistics: tokens, documents, max |activation| per layer.
    Raises:
        OverflowError: ``store_dtype='float16'`` and an activation exceeds float16's range
            (65504); names the layer and the documents — use ``store_dtype: float32``.
    """
    device = next(model.parameters()).device
    lengths = np.array([len(x) for x in input_ids], dtype=np.int64)
    d_model = int(model.config.hidden_size)
    capture = LayerCapture(model, layers, convention)
    writers = {layer: AppendWriter(create_array(group, f"layer_{layer}", (d_model,), store_dtype, chunk_tokens)) for layer in layers}
    special_writer = AppendWriter(create_array(group, "special", (), bool, chunk_tokens * 4))
    max_abs = {layer: 0.0 for layer in layers}
    order: list[np.ndarray] = []
    try:
        with torch.inference_mode(), tqdm(total=int(lengths.sum()), unit="tok", desc="forward", mininterval=5) as bar:
            for batch in plan_batches(lengths, token_budget):
                order.append(batch)
                width = int(lengths[batch].max())
                if width == 0:
                    continue
                ids = np.full((len(batch), width), pad_id, dtype=np.int64)
                mask = np.zeros((len(batch), width), dtype=bool)
                for row, doc in enumerate(batch):
                    ids[row, : lengths[doc]] = input_ids[doc]
                    mask[row, : lengths[doc]] = True
                ids_t = torch.from_numpy(ids).to(device)
                mask_t = torch.from_numpy(mask).to(device)
                out = capture.run(model, ids_t, mask_t.long())
                for layer in layers:
                    h = out[layer][mask_t].float()  # (real tokens of the batch, d_model), doc by doc
                    peak = float(h.abs().max()) if h.numel() else 0.0
                    if not np.isfinite(peak):
                        raise FloatingPointError(f"layer {layer}: non-finite activations in documents {batch.tolist()[:10]}")
                    if store_dtype == "float16" and peak > FLOAT16_MAX:
                        raise OverflowError(
                            f"layer {layer}: activation magnitude {peak:.0f} exceeds float16's range (65504) "
                            f"in documents {batch.tolist()[:10]}; set store_dtype: float32 for this model"
                        )
                    max_abs[layer] = max(max_abs[layer], peak)
                    writers[layer].write(h.cpu().numpy())
                special_writer.write(np.concatenate([special[d] for d in batch]).astype(bool))
                bar.update(int(mask.sum()))
    finally:
        capture.remove()
    n_tokens = {layer: w.close() for layer, w in writers.items()}
    special_writer.close()
    stored = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths[stored])])
    assert all(n == offsets[-1] for n in n_tokens.values()), "token count mismatch between layers"
    write_index(group, offsets, stored)
    return {"n_docs": len(lengths), "n_tokens": int(offsets[-1]), "max_abs": max_abs}
