"""Residual-stream extraction: one forward pass per (model, dataset) for all requested layers.

Layer convention (docs/DESIGN.md §5): ``layer L`` is the residual stream *after* decoder/encoder
block L — TransformerLens ``blocks.L.hook_resid_post``, what Gemma Scope's ``layer_L`` SAEs
were trained on, Hugging Face ``hidden_states[L+1]``. It is captured with a forward hook on
block L (``hidden_states[-1]`` is taken after the final norm in many models, so it is never
used). ``layer_convention='mosaic'`` instead captures the *input* of block L, i.e.
``hidden_states[L]`` exactly as the MOSAIC reference code indexed it.

The forward pass stops (by :class:`StopForward`, raised from the hook) as soon as the deepest
requested layer has been captured (:class:`LayerCapture`). Documents are sorted by length and batched under a padded
token budget; only real (non-pad) tokens are written. Per batch, the real tokens of every layer
are gathered and cast to the stored dtype on the model's device, the NaN/inf and float16-range
check runs there too, and everything comes back in one device→host copy (into pinned memory
on CUDA, ``non_blocking``) followed by one synchronisation. The rows go to one writer thread
per layer (:class:`saeprobe.store.BackgroundWriter`), so compression and Zarr I/O overlap with
the next batch's forward pass.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn
from tqdm import tqdm

from saeprobe import heap
from saeprobe.errors import NonFiniteError, StoreRangeError
from saeprobe.models import blocks
from saeprobe.store import (
    ACTIVATION_CHUNK_TOKENS,
    ACTIVATION_COMPRESSOR,
    WRITE_ROWS,
    AppendWriter,
    BackgroundWriter,
    create_array,
    write_index,
)

__all__ = ["FLOAT16_MAX", "LayerCapture", "StopForward", "activation_writers", "check_activations", "check_peaks", "extract", "gather_rows",
           "hook_point", "plan_batches"]

log = logging.getLogger("saeprobe")

FLOAT16_MAX = float(np.finfo(np.float16).max)


class StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a :class:`LayerCapture` hook once the deepest requested layer is captured.

    :meth:`LayerCapture.run` catches it; code that calls the model itself while a capture is
    attached must catch it around the forward call (the rest of the forward pass is skipped).
    """


def hook_point(convention: str, module: str = "") -> str:
    """The name of the captured activations, with a ``{layer}`` placeholder, for store metadata.

    ``block_output``: ``blocks.{layer}.hook_resid_post`` (TransformerLens' name); ``mosaic``:
    ``hidden_states[{layer}] (block input)``. ``module`` prefixes it (``language_model`` for a
    vision-language model's language model).
    """
    name = "blocks.{layer}.hook_resid_post" if convention == "block_output" else "hidden_states[{layer}] (block input)"
    return f"{module}.{name}" if module else name


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


def check_activations(h: torch.Tensor, layer: int, docs: np.ndarray, store_dtype: str) -> float:
    """Largest |activation| of ``h`` (any float dtype; |x| and max are exact, so no float32 copy).

    Args:
        h: (tokens, d_model) activations of ``layer`` for documents ``docs`` ((n,) doc ids).
    Raises:
        NonFiniteError: a NaN or infinity (also a ``FloatingPointError``); names the layer and
            the documents.
        StoreRangeError: ``store_dtype='float16'`` and a magnitude exceeds float16's range
            (65504; also an ``OverflowError``).
    """
    peak = float(h.abs().max()) if h.numel() else 0.0
    check_peaks([peak], [layer], docs, store_dtype)
    return peak


def check_peaks(peaks: Sequence[float], layers: Sequence[int], docs: np.ndarray, store_dtype: str) -> None:
    """:func:`check_activations` on per-layer peaks already computed (on the device, one host sync per batch).

    Args:
        peaks: largest |activation| per layer of ``layers`` (NaN or inf where the layer had one).
    Raises:
        NonFiniteError, StoreRangeError: as :func:`check_activations`, for the first bad layer.
    """
    for peak, layer in zip(peaks, layers, strict=True):
        peak = float(peak)
        if not np.isfinite(peak):
            raise NonFiniteError(f"layer {layer}: non-finite activations (NaN or inf) in documents {docs.tolist()[:10]}; "
                                 "check the weights, or compute in a wider dtype (dtype: float32)")
        if store_dtype == "float16" and peak > FLOAT16_MAX:
            raise StoreRangeError(
                f"layer {layer}: activation magnitude {peak:.0f} exceeds float16's range (65504) "
                f"in documents {docs.tolist()[:10]}; set store_dtype: float32 for this model"
            )


def activation_writers(group: zarr.Group, layers: Sequence[int], d_model: int, store_dtype: str,
                       chunk_tokens: int = ACTIVATION_CHUNK_TOKENS) -> dict[str, AppendWriter]:
    """Writers of a dense activation store's arrays: ``layer_{L}`` ((0, d_model) ``store_dtype``,
    ``chunk_tokens`` rows per chunk, :data:`~saeprobe.store.ACTIVATION_COMPRESSOR`, several chunks
    per append) and ``special`` (bool), for a :class:`~saeprobe.store.BackgroundWriter`."""
    per_write = max(1, WRITE_ROWS // chunk_tokens)
    writers = {f"layer_{layer}": AppendWriter(create_array(group, f"layer_{layer}", (d_model,), store_dtype, chunk_tokens,
                                                           ACTIVATION_COMPRESSOR), per_write) for layer in layers}
    writers["special"] = AppendWriter(create_array(group, "special", (), bool, chunk_tokens * 4))
    return writers


def to_host(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Copy device tensors to the host with ``non_blocking=True`` (into pinned memory from CUDA)
    and synchronise once; CPU tensors are returned as they are."""
    out = [t.to("cpu", non_blocking=True) for t in tensors]
    devices = {t.device for t in tensors if t.device.type == "cuda"}
    for device in devices:
        torch.cuda.current_stream(device).synchronize()
    return out


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device``: through pinned memory and ``non_blocking`` on CUDA."""
    t = torch.from_numpy(array)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def gather_rows(captured: dict[int, torch.Tensor], layers: Sequence[int], index: torch.Tensor, store_dtype: str,
                docs: np.ndarray, max_abs: dict[int, float]) -> dict[str, np.ndarray]:
    """The rows a batch writes: ``captured[L]`` (batch, seq, d_model) flattened and gathered at
    ``index`` (real-token positions, row-major, on the device), per layer.

    On the device: the gather, each layer's peak |value| (NaN/inf propagate) and the cast to
    ``store_dtype`` (one rounding, round-to-nearest-even: the same bits as casting through float32
    with numpy); then one device→host copy and one sync (:func:`to_host`), :func:`check_peaks`,
    and ``max_abs`` updated in place.

    Returns:
        ``{"layer_<L>": (len(index), d_model) array of store_dtype}``.
    Raises:
        NonFiniteError, StoreRangeError: see :func:`check_activations` (``docs`` are named).
    """
    to_dtype = {"float16": torch.float16, "float32": torch.float32}[store_dtype]
    first = captured[layers[0]]
    d_model = first.shape[-1]
    staged = torch.empty((len(layers), len(index), d_model), dtype=to_dtype, device=first.device)
    peaks = []
    for i, layer in enumerate(layers):
        h = captured[layer].reshape(-1, d_model).index_select(0, index)  # compute dtype
        peaks.append(h.abs().amax().float() if len(index) else torch.zeros((), device=first.device))
        staged[i] = h
    host, peak_t = to_host([staged, torch.stack(peaks)])  # one copy of the rows, one sync
    peak_np = peak_t.numpy()
    check_peaks(peak_np, layers, docs, store_dtype)
    for layer, peak in zip(layers, peak_np, strict=True):
        max_abs[layer] = max(max_abs[layer], float(peak))
    return {f"layer_{layer}": host[i].numpy() for i, layer in enumerate(layers)}


def writer_stats(writer: BackgroundWriter, wall_s: float) -> dict[str, Any]:
    """The writer's busy seconds per array, its busiest array and the producer's wall seconds
    (the writer kept up when ``busy_max_s`` is below ``wall_s``)."""
    busy = {key: round(v, 3) for key, v in writer.busy_s.items()}
    return {"busy_s": busy, "busy_max_s": max(busy.values(), default=0.0), "wall_s": round(wall_s, 3)}


@functools.cache
def _forward_params(forward_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(forward_type.forward).parameters)


def _accepts_use_cache(model: nn.Module) -> bool:
    return "use_cache" in _forward_params(type(model))


class LayerCapture:
    """Forward hooks that capture the residual stream at ``layers`` and stop the pass early.

    Args:
        model: the module whose blocks (:func:`saeprobe.models.blocks`) are hooked: a base
            transformer, or a vision-language model's language model.
        layers: block indices; ``convention``: ``block_output`` (the block's output,
            ``hidden_states[L+1]``) or ``mosaic`` (its input, ``hidden_states[L]``).

    After a forward pass ``captured`` maps each layer to its (batch, seq, d_model) tensor in the
    compute dtype; the hook of the deepest layer raises :class:`StopForward`. Call
    :meth:`remove` when done (the hooks stay on the model otherwise).

    Raises:
        ValueError: a layer that is not a block of the model, or an unknown convention (the
            workflow checks both earlier, naming the config key: :func:`saeprobe.models.load_pretrained`
            and the config schema).
    """

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
                raise StopForward

        return hook

    def _pre_hook(self, layer: int, stop: bool) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            self.captured[layer] = args[0] if args else kwargs["hidden_states"]
            if stop:
                raise StopForward

        return hook

    def run(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            **inputs: torch.Tensor) -> dict[int, torch.Tensor]:
        """One forward pass of ``model`` (the hooked module or a model containing it); returns
        {layer: (batch, seq, d_model) tensor}.

        Args:
            input_ids, attention_mask: (batch, seq) on the model's device.
            inputs: further forward arguments (a vision-language model's ``pixel_values``,
                ``token_type_ids``).

        Decoders are called with ``use_cache=False``: a key/value cache is never reused here, and
        building one costs time (~20% of a stories260K pass on 64 x 128 tokens, CPU).

        Raises:
            RuntimeError: a hook did not fire (the forward pass skipped a block).
        """
        self.captured = {}
        kwargs = {"use_cache": False} if _accepts_use_cache(model) else {}
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, **inputs, **kwargs)
        except StopForward:
            pass
        missing = [layer for layer in self.layers if layer not in self.captured]
        if missing:
            raise RuntimeError(f"hooks did not capture layers {missing}")
        return self.captured

    def remove(self) -> None:
        """Detach the hooks from the model."""
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
    chunk_tokens: int = ACTIVATION_CHUNK_TOKENS,
    max_pending: int = 2,
) -> dict[str, Any]:
    """Run the model over all documents and write a ragged activation store into ``group``.

    Args:
        model: base transformer in eval mode (its device and dtype are used).
        input_ids: per document, (n_tokens,) int token ids, index = doc_id.
        special: per document, (n_tokens,) bool special-token mask.
        group: empty Zarr group to fill (see :mod:`saeprobe.store`).
        layers: block indices to capture.
        token_budget: padded tokens per forward batch; chunk_tokens: rows per Zarr chunk.
        max_pending: batches that may wait for each layer's writer thread (bounds memory: each
            holds the batch's real tokens × d_model values of ``store_dtype``).
    Returns:
        Statistics: ``n_docs``, ``n_tokens``, ``max_abs`` (max |activation| per layer) and
        ``writer`` (:func:`writer_stats`: seconds each array's writer thread was busy, the
        busiest, and the wall seconds of the whole extraction).
    Raises:
        StoreRangeError: ``store_dtype='float16'`` and an activation exceeds float16's range
            (65504); names the layer and the documents — use ``store_dtype: float32``.
        NonFiniteError: NaN or infinite activations (see :func:`check_activations`).
    """
    device = next(model.parameters()).device
    lengths = np.array([len(x) for x in input_ids], dtype=np.int64)
    d_model = int(model.config.hidden_size)
    capture = LayerCapture(model, layers, convention)
    writers = activation_writers(group, layers, d_model, store_dtype, chunk_tokens)
    max_abs = {layer: 0.0 for layer in layers}
    order: list[np.ndarray] = []
    guard = heap.HeapGuard()
    start = time.perf_counter()
    # Compression and Zarr writes run on worker threads while the next batch is computed.
    with BackgroundWriter(writers, max_pending=max_pending) as writer:
        try:
            with torch.inference_mode(), tqdm(total=int(lengths.sum()), unit="tok", desc="forward", mininterval=5) as bar:
                for batch in plan_batches(lengths, token_budget):
                    order.append(batch)
                    width = int(lengths[batch].max())
                    if width == 0:
                        continue
                    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
                    mask = np.zeros((len(batch), width), dtype=np.int64)
                    for row, doc in enumerate(batch):
                        ids[row, : lengths[doc]] = input_ids[doc]
                        mask[row, : lengths[doc]] = 1
                    real = np.flatnonzero(mask)  # row-major: the real tokens, doc by doc (no device-side nonzero)
                    out = capture.run(model, to_device(ids, device), to_device(mask, device))
                    rows = gather_rows(out, layers, to_device(real, device), store_dtype, batch, max_abs)
                    rows["special"] = np.concatenate([special[d] for d in batch]).astype(bool)
                    writer.submit(rows)
                    out.clear()  # the capture's own dict: drop the batch's tensors before the heap check
                    guard.step()  # heap fragmentation would grow the peak with the number of batch shapes
                    bar.update(len(real))
        finally:
            capture.remove()
        n_rows = writer.close()
    assert len(set(n_rows.values())) == 1, f"token count mismatch between arrays: {n_rows}"
    stored = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths[stored])])
    assert n_rows["special"] == offsets[-1], "token count mismatch between the store and the documents"
    write_index(group, offsets, stored)
    return {"n_docs": len(lengths), "n_tokens": int(offsets[-1]), "max_abs": max_abs,
            "writer": writer_stats(writer, time.perf_counter() - start)}
