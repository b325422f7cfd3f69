"""Tokenization of a prepared dataset for one model.

Output (:data:`saeprobe.layout.TOKENS`), one row per document, in doc_id order:

- ``doc_id`` (int64);
- ``input_ids`` (list<int32>): with the model's special tokens (BOS for Llama/Gemma,
  CLS ... SEP for BERT), truncated to ``max_length``;
- ``special_mask`` (list<bool>): True where the token is a special token (from the tokenizer's
  own ``special_tokens_mask``, so literal text is never mistaken for one);
- ``n_tokens`` (int32), ``n_tokens_full`` (int32, before truncation), ``truncated`` (bool).

The Parquet schema metadata key ``saeprobe.tokenizer`` holds JSON: the tokenizer's class
(``tokenizer``), its :func:`tokenizer_fingerprint` and ``max_length`` (:func:`write`, :func:`read`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from saeprobe.errors import CacheError
from saeprobe.io import atomic_path, reading, rebuild_command

log = logging.getLogger("saeprobe")

META_KEY = b"saeprobe.tokenizer"


def tokenize(texts: list[str], tokenizer: Any, max_length: int, batch_size: int = 1024) -> pl.DataFrame:
    """Tokenize ``texts`` (index = doc_id) with special tokens, truncating to ``max_length``.

    Truncation is counted: every document whose full tokenization is longer than
    ``max_length`` is flagged ``truncated`` and logged in total.
    """
    ids_col: list[list[int]] = []
    mask_col: list[list[bool]] = []
    full_len: list[int] = []
    kwargs = dict(add_special_tokens=True, return_special_tokens_mask=True, verbose=False)
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        enc = tokenizer(chunk, truncation=False, **kwargs)
        ids, masks = enc["input_ids"], enc["special_tokens_mask"]
        full_len.extend(len(x) for x in ids)
        # Re-tokenize only the long ones with the tokenizer's own truncation, which keeps the
        # closing special token (e.g. BERT's SEP) in place.
        long = [i for i, x in enumerate(ids) if len(x) > max_length]
        if long:
            cut = tokenizer([chunk[i] for i in long], truncation=True, max_length=max_length, **kwargs)
            for j, i in enumerate(long):
                ids[i], masks[i] = cut["input_ids"][j], cut["special_tokens_mask"][j]
        ids_col.extend(ids)
        mask_col.extend([bool(m) for m in row] for row in masks)
    n_tokens = np.array([len(x) for x in ids_col], dtype=np.int32)
    full = np.array(full_len, dtype=np.int32)
    truncated = full > n_tokens
    if truncated.any():
        log.warning(
            "truncated %d of %d documents to max_length=%d tokens (longest: %d tokens)",
            int(truncated.sum()), len(texts), max_length, int(full.max()),
        )
    return pl.DataFrame(
        {
            "doc_id": np.arange(len(texts), dtype=np.int64),
            "input_ids": pl.Series(ids_col, dtype=pl.List(pl.Int32)),
            "special_mask": pl.Series(mask_col, dtype=pl.List(pl.Boolean)),
            "n_tokens": n_tokens,
            "n_tokens_full": full,
            "truncated": truncated,
        }
    )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash identifying the tokenizer's vocabulary and special tokens."""
    import hashlib

    vocab = sorted(tokenizer.get_vocab().items())
    payload = repr((vocab, tokenizer.all_special_tokens, type(tokenizer).__name__)).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def metadata(tokenizer: Any, max_length: int) -> dict[str, Any]:
    """What a tokens file records of its tokenizer: class name, :func:`tokenizer_fingerprint`, ``max_length``."""
    return {"tokenizer": type(tokenizer).__name__, "fingerprint": tokenizer_fingerprint(tokenizer),
            "max_length": max_length}


def write(tokens: pl.DataFrame, meta: dict[str, Any], path: str | Path) -> None:
    """Write a :func:`tokenize` frame atomically, with ``meta`` (:func:`metadata`) as JSON under :data:`META_KEY`."""
    import pyarrow.parquet as pq

    table = tokens.to_arrow().replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read(path: str | Path) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]:
    """A tokens file written by :func:`write`, by doc_id.

    Returns:
        (per document the (n_tokens,) int64 token ids, per document the (n_tokens,) bool
        special-token mask, the tokenizer metadata)
    Raises:
        CacheError: the file is missing, truncated, not Parquet, or has no tokenizer metadata.
    """
    import pyarrow.parquet as pq

    with reading(path):
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise CacheError(f"{path}: no '{META_KEY.decode()}' metadata (not written by tokenize); rebuild it with: "
                             f"{rebuild_command(path)}")
        meta = json.loads(raw)
        lengths = table.column("n_tokens").to_numpy().astype(np.int64)
        cuts = np.cumsum(lengths)[:-1]
        ids = np.split(table.column("input_ids").combine_chunks().flatten().to_numpy().astype(np.int64), cuts)
        special = np.split(table.column("special_mask").combine_chunks().flatten().to_numpy(zero_copy_only=False), cuts)
    return ids, special, meta
