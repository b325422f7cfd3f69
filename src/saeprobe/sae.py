"""Sparse autoencoders: loading (SAELens release, local folder), training, and encoding.

Training follows SAELens' own trainer (``SAETrainer`` with one of SAELens' training SAEs:
TopK, BatchTopK, Matryoshka BatchTopK, JumpReLU, standard L1, gated; :func:`train_sae`) on
activation vectors read from saeprobe's activation stores — train-split documents and
non-special tokens only, subsampled to a bounded in-memory buffer. Encoding streams an
activation store through ``sae.encode`` in batches and writes the non-zero codes as CSR
(:class:`saeprobe.store.CodeStore`), recording L0 and reconstruction quality on this data.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import zarr

from saeprobe.errors import ConfigError, DataError, NonFiniteError, one_line
from saeprobe.io import damaged
from saeprobe.offline import offline_hint
from saeprobe.activations import to_host
from saeprobe.store import CHUNK_TOKENS, ActivationStore, AppendWriter, BackgroundWriter, create_array, prefetch, write_index

log = logging.getLogger("saeprobe")


def load_sae(spec: dict[str, Any], layer: int, device: str | torch.device, name: str = "sae",
             trained_dir: str | Path | None = None, *, d_model: int | None = None, layer_convention: str | None = None, hook_check: str = "error") -> Any:
    """Load the SAE of ``spec`` for ``layer`` (inference form) and check that it can be used there.

    Every stage that loads an SAE goes through here, so every one makes the same checks:

    - the weights are finite (:func:`check_sae_finite`; always);
    - its input width is the model's ``d_model`` (:func:`check_sae_input`; when ``d_model`` is given);
    - the hook point it was trained on is the one this layer reads under ``layer_convention``
      (:func:`check_sae_hook`; when ``layer_convention`` is given).

    Args:
        spec: a ``saes.<name>`` config entry: ``release`` + ``sae_id``, ``path``, or ``train``
            (``model`` names the model in messages). ``{layer}`` in ``sae_id`` / ``path`` is filled in.
        trained_dir: for ``train`` SAEs, the folder written by :func:`train_sae`.
        d_model: width of the activations the SAE will read (the activation store's ``d_model``).
        layer_convention: the model's ``layer_convention`` (``block_output`` or ``mosaic``).
        hook_check: ``saes.<name>.hook_check``: ``error`` (a hook mismatch raises) or ``warn``.
    Raises:
        ConfigError: the release/id or folder cannot be loaded; an id missing from a release
            listed in SAELens' directory, or an unknown release, is named with the closest
            names (checked locally, before any download); the SAE's width is not ``d_model``;
            its recorded hook point is not the one this layer reads (``hook_check: error``).
        NonFiniteError: a weight tensor holds NaN or infinite entries.
        CacheError: the folder's ``cfg.json`` is not JSON or its weights file cannot be
            decoded (truncated); names the file, and for a ``train`` SAE the folder to rebuild.
    """
    sae, where = _load(spec, layer, device, name, trained_dir)
    model = str(spec.get("model", "?"))
    if d_model is not None:
        check_sae_input(sae, d_model, layer, name, model, where=where)
    if layer_convention is not None:
        check_sae_hook(sae, layer, layer_convention, name, model, where=where, on_mismatch=hook_check)
    check_sae_finite(sae, name, where, built="train" in spec)
    return sae


def _load(spec: dict[str, Any], layer: int, device: str | torch.device, name: str,
          trained_dir: str | Path | None) -> tuple[Any, str]:
    """The SAE of :func:`load_sae` (unchecked) and where it came from, for messages: the folder, or
    the id and release."""
    from safetensors import SafetensorError
    from sae_lens import SAE
    from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME

    device = str(device)
    if "release" in spec:
        release, sae_id = spec["release"], spec["sae_id"].format(layer=layer)
        problem = _pretrained_problem(release, sae_id)
        if problem and problem[0] == "id":
            raise ConfigError(f"saes.{name}.sae_id: {problem[1]}")
        try:
            with _shapes_from_cache():
                return SAE.from_pretrained(release, sae_id, device=device), f"'{sae_id}' of release '{release}'"
        except Exception as exc:
            if problem:  # not in SAELens' directory, and not a loadable Hugging Face repo either
                raise ConfigError(f"saes.{name}.release: {problem[1]} ({one_line(exc)})") from exc
            raise ConfigError(
                f"saes.{name}: could not load SAE '{sae_id}' of release '{release}': {one_line(exc)}"
                f"{offline_hint(f'SAE {sae_id!r} of release {release!r}')}"
            ) from exc
    folder = Path(trained_dir) if "train" in spec else Path(spec["path"].format(layer=layer))
    if not (folder / "cfg.json").exists():
        raise ConfigError(f"saes.{name}: no SAELens folder (cfg.json + weights) at '{folder}'")
    try:
        return SAE.load_from_disk(str(folder), device=device), f"in '{folder}'"
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError) as exc:  # a file, not the config, is broken
        file = folder / (SAE_WEIGHTS_FILENAME if isinstance(exc, SafetensorError) else SAE_CFG_FILENAME)
        raise damaged(file, exc, rebuild=folder, built="train" in spec) from exc
    except Exception as exc:
        raise ConfigError(f"saes.{name}: could not load the SAE in '{folder}': {one_line(exc)}") from exc


def safetensors_shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
    """Tensor shapes of the safetensors file ``filename`` of hub repo ``repo_id``, read from its header in
    the local Hugging Face cache (``hf_hub_download``: downloaded once when online, the cached copy offline).

    Stands in for SAELens' ``get_safetensors_tensor_shapes``, which its Gemma Scope 2 loader (``gemma_3``)
    calls before downloading the weights: it asks huggingface.co for the header with HTTP range requests,
    bypassing the cache and ``HF_HUB_OFFLINE``, so a cached Gemma Scope 2 SAE failed to load offline. The
    loader downloads the same file right after, so reading it here costs no extra transfer.

    Returns:
        tensor name -> shape, e.g. ``{"w_enc": [640, 16384], ...}``.
    Raises:
        huggingface_hub's ``LocalEntryNotFoundError`` (offline, not cached) or its HTTP errors;
        ``SafetensorError`` for a file that is not safetensors. :func:`load_sae` turns them into a
        one-line :class:`~saeprobe.errors.ConfigError`.
    """
    from huggingface_hub import hf_hub_download
    from safetensors import safe_open

    path = hf_hub_download(repo_id, filename)
    with safe_open(path, framework="numpy") as fh:
        return {key: list(fh.get_slice(key).get_shape()) for key in fh.keys()}  # noqa: SIM118 - not a dict


def _shapes_from_cache() -> Any:
    """Context in which SAELens' pretrained loaders read safetensors shapes with :func:`safetensors_shapes`."""
    from unittest import mock

    from sae_lens.loading import pretrained_sae_loaders

    return mock.patch.object(pretrained_sae_loaders, "get_safetensors_tensor_shapes", safetensors_shapes)


def _pretrained_problem(release: str, sae_id: str) -> tuple[str, str] | None:
    """Check ``release``/``sae_id`` against SAELens' pretrained directory (local, no network).

    Returns None when both are listed, ``("release", message)`` when the release is not listed
    (it may still be a Hugging Face repo, which only loading can tell), ``("id", message)``
    when the release is listed but has no such id; messages suggest the closest names.
    """
    import difflib

    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = difflib.get_close_matches(release, list(directory), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return "release", f"release '{release}' is not in SAELens' pretrained SAE directory{hint}"
    ids = list(directory[release].saes_map)
    if sae_id in ids:
        return None
    close = difflib.get_close_matches(sae_id, ids, n=5, cutoff=0.6)
    hint = f"; closest ids: {close}" if close else f"; its first ids: {ids[:5]}"
    return "id", f"release '{release}' has no SAE id '{sae_id}' ({len(ids)} ids{hint})"


def check_sae_input(sae: Any, d_model: int, layer: int, name: str, model: str, *, where: str = "") -> None:
    """Raise :class:`ConfigError` when the SAE's input width is not the model's residual width.

    Args:
        d_model: width of the stored activations of ``model`` at ``layer``.
        where: the SAE's folder or release, for the message (as :func:`load_sae` words it).
    """
    d_in = int(sae.cfg.d_in)
    if d_in != d_model:
        raise ConfigError(
            f"saes.{name}: the SAE{' ' + where if where else ''} reads vectors of width d_in={d_in}, but model '{model}' "
            f"has d_model={d_model} at layer {layer}; is saes.{name}.model right, and is the SAE for this model?"
        )


#: Values of ``saes.<name>.hook_check``: what a hook-point mismatch does (:func:`check_sae_hook`).
HOOK_CHECKS = ("error", "warn")
_RESID_HOOK = re.compile(r"(?:^|\.)blocks\.(\d+)\.hook_resid_(pre|post)$")
_BLOCK_HOOK = re.compile(r"(?:^|\.)blocks\.\d+\.")


def resid_hook_name(layer: int, convention: str) -> str:
    """The TransformerLens name of the residual-stream point that ``layer`` reads (docs/DESIGN.md §5).

    ``block_output``: the output of block L, ``blocks.L.hook_resid_post`` (Gemma Scope's
    ``layer_L``); ``mosaic``: ``hidden_states[L]``, the input of block L, ``blocks.L.hook_resid_pre``
    (the same point as ``blocks.{L-1}.hook_resid_post``). What a workflow-trained SAE records as its
    ``hook_name`` (:func:`train_sae`).

    Raises:
        ValueError: an unknown convention.
    """
    if convention == "block_output":
        return f"blocks.{layer}.hook_resid_post"
    if convention == "mosaic":
        return f"blocks.{layer}.hook_resid_pre"
    raise ValueError(f"layer_convention {convention!r}: expected block_output or mosaic")


def _stream_point(hook: str) -> int | None:
    """Which residual-stream point a TransformerLens hook name is: the input of block P, counting
    ``blocks.P.hook_resid_pre`` and ``blocks.{P-1}.hook_resid_post`` as the same; None for any
    other name (prefixes such as ``language_model.`` are ignored)."""
    m = _RESID_HOOK.search(hook)
    if m is None:
        return None
    return int(m.group(1)) + (m.group(2) == "post")


def check_sae_hook(sae: Any, layer: int, convention: str, name: str, model: str, *, where: str = "",
                   on_mismatch: str = "error") -> None:
    """Check the hook point the SAE was trained on against the one ``layer`` reads under ``convention``.

    The SAE's hook is SAELens' ``sae.cfg.metadata.hook_name`` (a folder's ``cfg.json``
    ``metadata.hook_name``; ``hook_point`` / ``hook_name`` of pre-6.0 configs; set by SAELens'
    loaders for its releases, e.g. Gemma Scope's ``blocks.12.hook_resid_post``). It matches when it
    names the same residual-stream point as :func:`resid_hook_name` (``blocks.L.hook_resid_pre`` =
    ``blocks.{L-1}.hook_resid_post``; a prefix before ``blocks.`` is ignored). An SAE that records
    no hook name, or one that is not a TransformerLens name, is accepted and logged (it cannot be
    checked); a TransformerLens hook elsewhere in a block (``hook_mlp_out``, ``attn.hook_z``, ...)
    is a mismatch.

    Args:
        where: the SAE's folder or release (as :func:`load_sae` words it), for the message.
        on_mismatch: ``error`` (raise) or ``warn`` (log a warning and go on): ``saes.<name>.hook_check``.
    Raises:
        ConfigError: a mismatch with ``on_mismatch="error"``; the message names the SAE, where it
            came from, the hook it was trained on, the hook this layer reads, the layer it would
            fit, and the key that downgrades the error to a warning.
        ValueError: an unknown ``convention`` or ``on_mismatch``.
    """
    if on_mismatch not in HOOK_CHECKS:
        raise ValueError(f"hook_check {on_mismatch!r}: expected one of {', '.join(HOOK_CHECKS)}")
    expected = resid_hook_name(layer, convention)
    metadata = getattr(sae.cfg, "metadata", None)
    hook = metadata.get("hook_name") if metadata is not None else None
    sae_text = f"saes.{name}: the SAE{' ' + where if where else ''}"
    if not hook:
        log.info("%s records no hook name (cfg.json metadata.hook_name): not checked against %s", sae_text, expected)
        return
    hook = str(hook)
    point = _stream_point(hook)
    if point is None and not _BLOCK_HOOK.search(hook):
        log.warning("%s was trained on '%s', not a TransformerLens hook name: cannot check it against %s (layer %d, "
                    "layer_convention %s)", sae_text, hook, expected, layer, convention)
        return
    if point == _stream_point(expected):
        return
    reads = expected if convention == "block_output" or layer == 0 else f"{expected} = blocks.{layer - 1}.hook_resid_post"
    if point is None:
        fits = "; it is not a residual-stream SAE"
    else:
        here = point if convention == "mosaic" else point - 1  # the layer it fits under this convention
        other, other_layer = ("mosaic", point) if convention == "block_output" else ("block_output", point - 1)
        options = [f"layer {here}"] if here >= 0 else []
        if other_layer >= 0:
            options.append(f"layer {other_layer} with models.{model}.layer_convention: {other}")
        fits = f"; it fits {', or '.join(options)}" if options else ""
    mismatch = (f"{sae_text} was trained on '{hook}', but layer {layer} of model '{model}' reads {reads} "
                f"(layer_convention: {convention}){fits}")
    if on_mismatch == "error":
        raise ConfigError(f"{mismatch}. Use the SAE trained for this layer, or set saes.{name}.hook_check: warn "
                          "to use it anyway")
    log.warning("%s; used anyway (saes.%s.hook_check: warn)", mismatch, name)


def check_sae_finite(sae: Any, name: str, where: str = "", *, built: bool = False) -> None:
    """Raise :class:`NonFiniteError` when a weight tensor of the SAE holds NaN or infinite entries.

    Every floating-point tensor of ``sae.state_dict()`` is counted in slices of 2^24 entries (a
    bounded temporary mask whatever the width).

    Args:
        where: the SAE's folder or release, for the message. built: a workflow-trained SAE (the
            message then suggests a lower learning rate and a rebuild instead of another SAE).
    Raises:
        NonFiniteError: names the SAE, where it came from, each bad tensor and how many of its
            entries are NaN or infinite.
    """
    bad = []
    for key, tensor in sae.state_dict().items():
        if not tensor.is_floating_point():
            continue
        flat = tensor.detach().reshape(-1)
        count = sum(int((~torch.isfinite(part)).sum()) for part in flat.split(1 << 24))
        if count:
            bad.append(f"{key} ({count:,} of {flat.numel():,} entries)")
    if bad:
        fix = (f"its training diverged: lower saes.{name}.train.lr (the SAE is then retrained)" if built
               else "replace the SAE's weights")
        raise NonFiniteError(f"saes.{name}: the SAE{' ' + where if where else ''} has NaN or infinite weights in "
                             f"{', '.join(bad)}; {fix}")


# --------------------------------------------------------------------------- training data


def collect_vectors(
    stores: Sequence[ActivationStore], train_docs: Sequence[np.ndarray], layer: int, max_vectors: int, seed: int
) -> torch.Tensor:
    """Sample ``min(max_vectors, eligible)`` non-special token activations of train-split documents.

    Two passes: the first reads only the ``special`` masks and offsets to count the eligible
    tokens and draw exactly which ones to keep (uniformly, without replacement); the second
    reads the activations block by block and writes each kept row straight into its shuffled
    place in one preallocated array. So the buffer exists once (no list of parts concatenated
    and then shuffled: peak memory was twice the buffer) and its size is exact.

    Args:
        stores: activation stores (one per dataset).
        train_docs: per store, a bool array indexed by doc_id: True for train-split documents.
        layer: which layer's activations.
        max_vectors: buffer size cap (rows).
    Returns:
        (n, d_model) float32 tensor, rows in random order; n = min(max_vectors, eligible tokens).
        Memory: n x d_model x 4 bytes plus one bool per stored token.
    Raises:
        DataError: no train-split tokens at all.
    """
    rng = np.random.default_rng(seed)
    blocks: list[tuple[int, int, int, np.ndarray]] = []  # (store index, r0, r1, eligible mask)
    for s, (store, is_train) in enumerate(zip(stores, train_docs, strict=True)):
        for a, b in store.doc_blocks(1 << 16):
            r0, r1 = int(store.offsets[a]), int(store.offsets[b])
            take = np.repeat(is_train[store.doc_id[a:b]], np.diff(store.offsets[a : b + 1]))
            take &= ~store.special(r0, r1)
            if take.any():
                blocks.append((s, r0, r1, take))
    total = sum(int(t.sum()) for *_, t in blocks)
    if total == 0:
        raise DataError(f"layer {layer}: no non-special tokens of train-split documents in {[str(s.path) for s in stores]} "
                        "to train the SAE on; check the datasets' splits (saes.<name>.train.datasets)")
    n = min(max_vectors, total)
    keep = np.zeros(total, dtype=bool)
    keep[rng.choice(total, size=n, replace=False)] = True
    place = rng.permutation(n)  # the shuffled position of each kept row, in reading order
    out: np.ndarray | None = None
    seen = done = 0
    for s, r0, r1, take in blocks:
        m = int(take.sum())
        sel = keep[seen : seen + m]
        seen += m
        if not sel.any():
            continue
        rows = stores[s].rows(layer, r0, r1)[np.flatnonzero(take)[sel]]
        if out is None:
            out = np.empty((n, rows.shape[1]), dtype=np.float32)
        out[place[done : done + len(rows)]] = rows
        done += len(rows)
    assert out is not None and done == n
    return torch.from_numpy(out)


def batches(x: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled mini-batches of exactly ``batch_size`` rows of ``x``, reshuffled every epoch.

    Rows are gathered on ``x``'s own device (put the buffer on the training device once: no
    per-step host gather and copy). Every batch has exactly ``batch_size`` rows, as SAELens'
    trainer counts its steps from ``train_batch_size_samples`` (a short last batch is dropped).

    Raises:
        ValueError: ``x`` has fewer than ``batch_size`` rows.
    """
    if len(x) < batch_size:
        raise ValueError(f"{len(x)} vectors cannot fill a batch of {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            yield x.index_select(0, perm[i : i + batch_size])


# --------------------------------------------------------------------------- metrics


TokenStats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def token_stats(x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor) -> TokenStats:
    """Per-token quantities the quality meters sum, computed once per batch:
    (x as float64 (n, d), squared reconstruction error (n,), non-zero code mask (n, d_sae))."""
    x64 = x.double()
    r = x64 - x_hat.double()
    return x64, (r * r).sum(1), codes != 0


@dataclass
class QualityMeter:
    """Streams reconstruction quality and sparsity over batches of activations.

    Explained variance = 1 - Σ‖x - x̂‖² / Σ‖x - mean(x)‖² (all sums over tokens and dims,
    float64 accumulators), L0 = mean number of non-zero codes per token, dead fraction =
    share of features that never fired on the data seen.
    """

    d_sae: int
    n: int = 0
    sse: float = 0.0
    sum_x: np.ndarray | None = None
    sum_sq: float = 0.0
    l0_sum: float = 0.0
    fired: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def update(self, stats: TokenStats, rows: torch.Tensor | None = None) -> None:
        """Accumulate :func:`token_stats` of a batch, optionally only the ``rows`` (bool mask)."""
        x64, err2, nz = stats if rows is None else (t[rows] for t in stats)
        self.add(x64, err2, nz.sum(1), nz.any(0))

    def add(self, x: torch.Tensor, err2: torch.Tensor, l0: torch.Tensor, fired: torch.Tensor) -> None:
        """Accumulate tokens given as: x (n, d_in), squared reconstruction error (n,), non-zero
        codes per token (n,) and which features fired on them ((d_sae,) bool)."""
        self.add_sums(len(x), float(err2.sum(dtype=torch.float64)), x.sum(0, dtype=torch.float64).cpu().numpy(),
                      float((x * x).sum(dtype=torch.float64)), float(l0.sum()), fired.cpu().numpy())

    def add_sums(self, n: int, sse: float, sum_x: np.ndarray, sum_sq: float, l0_sum: float, fired: np.ndarray) -> None:
        """Accumulate a batch given by its sums over tokens (float64 accumulators). ``sum_x`` and
        ``sum_sq`` may be of x minus any fixed shift (the same for every batch): the total
        variance does not depend on it."""
        if self.sum_x is None:
            self.sum_x = np.zeros(len(sum_x))
            self.fired = np.zeros(self.d_sae, dtype=bool)
        self.n += n
        self.sse += sse
        self.sum_x += np.asarray(sum_x, dtype=np.float64)
        self.sum_sq += sum_sq
        self.l0_sum += l0_sum
        self.fired |= fired

    def result(self) -> dict[str, float]:
        if self.n == 0 or self.sum_x is None:
            return {"n_tokens": 0}
        sst = self.sum_sq - float(self.sum_x @ self.sum_x) / self.n
        return {
            "n_tokens": self.n,
            "explained_variance": 1.0 - self.sse / sst if sst > 0 else float("nan"),
            "mse": self.sse / (self.n * len(self.sum_x)),
            "l0": self.l0_sum / self.n,
            "dead_fraction": float(1.0 - self.fired.mean()),
        }


def measure(sae: Any, x: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Reconstruction quality of ``sae`` on ``x`` (n, d_in)."""
    meter = QualityMeter(int(sae.cfg.d_sae))
    device = next(sae.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            codes = sae.encode(xb)
            meter.update(token_stats(xb, sae.decode(codes), codes))
    return meter.result()


# --------------------------------------------------------------------------- training

# SAELens training SAE architectures saeprobe trains (docs/DESIGN.md §5), and which sparsity
# setting each takes: ``k`` (active latents per token, or on average over a batch) or a coefficient.
ARCHITECTURES = ("topk", "batchtopk", "matryoshka_batchtopk", "jumprelu", "standard", "gated")
K_ARCHITECTURES = ("topk", "batchtopk", "matryoshka_batchtopk")
SPARSITY_KEY = {"topk": "k", "batchtopk": "k", "matryoshka_batchtopk": "k", "jumprelu": "l0_coefficient",
                "standard": "l1_coefficient", "gated": "l1_coefficient"}
# Saved as JumpReLU SAEs with one global threshold learnt during training: their L0 is not
# fixed at k any more, so it is measured on held-out vectors and compared with k.
THRESHOLD_SAVED = ("batchtopk", "matryoshka_batchtopk")


def training_sae(spec: dict[str, Any], d_in: int, device: str, steps: int, hook_name: str | None = None) -> Any:
    """The SAELens training SAE of a ``saes.<name>.train`` entry (validated; scalar width / k).

    ``hook_name`` (:func:`resid_hook_name`) is recorded in the SAE's metadata, so the saved
    ``cfg.json`` says which hook point it was trained on (:func:`check_sae_hook` reads it).

    Architectures (SAELens' own classes and configs, ``sae_lens.saes``):

    - ``topk``: ``TopKTrainingSAE``, k latents per token (Gao et al. 2024, "Scaling and
      evaluating sparse autoencoders");
    - ``batchtopk``: ``BatchTopKTrainingSAE``, k per token on average over the batch (Bussmann
      et al. 2024); saved as a JumpReLU SAE with one global threshold;
    - ``matryoshka_batchtopk``: ``MatryoshkaBatchTopKTrainingSAE``, BatchTopK with nested
      reconstruction losses at ``matryoshka_widths`` + width (Bussmann et al. 2025,
      arXiv 2503.17547); saved as JumpReLU;
    - ``jumprelu``: ``JumpReLUTrainingSAE``, L0 penalty ``l0_coefficient`` with straight-through
      threshold gradients (``jumprelu_init_threshold``, ``jumprelu_bandwidth``; Rajamanoharan et
      al. 2024, arXiv 2407.14435);
    - ``standard``: ``StandardTrainingSAE``, ReLU + L1 penalty ``l1_coefficient`` (Bricken et al. 2023);
    - ``gated``: ``GatedTrainingSAE``, gated encoder + L1 penalty (Rajamanoharan et al. 2024,
      arXiv 2404.16014).

    Inputs are rescaled to a fixed average norm during training (SAELens
    ``expected_average_only_in``), folded into the weights before saving. Sparsity
    coefficients warm up linearly over the first 5 % of ``steps``.

    Raises:
        ConfigError: an unknown architecture.
    """
    from sae_lens import (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, GatedTrainingSAE, GatedTrainingSAEConfig,
                          JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, MatryoshkaBatchTopKTrainingSAE,
                          MatryoshkaBatchTopKTrainingSAEConfig, StandardTrainingSAE, StandardTrainingSAEConfig,
                          TopKTrainingSAE, TopKTrainingSAEConfig)
    from sae_lens.saes.sae import SAEMetadata

    arch = spec["architecture"]
    width = int(spec["width"])
    common = {"d_in": d_in, "d_sae": width, "device": device, "dtype": "float32",
              "normalize_activations": "expected_average_only_in"}
    if hook_name:
        common["metadata"] = SAEMetadata(hook_name=hook_name)
    warm = steps // 20
    # BatchTopK's saved threshold is an exponential moving average of the batches' smallest kept
    # activation, started at 0 and moved by topk_threshold_lr (SAELens' 0.01) per step: after n
    # steps it still carries 0.99^n of its zero start (38 % after 97 steps, when the saved SAE fired
    # 152 latents per token for k = 32). The rate is raised so that the start is forgotten within a
    # tenth of the run (e^-10 of it remains at the end), and never below SAELens' default.
    threshold_lr = min(0.5, max(0.01, 100.0 / steps))
    if arch == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=int(spec["k"]), **common))
    if arch == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(k=float(spec["k"]), topk_threshold_lr=threshold_lr,
                                                               **common))
    if arch == "matryoshka_batchtopk":
        widths = [int(w) for w in spec["matryoshka_widths"] if int(w) < width] + [width]
        return MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
            k=float(spec["k"]), matryoshka_widths=widths, topk_threshold_lr=threshold_lr, **common))
    if arch == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(
            l0_coefficient=float(spec["l0_coefficient"]), l0_warm_up_steps=warm,
            jumprelu_init_threshold=float(spec["jumprelu_init_threshold"]),
            jumprelu_bandwidth=float(spec["jumprelu_bandwidth"]), **common))
    if arch == "standard":
        return StandardTrainingSAE(StandardTrainingSAEConfig(
            l1_coefficient=float(spec["l1_coefficient"]), l1_warm_up_steps=warm, **common))
    if arch == "gated":
        return GatedTrainingSAE(GatedTrainingSAEConfig(
            l1_coefficient=float(spec["l1_coefficient"]), l1_warm_up_steps=warm, **common))
    raise ConfigError(f"unknown SAE architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")


def train_sae(x: torch.Tensor, out_dir: str | Path, spec: dict[str, Any], *, seed: int, device: str = "cpu",
              metadata: dict[str, Any] | None = None, hook_name: str | None = None) -> dict[str, Any]:
    """Train a SAELens SAE of any :data:`ARCHITECTURES` on activation vectors; save it in SAELens format.

    The buffer is split into held-out rows (the first ``heldout_fraction``; ``x`` comes shuffled
    from :func:`collect_vectors`) and training rows, which are moved to ``device`` once and
    batched there (:func:`batches`); SAELens' ``SAETrainer`` runs ``training_tokens //
    batch_size`` steps (it counts steps from ``train_batch_size_samples``, so every batch has
    exactly that many rows). Losses stay on the device until training ends (no per-step sync).
    The saved inference SAE is reloaded with ``SAE.load_from_disk`` and measured on the
    held-out rows (:func:`measure`).

    Args:
        x: (n, d_in) float32 training vectors (non-special, train-split tokens), shuffled.
        out_dir: written with ``cfg.json`` (keys sorted, so reruns give the same bytes) +
            ``sae_weights.safetensors`` (SAELens ``save_inference_model``, loadable with
            ``SAE.load_from_disk``).
        spec: a validated ``saes.<name>.train`` entry: ``architecture``, ``width``, its sparsity
            key (``k`` / ``l0_coefficient`` / ``l1_coefficient``), ``training_tokens``,
            ``batch_size``, ``lr`` (Adam; cosine-annealed to lr/10 after a warm-up of
            min(100, steps/10)), ``heldout_fraction``, architecture keys (:func:`training_sae`).
        metadata: extra keys for the returned training log.
        hook_name: the hook point the vectors come from (:func:`resid_hook_name`), recorded in
            ``cfg.json`` as SAELens' ``metadata.hook_name``.
    Returns:
        Training log: architecture, width, k (k architectures, else None), sparsity setting,
        steps, loss curve (≤ 50 points), and ``heldout`` quality of the *saved* SAE (L0,
        explained variance, MSE, dead fraction); for BatchTopK / Matryoshka (saved as JumpReLU
        with a global threshold) also ``saved_l0_over_k`` = held-out L0 / k.
    Raises:
        ConfigError: an unknown architecture.
    """
    from sae_lens import SAE, SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    torch.manual_seed(seed)
    arch = spec["architecture"]
    width, training_tokens, batch_size, lr = int(spec["width"]), int(spec["training_tokens"]), int(spec["batch_size"]), float(spec["lr"])
    n_held = max(1, int(len(x) * spec["heldout_fraction"]))
    held, train = x[:n_held], x[n_held:]
    if len(train) < batch_size:
        batch_size = max(1, len(train))
        log.warning("only %d training vectors: batch size reduced to %d", len(train), batch_size)
    train = train.to(device)  # once: batches are gathered on the device
    steps = max(1, training_tokens // batch_size)
    sae = training_sae(spec, int(x.shape[1]), device, steps, hook_name)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=lr, lr_end=lr / 10,
        lr_scheduler_name="cosineannealing", lr_warm_up_steps=min(100, steps // 10),
        device=device, dead_feature_window=max(50, steps // 10),
        logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=min(100, max(1, len(train) // batch_size)),
    )
    losses: list[torch.Tensor] = []
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches(train, batch_size, seed))
    step = trainer.step

    def logged_step(batch: torch.Tensor) -> Any:
        out = step(batch)
        losses.append(out.loss.detach())  # a device scalar: read once, after training
        return out

    trainer.step = logged_step  # type: ignore[method-assign]
    trained = trainer.fit()
    curve = torch.stack(losses).float().cpu().tolist() if losses else []
    del train, trainer, sae
    out_dir = Path(out_dir)
    trained.save_inference_model(str(out_dir))
    # SAELens writes cfg.json in an order that varies from run to run: sort it so that two
    # runs give the same bytes.
    cfg_path = out_dir / "cfg.json"
    cfg_path.write_text(json.dumps(json.loads(cfg_path.read_text()), sort_keys=True))
    inference = SAE.load_from_disk(str(out_dir), device=device)
    quality = measure(inference, held)
    every = max(1, len(curve) // 50)
    k = float(spec["k"]) if arch in K_ARCHITECTURES else None
    report: dict[str, Any] = {
        "architecture": arch, "saved_architecture": inference.cfg.architecture(), "d_in": int(x.shape[1]),
        "d_sae": width, "k": k, "sparsity_key": SPARSITY_KEY[arch], "sparsity": float(spec[SPARSITY_KEY[arch]]),
        "training_tokens": steps * batch_size, "batch_size": batch_size, "n_buffer_vectors": len(x) - n_held,
        "n_heldout_vectors": n_held, "steps": len(curve), "loss_curve": [(i, curve[i]) for i in range(0, len(curve), every)],
        "final_loss": curve[-1] if curve else None, "heldout": quality, **(metadata or {}),
    }
    if arch in THRESHOLD_SAVED and k:
        report["saved_l0_over_k"] = quality.get("l0", float("nan")) / k
        if not 0.5 <= report["saved_l0_over_k"] <= 2.0:
            log.warning("%s SAE saved as %s: held-out L0 %.1f is far from the trained k=%g (global threshold)",
                        arch, report["saved_architecture"], quality.get("l0", float("nan")), k)
    return report


def train_topk(x: torch.Tensor, out_dir: str | Path, *, width: int, k: int, training_tokens: int, batch_size: int,
               lr: float, heldout_fraction: float, seed: int, device: str = "cpu",
               metadata: dict[str, Any] | None = None, hook_name: str | None = None) -> dict[str, Any]:
    """A TopK SAE through :func:`train_sae` (kept for callers of the former TopK-only function)."""
    spec = {"architecture": "topk", "width": width, "k": k, "training_tokens": training_tokens, "batch_size": batch_size,
            "lr": lr, "heldout_fraction": heldout_fraction}
    return train_sae(x, out_dir, spec, seed=seed, device=device, metadata=metadata, hook_name=hook_name)


# --------------------------------------------------------------------------- encoding


MAX_DENSE_ELEMENTS = 1 << 27  # (tokens x d_sae) codes per encoding batch on CPU: 512 MB of float32
MAX_DENSE_ELEMENTS_CUDA = 1 << 30  # on a GPU: 4 GB of float32 (8,192 tokens of a 131k SAE)
ENCODE_DTYPES = ("float32", "bfloat16", "auto")


def dense_budget(device: str | torch.device) -> int:
    """Elements of the dense (tokens, d_sae) code matrix allowed per encoding batch on ``device``:
    :data:`MAX_DENSE_ELEMENTS_CUDA` on CUDA, :data:`MAX_DENSE_ELEMENTS` elsewhere."""
    return MAX_DENSE_ELEMENTS_CUDA if torch.device(device).type == "cuda" else MAX_DENSE_ELEMENTS


def encode_batch_size(batch_size: int, d_sae: int, max_dense: int = MAX_DENSE_ELEMENTS) -> int:
    """Tokens per encoding batch: ``batch_size``, lowered so that the dense (tokens, d_sae) code
    matrix SAELens' ``encode`` returns stays under ``max_dense`` elements (:func:`dense_budget`;
    2048 tokens of a 65k SAE on CPU), which bounds memory whatever the width."""
    return max(1, min(batch_size, max_dense // max(d_sae, 1)))


def encode_dtype(choice: str, device: str | torch.device) -> torch.dtype:
    """The dtype SAE encoding computes in: ``float32``, ``bfloat16``, or ``auto`` = bfloat16 on a
    CUDA device with native bf16 (``torch.cuda.is_bf16_supported()``), float32 elsewhere.

    Raises:
        ValueError: another choice.
    """
    if choice not in ENCODE_DTYPES:
        raise ValueError(f"encode dtype {choice!r}: expected one of {', '.join(ENCODE_DTYPES)}")
    device = torch.device(device)
    if choice == "auto":
        native = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if native else torch.float32
    return torch.bfloat16 if choice == "bfloat16" else torch.float32


def decode_sparse(sae: Any, cols: torch.Tensor, vals: torch.Tensor, crow: torch.Tensor) -> torch.Tensor:
    """``sae.decode`` of CSR codes (``crow`` (n+1,), ``cols``, ``vals`` (nnz,)) for linear decoders.

    Computes ``codes @ W_dec + b_dec`` as a weighted sum of the active decoder rows
    (``embedding_bag``: nnz x d_in work instead of n x d_sae x d_in, e.g. 2048 tokens of a 65k
    SAE with L0 64: 70 ms instead of 6.5 s on 2 CPU cores), then SAELens' own output steps
    (reconstruction hook, output normalisation, reshape). Only valid where
    :func:`sparse_decode_ok` says so.
    """
    lin = F.embedding_bag(cols, sae.W_dec, crow[:-1], mode="sum", per_sample_weights=vals.to(sae.W_dec.dtype))
    out = sae.hook_sae_recons(lin + sae.b_dec)
    out = sae.run_time_activation_norm_fn_out(out)
    return sae.reshape_fn_out(out, sae.d_head)


def sparse_decode_ok(sae: Any, x: torch.Tensor) -> bool:
    """Whether :func:`decode_sparse` reproduces ``sae.decode`` for this SAE (checked on ``x``).

    True for SAELens' linear decoders (JumpReLU, TopK, standard: ``codes @ W_dec + b_dec`` then
    output normalisation); false for any SAE whose decode differs (e.g. TopK rescaled by decoder
    norms) or fails, which is then decoded densely.
    """
    try:
        codes = sae.encode(x)
        dense = sae.decode(codes)
        codes = sae.encode(x)  # encode again: some SAEs keep per-batch state that decode consumes
        rows, cols = torch.nonzero(codes, as_tuple=True)
        crow = torch.searchsorted(rows, torch.arange(len(x) + 1, device=rows.device))
        sparse = decode_sparse(sae, cols, codes[rows, cols], crow)
    except Exception:  # noqa: BLE001 - any failure means: decode densely
        return False
    scale = float(dense.abs().max()) if dense.numel() else 0.0
    return sparse.shape == dense.shape and bool(torch.allclose(sparse, dense, rtol=1e-4, atol=1e-5 * scale + 1e-6))


def _token_flags(offsets: np.ndarray, per_doc: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """(r1 - r0,) per-token copy of ``per_doc`` (one value per stored document) for rows r0:r1."""
    a = int(np.searchsorted(offsets, r0, side="right")) - 1
    b = int(np.searchsorted(offsets, r1, side="left"))
    return np.repeat(per_doc[a:b], np.diff(np.clip(offsets[a : b + 1], r0, r1)))


def encode_store(sae: Any, store: ActivationStore, layer: int, group: zarr.Group, *, heldout_docs: np.ndarray,
                 batch_size: int = 4096, chunk_tokens: int = CHUNK_TOKENS, max_pending: int = 2, dtype: str = "float32",
                 max_dense: int | None = None) -> dict[str, Any]:
    """Encode every token of ``store``'s ``layer`` with ``sae``; write sparse codes to ``group``.

    Reading: whole chunks of the activation array (aligned groups of them, at least one batch)
    are read once each, on a worker thread one block ahead (:func:`saeprobe.store.prefetch`),
    in the stored dtype, and moved to the SAE's device in one copy (pinned, ``non_blocking`` on
    CUDA). Encoding: each block is split into device batches of ``batch_size`` tokens, lowered so
    that the dense (tokens, d_sae) code matrix stays under ``max_dense`` elements
    (:func:`encode_batch_size`, :func:`dense_budget`), cast there to the encode dtype
    (:func:`encode_dtype`: a bfloat16 copy of the SAE encodes when bf16 is chosen) and encoded
    with ``sae.encode``. Only the non-zero codes come back to the host, as CSR pieces in one copy
    with one synchronisation, and writer threads (:class:`saeprobe.store.BackgroundWriter`)
    compress and write them while the next batch is encoded. Quality statistics are
    accumulated on the device (float64) and read back once at the end; the reconstruction is
    the float32 SAE's, via :func:`decode_sparse` where :func:`sparse_decode_ok` allows it.

    Args:
        heldout_docs: bool array by doc_id, True for documents outside the train split; quality
            is reported over all non-special tokens and over held-out ones separately.
        dtype: ``float32``, ``bfloat16`` or ``auto`` (the config's ``saes.<name>.encode_dtype``);
            codes are stored float32 either way.
        max_dense: element budget of the dense code matrix (default: :func:`dense_budget`).
    Returns:
        Statistics, also written to ``group.attrs``: d_sae, d_in, nnz, encode_dtype, L0 and
        reconstruction quality (explained variance, MSE, dead fraction).
    Raises:
        ValueError: the SAE's input width differs from the activations' width; an unknown dtype.
        CacheError: an activation chunk cannot be decoded (names it).
    """
    device = next(sae.parameters()).device
    d_sae, d_in = int(sae.cfg.d_sae), int(sae.cfg.d_in)
    compute = encode_dtype(dtype, device)
    if store.width(layer) != d_in:
        raise ValueError(f"SAE input width d_in={d_in} does not match the model's d_model={store.width(layer)} at layer {layer}")
    encoder = sae if compute == torch.float32 else copy.deepcopy(sae).to(compute)
    writers = {
        "indices": AppendWriter(create_array(group, "indices", (), np.int32, chunk_tokens * 32)),
        "values": AppendWriter(create_array(group, "values", (), np.float32, chunk_tokens * 32)),
        "indptr": AppendWriter(create_array(group, "indptr", (), np.int64, chunk_tokens * 4)),
        "special": AppendWriter(create_array(group, "special", (), bool, chunk_tokens * 4)),
    }
    step = encode_batch_size(batch_size, d_sae, max_dense or dense_budget(device))
    held_by_stored = np.asarray(heldout_docs, dtype=bool)[store.doc_id]
    pin = device.type == "cuda"
    # Device accumulators, one row per meter (all tokens, held-out tokens): sums of squared error,
    # of squared shifted x and of L0; sum of shifted x; how often each feature fired.
    sums = torch.zeros((2, 3), dtype=torch.float64, device=device)
    sum_x = torch.zeros((2, d_in), dtype=torch.float64, device=device)
    hits = torch.zeros((2, d_sae), dtype=torch.float64, device=device)
    n_meter = [0, 0]
    nnz = 0
    sparse_decode: bool | None = None
    shift: torch.Tensor | None = None

    def read(block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        r0, r1 = block
        raw = torch.from_numpy(store.rows(layer, r0, r1, dtype=None))
        keep = ~store.special(r0, r1)
        weights = np.stack([keep, keep & _token_flags(store.offsets, held_by_stored, r0, r1)]).astype(np.float64)
        return raw.pin_memory() if pin else raw, torch.from_numpy(weights), ~keep

    with BackgroundWriter(writers, max_pending=max_pending) as writer, torch.inference_mode():
        writer.submit({"indptr": np.zeros(1, np.int64)})
        # Each chunk is read and decompressed once, on a worker thread while the last block is encoded.
        for raw, weights, special in prefetch(map(read, store.chunk_blocks(layer, step))):
            block = raw.to(device, non_blocking=True)
            for m in range(2):
                n_meter[m] += int(weights[m].sum())  # on the host
            weights = weights.to(device, non_blocking=True)
            for s0 in range(0, len(block), step):
                s1 = min(s0 + step, len(block))
                x = block[s0:s1].float()  # exact: float16 -> float32
                if sparse_decode is None:
                    sparse_decode = sparse_decode_ok(sae, x[:256])
                    log.info("reconstruction for quality statistics: %s decode", "sparse" if sparse_decode else "dense")
                codes = encoder.encode(x.to(compute))
                flat = torch.nonzero(codes.reshape(-1)).squeeze(1)  # row-major: CSR order (one host sync)
                vals = codes.reshape(-1).index_select(0, flat).float()
                rows, cols = flat // d_sae, flat % d_sae
                crow = torch.searchsorted(rows, torch.arange(len(x) + 1, device=device))
                recon = decode_sparse(sae, cols, vals, crow) if sparse_decode else sae.decode(codes.float())
                del codes, flat
                # Per-token quantities once; each meter sums them over its tokens (float64 across
                # tokens). The variance sums use x minus a fixed shift (the first batch's mean): the
                # total variance is shift-invariant, and residual streams with large means would
                # otherwise lose it to cancellation in float32.
                diff = x - recon.to(x.dtype)
                if shift is None:
                    shift = x.mean(0)
                xc = x - shift
                per_token = torch.stack([(diff * diff).sum(1), (xc * xc).sum(1), torch.diff(crow).to(x.dtype)]).double()
                w = weights[:, s0:s1]  # (2, n) 0/1 per meter
                sums += w @ per_token.T
                sum_x += w @ xc.double()
                hits.index_add_(1, cols, w[:, rows])
                idx_h, val_h, crow_h = to_host([cols.to(torch.int32), vals, crow[1:]])  # one copy, one sync
                writer.submit({"indices": idx_h.numpy(), "values": val_h.numpy(), "indptr": nnz + crow_h.numpy(),
                               "special": special[s0:s1]})
                nnz += len(idx_h)
        writer.close()
    write_index(group, store.offsets, store.doc_id)
    overall, held = QualityMeter(d_sae), QualityMeter(d_sae)
    sums_h, sum_x_h, fired_h = (t.numpy() for t in to_host([sums, sum_x, hits > 0]))  # the one read-back
    for m, meter in enumerate((overall, held)):
        if n_meter[m]:
            sse, sum_sq, l0_sum = sums_h[m]
            meter.add_sums(n_meter[m], float(sse), sum_x_h[m], float(sum_sq), float(l0_sum), fired_h[m])
    stats = {"d_sae": d_sae, "d_in": d_in, "nnz": nnz, "encode_dtype": str(compute).removeprefix("torch."),
             "quality": overall.result(), "quality_heldout": held.result()}
    group.attrs.update(stats)
    return stats
