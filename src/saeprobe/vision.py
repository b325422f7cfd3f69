"""Visual classification: images through a vision-language model's language-model residual stream.

The paper's PaliGemma 2 experiment (Gallifant et al. 2025): an image is fed to PaliGemma 2
(SigLIP vision tower -> linear projector -> Gemma 2 language model), the residual stream of the
*language model* is read at the image-token positions, encoded with a Gemma Scope SAE (trained
on Gemma 2, PaliGemma 2's language model), pooled per image and probed. Offline, the same code
runs on the ``tiny-paligemma`` random preset (:mod:`saeprobe.randinit`).

Two stages live here:

:func:`prepare` (:data:`saeprobe.layout.DATA`): the text datasets' columns and label-name
metadata (:mod:`saeprobe.data`) — ``doc_id``, ``text`` (the text prompt fed after the image,
``""`` by default), ``label``, ``label_name``, ``split``, ``lang`` (null), ``source_row`` — plus
``image`` (binary, PNG-encoded RGB). Sources: scikit-learn's digits, a local folder of class
sub-folders (optionally inside split folders), a local table (.parquet, ...) or a hub dataset
with an image column. Splits are the source's when it has them, else seeded and stratified
(:func:`saeprobe.data._assign_splits`, exactly as for text).

:func:`extract` (:data:`saeprobe.layout.ACTIVATIONS`): the ragged store of
:mod:`saeprobe.store` written by :func:`saeprobe.activations.extract` for text, holding for each
image only its image-token positions (``image_seq_length`` rows per image, ``special`` False),
so SAE training, encoding, pooling and probes run on it unchanged. Layers follow
:mod:`saeprobe.activations`: ``layer L`` is the output of language-model block L (forward
hooks; ``hidden_states[L+1]``), or its input with ``layer_convention: mosaic``; the forward
pass stops after the deepest requested block.

The prompt is the processor's own layout, ``<image>`` × image_seq_length + BOS + prompt + ``\\n``
with ``token_type_ids`` 0 everywhere, so image and prompt tokens attend to each other
bidirectionally (PaliGemma's prefix-LM attention; Beyer et al. 2024, §3.2).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from saeprobe import data
from saeprobe.config import with_defaults
from saeprobe.errors import CacheError, ConfigError, DataError, one_line
from saeprobe.io import rebuild_command

if TYPE_CHECKING:  # torch, zarr and transformers are imported where they are used: preparing data needs none
    import torch
    import zarr
    from torch import nn

log = logging.getLogger("saeprobe")

HIDDEN_PREFIX = "."  # hidden files (.DS_Store, ...) in image folders are skipped and counted

# --------------------------------------------------------------------------- data


class _Source:
    """Images of a source before decoding: each item is encoded bytes, a file path or a pixel array."""

    def __init__(self, origin: str):
        self.origin = origin
        self.items: list[bytes | Path | np.ndarray] = []
        self.where: list[str] = []  # how to name item i in an error message
        self.labels: list[Any] = []
        self.splits: list[str | None] = []


def _digits() -> _Source:
    """scikit-learn's digits (Alpaydin & Kaynak 1998): 1797 8×8 images, values 0..16 → uint8 RGB."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    src = _Source("sklearn:digits")
    pixels = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    for i, (img, label) in enumerate(zip(pixels, bunch.target, strict=True)):
        src.items.append(np.repeat(img[:, :, None], 3, axis=2))
        src.where.append(f"sklearn digits image {i}")
        src.labels.append(int(label))
        src.splits.append(None)
    return src


def _visible_files(folder: Path, skipped: list[Path]) -> list[Path]:
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(HIDDEN_PREFIX):
            skipped.append(path)
        elif path.is_file():
            files.append(path)
    return files


def _folder(root: Path, spec: dict[str, Any], name: str) -> _Source:
    """``root/<class>/<image>`` or ``root/<split>/<class>/<image>`` (every top-level folder a split name)."""
    src = _Source(str(root))
    mapping = {**{s: s for s in data.SPLITS}, **(spec.get("split_names") or {})}
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(HIDDEN_PREFIX))
    if not top:
        raise DataError(f"dataset '{name}': folder {root} has no class sub-folders (expected {root}/<label>/<image files>)")
    split_layout = all(p.name in mapping for p in top) and all(any(c.is_dir() for c in p.iterdir()) for p in top)
    groups = [(p.name, p) for p in top] if split_layout else [(None, root)]
    skipped: list[Path] = []
    loose = _visible_files(root, skipped) + [f for _, folder in groups if split_layout for f in _visible_files(folder, skipped)]
    if loose:
        raise DataError(f"dataset '{name}': {len(loose)} files outside class sub-folders (e.g. {loose[0]}); "
                        f"expected {root}/<label>/<image files> or {root}/<split>/<label>/<image files>")
    for split, folder in groups:
        classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(HIDDEN_PREFIX))
        for cls in classes:
            for path in _visible_files(cls, skipped):
                src.items.append(path)
                src.where.append(f"file {path}")
                src.labels.append(cls.name)
                src.splits.append(split)
    if skipped:
        log.warning("dataset %s: skipped %d hidden files or folders (e.g. %s)", name, len(skipped), skipped[0])
    if not src.items:
        raise DataError(f"dataset '{name}': no image files under {root}")
    return src


def _table(spec: dict[str, Any], name: str) -> _Source:
    """A table (local file or hub dataset, read by :func:`saeprobe.data.read_source`) with an image column.

    The image column may hold encoded bytes, the Hugging Face ``Image`` feature's
    ``{bytes, path}`` struct, or file paths (relative to the table's folder).
    """
    df, origin = data.read_source(spec, name)
    image_col, label_col = spec["image_column"], spec["label_column"]
    for col, role in ((image_col, "image"), (label_col, "label")):
        if col not in df.columns:
            raise DataError(f"dataset '{name}' ({origin}): no {role} column '{col}'; columns are {df.columns}. "
                            f"Set datasets.{name}.{role}_column in the config.")
    split_col = spec["split_column"]
    if data.HUB_SPLIT in df.columns and split_col is not None and split_col not in df.columns:
        split_col = data.HUB_SPLIT  # the hub's own splits; split_column: null draws our own instead
    base = Path(spec["path"]).parent if "path" in spec else Path(".")
    src = _Source(origin)
    splits = df[split_col].cast(pl.String).to_list() if split_col and split_col in df.columns else [None] * df.height
    for i, (value, label, split) in enumerate(zip(df[image_col].to_list(), df[label_col].to_list(), splits, strict=True)):
        where = f"row {i} of column '{image_col}' in {origin}"
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, str):
            path = Path(value)
            value = path if path.is_absolute() else base / path
        if value is None:
            raise DataError(f"dataset '{name}': {where} has no image")
        src.items.append(value)
        src.where.append(where)
        src.labels.append(label)
        src.splits.append(split)
    return src


def read_images(spec: dict[str, Any], name: str = "dataset") -> _Source:
    """Collect a source's images (not yet decoded), labels and split names.

    Raises:
        DataError: missing folder/file/column, empty source, unreadable hub dataset.
    """
    spec = with_defaults("datasets", spec)
    if "sklearn" in spec:
        if spec["sklearn"] != "digits":
            raise DataError(f"dataset '{name}': unknown scikit-learn image set '{spec['sklearn']}' (known: digits)")
        return _digits()
    if "path" in spec:
        path = Path(spec["path"])
        if not path.exists():
            raise DataError(f"dataset '{name}': not found: {path}")
        return _folder(path, spec, name) if path.is_dir() else _table(spec, name)
    return _table(spec, name)


def to_png(item: bytes | Path | np.ndarray, where: str, name: str = "dataset") -> bytes:
    """Decode an image (encoded bytes, a file, or an (H, W[, C]) uint8 array) and re-encode it as RGB PNG.

    Raises:
        DataError: the image cannot be read or decoded; names ``where`` (the file or row).
    """
    from PIL import Image

    try:
        if isinstance(item, np.ndarray):
            img = Image.fromarray(item)
        else:
            img = Image.open(item if isinstance(item, Path) else io.BytesIO(item))
            img.load()
        img = img.convert("RGB")
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        raise DataError(f"dataset '{name}': cannot read the image in {where}: {one_line(exc)}") from exc
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def decode(png: bytes) -> Any:
    """A stored ``image`` cell as an RGB ``PIL.Image``."""
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    img.load()
    return img.convert("RGB")


def _subsample(labels: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``max_rows`` rows, stratified by label where every class has 2+ rows."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 and max_rows >= len(counts) else None
    keep, _ = train_test_split(idx, train_size=max_rows, random_state=seed, stratify=stratify)
    return np.sort(keep)


def prepare(spec: dict[str, Any], name: str, seed: int) -> tuple[pl.DataFrame, list[str], dict[str, Any]]:
    """Normalise an image source to the prepared-dataset columns plus ``image`` (PNG bytes).

    Args:
        spec: one ``datasets.<name>`` entry with ``kind: image`` and ``sklearn``, ``path`` or ``hub``.
        seed: seeds the ``max_rows`` sample and drawn splits.
    Returns:
        (frame, label names in index order, report with counts), like :func:`saeprobe.data.prepare`:
        columns doc_id (int64, 0..n-1 in source order), text (str: ``prompt``), label (int64),
        label_name, split, lang (null str), source_row (int64), image (binary PNG).
    Raises:
        DataError: unreadable image (naming the file or row), missing labels, a single class,
            an unknown split name, too few examples for a stratified split, a ``lang_column``.
    """
    spec = with_defaults("datasets", spec)
    if spec.get("lang_column"):
        raise DataError(f"dataset '{name}': lang_column is not supported for image datasets")
    src = read_images(spec, name)
    n_source = len(src.items)
    report: dict[str, Any] = {"source": src.origin, "n_source_rows": n_source}
    missing = [i for i, v in enumerate(src.labels) if v is None or str(v).strip() == ""]
    if missing:
        raise DataError(f"dataset '{name}' ({src.origin}): {len(missing)} images have no label "
                        f"(first: {[src.where[i] for i in missing[:3]]})")
    rows = np.arange(n_source)
    max_rows = spec.get("max_rows")
    if max_rows is not None and n_source > max_rows:
        rows = _subsample(np.array([str(v) for v in src.labels]), max_rows, seed)
        log.info("dataset %s: kept a seeded sample of %d of %d images (max_rows)", name, len(rows), n_source)
    report["n_dropped_max_rows"] = n_source - len(rows)

    raw_labels = [src.labels[i] for i in rows]
    values = sorted(set(raw_labels), key=data._label_order)
    label_names = [str(v) for v in values]
    if len(label_names) < 2:
        raise DataError(f"dataset '{name}' ({src.origin}): a single class {label_names}; a probe needs two or more")
    index = {v: i for i, v in enumerate(values)}
    labels = np.array([index[v] for v in raw_labels], dtype=np.int64)
    images = [to_png(src.items[i], src.where[i], name) for i in rows]

    n = len(rows)
    out = pl.DataFrame({
        "source_row": rows.astype(np.int64),
        "label": labels,
        "split_raw": pl.Series([src.splits[i] for i in rows], dtype=pl.String),
    })
    split = data._assign_splits(out, spec, name, seed, report, label_names, spec["label_column"],
                                src.origin)
    frame = pl.DataFrame({
        "doc_id": np.arange(n, dtype=np.int64),
        "text": pl.Series([spec.get("prompt") or ""] * n, dtype=pl.String),
        "label": labels,
        "label_name": [label_names[i] for i in labels],
        "split": pl.Series(split, dtype=pl.String),
        "lang": pl.Series([None] * n, dtype=pl.String),
        "source_row": rows.astype(np.int64),
        "image": pl.Series(images, dtype=pl.Binary),
    })
    report["n_docs"] = n
    counts = frame.group_by("split", "label_name").len().sort("split", "label_name")
    report["counts"] = {s: {ln: int(c) for _, ln, c in counts.filter(pl.col("split") == s).iter_rows()} for s in data.SPLITS}
    return frame, label_names, report


# --------------------------------------------------------------------------- model


def language_model(model: nn.Module) -> nn.Module:
    """The language model (decoder stack) inside a vision-language model.

    Raises:
        ConfigError: the model has none (not a vision-language model).
    """
    from torch import nn

    for owner in (model, getattr(model, "model", None)):
        lm = getattr(owner, "language_model", None) if owner is not None else None
        if isinstance(lm, nn.Module):
            return lm
    raise ConfigError(f"{type(model).__name__} is not a vision-language model (no language_model inside); "
                      "models used on image datasets need kind: vision and a PaliGemma-style checkpoint")


def load(spec: dict[str, Any], name: str, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """Load a vision-language model (``AutoModel``: no LM head) in eval mode, and its processor.

    Both come from the one loader (:func:`saeprobe.models.load_pretrained` with purpose
    ``vision``, :func:`saeprobe.models.load_processor`): ``attn_implementation: auto`` picks
    ``eager`` when the language model is Gemma 2/3 (PaliGemma 2), whose attention logit
    soft-capping SDPA ignores; ``spec['layers']`` is checked against the language model's depth
    before the weights are read. The processor is loaded first (it is cheap and fails fast).

    Raises:
        ConfigError: config, weights or processor cannot be loaded (:class:`~saeprobe.errors.ModelLoadError`),
            a layer that does not exist, or the model is not a vision-language model with an image token.
    """
    from saeprobe.models import load_pretrained, load_processor, resolve_source

    processor = load_processor(spec, name)
    if getattr(processor, "image_token_id", None) is None or not hasattr(processor, "image_seq_length"):
        raise ConfigError(f"models.{name}: the processor of '{resolve_source(spec, name)}' ({type(processor).__name__}) "
                          "has no image token / image_seq_length (a PaliGemma processor is expected)")
    model = load_pretrained(spec, name, "vision", device, dtype)
    try:
        language_model(model)
    except ConfigError as exc:
        raise ConfigError(f"models.{name}: {exc}") from None
    return model, processor


def read_prepared(path: str | Path) -> tuple[list[bytes], list[str]]:
    """The images (PNG bytes) and text prompts of a prepared image dataset (:func:`prepare`), by doc_id.

    Raises:
        CacheError: the file is damaged, or has no ``image`` column (not written by ``prepare_images``).
    """
    frame, _ = data.read(path)
    if "image" not in frame.columns:
        raise CacheError(f"{path}: no 'image' column (not written by prepare_images); rebuild it with: "
                         f"{rebuild_command(path)}")
    return frame["image"].to_list(), frame["text"].to_list()


def batch_inputs(processor: Any, images: Sequence[Any], prompt: str) -> dict[str, torch.Tensor]:
    """Processor inputs for images that share one text ``prompt``.

    Layout (the processor's): ``<image>`` × image_seq_length, BOS, prompt, ``\\n``.
    Returns input_ids, attention_mask, token_type_ids (batch, seq) and pixel_values (batch, 3, H, W).
    """
    enc = processor(images=list(images), text=[processor.image_token + prompt] * len(images), return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values")}


def extract(
    model: nn.Module,
    processor: Any,
    images: Sequence[bytes],
    prompts: Sequence[str],
    group: zarr.Group,
    layers: Sequence[int],
    *,
    convention: str = "block_output",
    token_budget: int = 16384,
    store_dtype: str = "float16",
    chunk_tokens: int | None = None,
) -> dict[str, Any]:
    """Write the language model's residual stream at each image's image-token positions into ``group``.

    Args:
        model: vision-language model in eval mode (e.g. ``PaliGemmaModel``; its device and dtype are used).
        processor: its processor (``image_token``, ``image_token_id``, ``image_seq_length``).
        images: per document (index = doc_id), PNG/JPEG bytes.
        prompts: per document, the text after the image (documents with the same prompt are
            batched together, so sequences are never padded).
        group: empty Zarr group to fill (layout of :mod:`saeprobe.store`): ``layer_{L}``
            (n_docs × image_seq_length, d_model) in ``store_dtype``, ``special`` (all False),
            ``offsets``, ``doc_id`` (stored order: grouped by prompt, then doc_id).
        layers: language-model block indices.
        token_budget: sequence tokens per forward batch (speed/memory only).
        chunk_tokens: rows per Zarr chunk (default :data:`saeprobe.store.ACTIVATION_CHUNK_TOKENS`).
    Written as text stores are (:func:`saeprobe.activations.extract`): cast and checked on the
    device, one device→host copy and one synchronisation per batch, one writer thread per layer
    (:class:`saeprobe.store.BackgroundWriter`), :data:`saeprobe.store.ACTIVATION_COMPRESSOR`.
    Returns:
        Statistics: n_docs, n_tokens, image_seq_length, seq_length, max |activation| per layer,
        ``writer`` (:func:`saeprobe.activations.writer_stats`).
    Raises:
        ValueError: a layer out of range, or ``images``/``prompts`` of different lengths.
        ConfigError: an image was not given ``image_seq_length`` image tokens (a prompt that
            holds the image token itself, or a processor that does not match the model).
        StoreRangeError: ``store_dtype='float16'`` and an activation exceeds 65504 (names layer
            and documents); NonFiniteError: NaN or infinite activations.
    """
    import torch
    from tqdm import tqdm

    from saeprobe.activations import LayerCapture, activation_writers, gather_rows, to_device, writer_stats
    from saeprobe.store import ACTIVATION_CHUNK_TOKENS, BackgroundWriter, write_index

    chunk_tokens = chunk_tokens or ACTIVATION_CHUNK_TOKENS
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    lm = language_model(model)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    d_model = int(lm.config.hidden_size)
    n_img, image_id = int(processor.image_seq_length), int(processor.image_token_id)
    capture = LayerCapture(lm, layers, convention)
    writer = BackgroundWriter(activation_writers(group, layers, d_model, store_dtype, chunk_tokens))
    started = time.perf_counter()
    max_abs = {layer: 0.0 for layer in layers}
    order: list[np.ndarray] = []
    seq_length = 0
    prompt_of = np.array(prompts, dtype=object)
    try:
        with writer, torch.inference_mode(), tqdm(total=len(images), unit="img", desc="forward", mininterval=5) as bar:
            for prompt in dict.fromkeys(prompts):  # distinct prompts, first-seen order
                docs = np.flatnonzero(prompt_of == prompt)
                size = None  # the first batch is one image: it gives the sequence length, hence the batch size
                start = 0
                while start < len(docs):
                    batch = docs[start : start + (size or 1)]
                    inputs = batch_inputs(processor, [decode(images[d]) for d in batch], prompt)
                    seq_length = max(seq_length, inputs["input_ids"].shape[1])
                    is_img = inputs["input_ids"].numpy() == image_id  # on the host: no device sync
                    per_row = is_img.sum(axis=1)
                    inputs = {k: to_device(v.numpy(), device) for k, v in inputs.items()}
                    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
                    if not bool((per_row == n_img).all()):
                        raise ConfigError(f"documents {batch.tolist()[:10]}: {per_row.tolist()[:10]} image tokens, "
                                          f"expected image_seq_length={n_img}; does the dataset's prompt contain "
                                          f"{processor.image_token!r}, or does the processor not match the model?")
                    captured = capture.run(model, **inputs)
                    where = to_device(np.flatnonzero(is_img), device)  # (batch × n_img,), image by image
                    rows = gather_rows(captured, layers, where, store_dtype, batch, max_abs)
                    rows["special"] = np.zeros(len(batch) * n_img, dtype=bool)
                    writer.submit(rows)
                    captured.clear()
                    order.append(batch)
                    bar.update(len(batch))
                    start += len(batch)
                    size = size or max(1, token_budget // int(inputs["input_ids"].shape[1]))
            n_tokens = writer.close()
    finally:
        capture.remove()
    stored = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    offsets = np.arange(len(stored) + 1, dtype=np.int64) * n_img
    assert all(n == offsets[-1] for n in n_tokens.values()), "token count mismatch between layers"
    write_index(group, offsets, stored)
    return {"n_docs": len(images), "n_tokens": int(offsets[-1]), "image_seq_length": n_img,
            "seq_length": seq_length, "max_abs": max_abs, "writer": writer_stats(writer, time.perf_counter() - started)}
