"""Top SAE features of the best probes, with the token contexts that activate them most.

For each dataset and SAE source, the best SAE probe (highest CV macro F1 in ``grid.parquet``;
ties: fewer features, then table order — never the test score) is opened and, per class, its
``top_n`` features with the largest weights are listed. The weights are those of the
logistic regression in the MaxAbs-scaled feature space the probe was fitted in, so they are
comparable across features.

Sign convention: a multi-class probe has one weight row per class (``coef`` shape
(n_classes, n_features)); a class's features are those with the largest **positive** weights
in its row. A binary probe has a single row (shape (1, n_features)) whose positive weights
push towards class 1 and negative weights towards class 0: class 1 lists the largest positive
weights, class 0 the most negative ones (reported with their negative sign).

For every listed feature the ``k`` most activating token contexts are found by streaming the
per-token SAE code store (:class:`~saeprobe.store.CodeStore`) block by block: memory holds
one block plus a (n_features, k) top list, never the whole store. One context per document
(its strongest token for that feature; ties: earlier position), ranked by activation (ties:
smaller doc_id), so a feature that fires on every token of one long document does not fill
its list with near-duplicates. Special tokens (BOS/CLS/SEP/EOS) are skipped when
``exclude_special`` is set (the same setting as pooling). Context text is the window of
``context_tokens`` tokens either side of the activating token, decoded with the model's
tokenizer from :data:`saeprobe.layout.TOKENS`, with the token marked «like
this». The span is decoded as a whole, never token by token, and no cut splits a character whose
UTF-8 bytes lie in several tokens (SentencePiece byte fallback, ``<0xC3><0xBC>`` for "ü"; byte-level
BPE): a token holding part of a character is marked with the whole character (:func:`mark_context`).
Image datasets have no token text: their contexts carry doc ids and positions only.

Neuronpedia: for an SAE loaded from a SAELens ``release`` whose pretrained-SAE directory entry
has a Neuronpedia id (Gemma Scope does, e.g. ``gemma-2-2b/12-gemmascope-res-16k``), each
feature gets ``https://www.neuronpedia.org/<id>/<feature>``; otherwise the link is empty.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from saeprobe.errors import DataError
from saeprobe.fingerprint import saelens_directory_file
from saeprobe.io import reading
from saeprobe.store import CodeStore
from saeprobe.tables import cv_choice

log = logging.getLogger("saeprobe")

NEURONPEDIA = "https://www.neuronpedia.org"
MARK = ("«", "»")

CONTEXT_DTYPE = pl.Struct({"doc_id": pl.Int64, "position": pl.Int64, "activation": pl.Float64,
                           "label": pl.String, "split": pl.String, "text": pl.String})
SCHEMA = {
    "dataset": pl.String, "model": pl.String, "source": pl.String, "layer": pl.Int64, "pooling": pl.String,
    "binarize": pl.Float64, "cv_macro_f1": pl.Float64, "test_macro_f1": pl.Float64, "class_index": pl.Int64,
    "class_name": pl.String, "rank": pl.Int64, "feature": pl.Int64, "weight": pl.Float64,
    "docs_active_in_class": pl.Float64, "docs_active_elsewhere": pl.Float64, "max_activation": pl.Float64,
    "neuronpedia": pl.String, "contexts": pl.List(CONTEXT_DTYPE),
}


# --------------------------------------------------------------------------- probe selection


def best_sae_probes(grid: pl.DataFrame, datasets: Sequence[str] | None = None) -> pl.DataFrame:
    """One row per (dataset, SAE source): the SAE linear probe chosen on CV macro F1.

    Args:
        grid: ``grid.parquet`` (:data:`saeprobe.tables.GRID_COLUMNS`).
        datasets: keep only these datasets (default all).
    Returns:
        The chosen grid rows (with ``band_size``), in the grid's dataset/source order, chosen by
        the one-standard-error rule (:func:`saeprobe.tables.cv_choice`: the simplest probe within
        one standard error of the best CV macro F1). The test score is never used to choose.
    """
    sae = grid.filter((pl.col("family") == "sae") & (pl.col("probe") == "logreg"))
    if datasets is not None:
        sae = sae.filter(pl.col("dataset").is_in(list(datasets)))
    return cv_choice(sae, ["dataset", "source"])


@dataclass(frozen=True)
class ClassFeature:
    """One listed feature: the class it speaks for, its rank there, index and probe weight."""

    class_index: int
    class_name: str
    rank: int
    feature: int
    weight: float


def top_weighted(coef: np.ndarray, label_names: Sequence[str], top_n: int) -> list[ClassFeature]:
    """The ``top_n`` features per class by probe weight (see the module docstring for signs).

    Args:
        coef: (n_classes, n_features) or, for a binary probe, (1, n_features) float weights.
        label_names: class names, index = class.
    Returns:
        Per class (in class order), up to ``top_n`` features, strongest first; only weights that
        point towards the class (> 0, or < 0 for class 0 of a binary probe) are listed. Ties:
        lower feature index first.
    Raises:
        DataError: ``coef``'s shape does not match the number of classes.
    """
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    n_classes = len(label_names)
    if coef.shape[0] == 1 and n_classes == 2:
        rows = [(0, -coef[0]), (1, coef[0])]
    elif coef.shape[0] == n_classes:
        rows = list(enumerate(coef))
    else:
        raise DataError(f"probe coefficients have {coef.shape[0]} rows but there are {n_classes} classes {list(label_names)}")
    out = []
    for cls, toward in rows:
        order = np.lexsort((np.arange(len(toward)), -toward))[:top_n]
        order = order[toward[order] > 0]
        sign = -1.0 if coef.shape[0] == 1 and cls == 0 else 1.0
        out += [ClassFeature(cls, str(label_names[cls]), rank + 1, int(f), float(sign * toward[f]))
                for rank, f in enumerate(order)]
    return out


# --------------------------------------------------------------------------- streaming top activations


@dataclass
class TopActivations:
    """Per requested feature, its ``k`` strongest documents (one token each).

    Arrays are (n_features, k), row i = ``features[i]``, sorted by activation descending;
    unused slots hold value -inf and doc_id / position -1.
    ``docs_active`` is (n_features, n_labels): documents in which the feature fires (> 0) at
    least once on a counted token, by the document's label (one column when no labels given).
    """

    features: np.ndarray
    value: np.ndarray
    doc_id: np.ndarray
    position: np.ndarray
    docs_active: np.ndarray


def top_activations(store: CodeStore, features: Sequence[int], k: int, *, exclude_special: bool = True,
                    doc_labels: np.ndarray | None = None, n_labels: int = 1,
                    block_tokens: int = 1 << 16) -> TopActivations:
    """Stream ``store`` and keep, per feature, the ``k`` documents where it is strongest.

    Args:
        store: per-token SAE codes (CSR rows, documents as ``offsets``).
        features: SAE feature indices to track (n_features,).
        k: documents kept per feature.
        exclude_special: skip tokens flagged in the store's ``special`` array.
        doc_labels: optional (n_docs,) int label per dataset doc_id, for ``docs_active``.
        block_tokens: tokens read per step (memory bound; a longer document is its own block).
    Returns:
        :class:`TopActivations`. Results do not depend on ``block_tokens``.
    Raises:
        DataError: a feature index is outside the store's width, or ``doc_labels`` is too short.
    """
    feats = np.asarray(features, dtype=np.int64)
    if len(feats) and (feats.min() < 0 or feats.max() >= store.d_sae):
        raise DataError(f"{store.path}: feature index outside 0..{store.d_sae - 1}: {feats.tolist()}")
    if doc_labels is not None and len(store.doc_id) and len(doc_labels) <= int(store.doc_id.max()):
        raise DataError(f"{store.path}: store has doc_id {int(store.doc_id.max())} but only {len(doc_labels)} "
                        "document labels were given")
    n_f = len(feats)
    best_v = np.full((n_f, k), -np.inf)
    best_d = np.full((n_f, k), -1, dtype=np.int64)
    best_p = np.full((n_f, k), -1, dtype=np.int64)
    active = np.zeros((n_f, max(n_labels, 1)), dtype=np.int64)
    if n_f == 0:
        return TopActivations(feats, best_v, best_d, best_p, active)
    for a, b in store.doc_blocks(block_tokens):
        r0, r1 = int(store.offsets[a]), int(store.offsets[b])
        sub = store.rows(r0, r1)[:, feats].tocoo()
        rows, cols, vals = sub.row.astype(np.int64), sub.col.astype(np.int64), sub.data.astype(np.float64)
        keep = vals > 0
        if exclude_special:
            keep &= ~store.special(r0, r1)[rows]
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        if not len(vals):
            continue
        starts = store.offsets[a : b + 1] - r0
        local_doc = np.searchsorted(starts, rows, side="right") - 1
        pos = rows - starts[local_doc]
        doc = store.doc_id[a + local_doc]
        # Strongest token per (feature, document): order by feature, doc, -value, position.
        order = np.lexsort((pos, -vals, doc, cols))
        cols, doc, vals, pos = cols[order], doc[order], vals[order], pos[order]
        first = np.ones(len(cols), dtype=bool)
        first[1:] = (cols[1:] != cols[:-1]) | (doc[1:] != doc[:-1])
        cols, doc, vals, pos = cols[first], doc[first], vals[first], pos[first]
        labels = doc_labels[doc] if doc_labels is not None else np.zeros(len(doc), dtype=np.int64)
        np.add.at(active, (cols, labels), 1)
        # Merge with the running top-k: per feature, value desc then doc_id asc.
        all_c = np.concatenate([np.repeat(np.arange(n_f), k), cols])
        all_v = np.concatenate([best_v.ravel(), vals])
        all_d = np.concatenate([best_d.ravel(), doc])
        all_p = np.concatenate([best_p.ravel(), pos])
        real = all_d >= 0
        all_c, all_v, all_d, all_p = all_c[real], all_v[real], all_d[real], all_p[real]
        order = np.lexsort((all_d, -all_v, all_c))
        all_c, all_v, all_d, all_p = all_c[order], all_v[order], all_d[order], all_p[order]
        group_start = np.searchsorted(all_c, all_c, side="left")
        rank = np.arange(len(all_c)) - group_start
        top = rank < k
        best_v.fill(-np.inf)
        best_d.fill(-1)
        best_p.fill(-1)
        best_v[all_c[top], rank[top]] = all_v[top]
        best_d[all_c[top], rank[top]] = all_d[top]
        best_p[all_c[top], rank[top]] = all_p[top]
    return TopActivations(feats, best_v, best_d, best_p, active)


# --------------------------------------------------------------------------- token contexts


def read_token_ids(path: str | Path, doc_ids: Iterable[int]) -> dict[int, list[int]]:
    """``input_ids`` of the given documents from a tokens parquet (only those rows are kept).

    Raises:
        DataError: the file lacks ``doc_id``/``input_ids``, or a requested doc_id is missing.
        CacheError: the file is truncated or not Parquet (see :func:`saeprobe.io.reading`).
    """
    wanted = sorted({int(d) for d in doc_ids})
    if not wanted:
        return {}
    with reading(path):
        try:
            frame = (pl.scan_parquet(path).select("doc_id", "input_ids")
                     .filter(pl.col("doc_id").is_in(wanted)).collect())
        except pl.exceptions.ColumnNotFoundError as exc:
            raise DataError(f"{path}: needs columns doc_id and input_ids ({exc})") from exc
    ids = dict(zip(frame["doc_id"].to_list(), frame["input_ids"].to_list(), strict=True))
    missing = [d for d in wanted if d not in ids]
    if missing:
        raise DataError(f"{path}: no tokens for doc_id {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    return ids


REPLACEMENT = "\ufffd"  # what a decoder gives for the bytes of a character cut in two
MAX_CHAR_TOKENS = 4  # UTF-8 characters have at most 4 bytes, so at most 4 tokens share one


def char_boundary(ids: Sequence[int], i: int, decode: Callable[[list[int]], str]) -> bool:
    """Whether the cut before ``ids[i]`` splits no character's UTF-8 bytes between two tokens.

    A cut is clean when some run of at most :data:`MAX_CHAR_TOKENS` tokens on each side of it
    decodes without U+FFFD (the document's ends are clean). A byte-fallback token such as
    ``<0xBC>`` that continues a character can start no such run, nor can ``<0xC3>`` end one.
    Decoding runs, not single tokens, keeps this independent of the tokenizer: SentencePiece's
    byte fallback replaces a whole run of byte tokens that is not valid UTF-8, byte-level BPE
    only the invalid bytes.
    """
    n = len(ids)
    if not 0 < i < n:
        return True
    starts = any(REPLACEMENT not in decode(list(ids[i:j])) for j in range(i + 1, min(n, i + MAX_CHAR_TOKENS) + 1))
    ends = any(REPLACEMENT not in decode(list(ids[a:i])) for a in range(max(0, i - MAX_CHAR_TOKENS), i))
    return starts and ends


def mark_context(input_ids: Sequence[int], position: int, window: int, decode: Callable[[list[int]], str]) -> str:
    """Decode ``window`` tokens either side of ``position`` with the token there marked «so».

    The window is decoded as a whole and the marked token located by decoding its prefixes,
    so SentencePiece/BPE word boundaries and spaces come out as in the full text. A character
    whose UTF-8 bytes are spread over several tokens (the byte-fallback tokens ``<0xC3><0xBC>``
    of SentencePiece/Llama/Gemma tokenizers for "ü", or byte-level BPE pieces of a Chinese
    character) is never cut (:func:`char_boundary`): the window grows to whole characters, and a
    marked token that holds part of a character is marked together with the tokens that
    complete it. Newlines are shown as ⏎, and an ellipsis marks a cut-off document.

    Args:
        input_ids: the document's token ids (n_tokens,).
        position: index of the token to mark.
        window: tokens kept on either side of it (before growing to whole characters).
        decode: ids -> text, the tokenizer's own decode (:func:`tokenizer_decoder`).
    Raises:
        DataError: ``position`` is outside the document.
    """
    ids = list(input_ids)
    if not 0 <= position < len(ids):
        raise DataError(f"token position {position} outside a document of {len(ids)} tokens "
                        "(tokens file and code store disagree)")

    def widen(i: int, step: int, stop: int) -> int:
        """Move cut ``i`` by ``step`` until it splits no character (at most a character's worth of tokens)."""
        for _ in range(MAX_CHAR_TOKENS - 1):
            if i == stop or char_boundary(ids, i, decode):
                break
            i += step
        return i

    lo = widen(max(0, position - window), -1, 0)
    hi = widen(min(len(ids), position + window + 1), 1, len(ids))
    start, end = widen(position, -1, lo), widen(position + 1, 1, hi)
    left, with_tok, whole = decode(ids[lo:start]), decode(ids[lo:end]), decode(ids[lo:hi])
    if with_tok.startswith(left) and whole.startswith(with_tok):
        before, token, after = left, with_tok[len(left):], whole[len(with_tok):]
    else:  # the tokenizer merges across the cut: decode the pieces separately
        before, token, after = left, decode(ids[start:end]), decode(ids[end:hi])
    lead = len(token) - len(token.lstrip())
    before, token = before + token[:lead], token[lead:]
    text = f"{'…' if lo > 0 else ''}{before}{MARK[0]}{token}{MARK[1]}{after}{'…' if hi < len(ids) else ''}"
    return text.replace("\r\n", "⏎").replace("\n", "⏎")


def tokenizer_decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    """``ids -> text`` with special tokens kept (they show where a document starts and ends)."""

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    return decode


# --------------------------------------------------------------------------- Neuronpedia


@cache
def _pretrained_directory() -> dict[str, Any]:
    """SAELens' ``pretrained_saes.yaml`` (the file ``get_pretrained_saes_directory()`` reads),
    parsed directly so the lookup needs no import of sae_lens/torch and no network."""
    path = saelens_directory_file()
    if path is None:
        return {}
    if not path.exists():
        log.warning("SAELens pretrained directory not found at %s: no Neuronpedia links", path)
        return {}
    with path.open() as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def neuronpedia_id(release: str | None, sae_id: str | None, directory: dict[str, Any] | None = None) -> str | None:
    """Neuronpedia id of a SAELens pretrained SAE (e.g. ``gemma-2-2b/12-gemmascope-res-16k``), or None.

    Args:
        release, sae_id: the SAE's SAELens release and id (``{layer}`` already filled in).
        directory: the parsed pretrained directory (default: the installed SAELens one).
    """
    if not release or not sae_id:
        return None
    entry = (directory if directory is not None else _pretrained_directory()).get(release) or {}
    for sae in entry.get("saes") or []:
        if sae.get("id") == sae_id:
            return sae.get("neuronpedia") or None
    return None


def neuronpedia_url(np_id: str | None, feature: int) -> str:
    return f"{NEURONPEDIA}/{np_id}/{int(feature)}" if np_id else ""


# --------------------------------------------------------------------------- assembling the table


def feature_rows(probe: dict[str, Any], coef: np.ndarray, label_names: Sequence[str], store: CodeStore, *, top_n: int,
                 contexts: int, context_tokens: int, exclude_special: bool = True,
                 docs: pl.DataFrame | None = None, tokens_path: str | Path | None = None,
                 decode: Callable[[list[int]], str] | None = None, np_id: str | None = None,
                 block_tokens: int = 1 << 16) -> list[dict[str, Any]]:
    """Rows of the top-features table for one best probe (schema :data:`SCHEMA`).

    Args:
        probe: the probe's grid row (dataset, model, source, layer, pooling, binarize, scores).
        coef: its weights; label_names: its classes.
        store: the SAE code store of (model, dataset, source, layer).
        docs: optional prepared dataset (``doc_id``, ``label``, ``split``) for the context's
            label and the per-class firing rates.
        tokens_path, decode: tokens parquet and decoder for context text (None: no text, as
            for image datasets).
        np_id: Neuronpedia id of the SAE, or None.
    """
    listed = top_weighted(coef, label_names, top_n)
    feats = np.array(sorted({f.feature for f in listed}), dtype=np.int64)
    labels = split = None
    if docs is not None:
        n_docs = int(docs["doc_id"].max()) + 1 if docs.height else 0
        labels = np.zeros(n_docs, dtype=np.int64)
        labels[docs["doc_id"].to_numpy()] = docs["label"].to_numpy()
    top = top_activations(store, feats, contexts, exclude_special=exclude_special, doc_labels=labels,
                          n_labels=len(label_names) if labels is not None else 1, block_tokens=block_tokens)
    where = {int(f): i for i, f in enumerate(feats)}
    needed = {int(d) for d in top.doc_id.ravel() if d >= 0}
    if docs is not None and "split" in docs.columns:
        split = dict(docs.filter(pl.col("doc_id").is_in(sorted(needed))).select("doc_id", "split").rows())
    elif docs is not None:
        split = {}
    ids = read_token_ids(tokens_path, needed) if tokens_path is not None and decode is not None else {}
    class_docs = np.bincount(labels, minlength=len(label_names)) if labels is not None else None
    rows = []
    for item in listed:
        i = where[item.feature]
        ctx = []
        for v, d, p in zip(top.value[i], top.doc_id[i], top.position[i], strict=True):
            if d < 0:
                continue
            text = mark_context(ids[int(d)], int(p), context_tokens, decode) if ids else None
            ctx.append({"doc_id": int(d), "position": int(p), "activation": float(v),
                        "label": str(label_names[labels[d]]) if labels is not None else None,
                        "split": split.get(int(d)) if split is not None else None, "text": text})
        in_class = elsewhere = None
        if class_docs is not None:
            n_in = int(class_docs[item.class_index])
            n_out = int(class_docs.sum()) - n_in
            fired = top.docs_active[i]
            in_class = float(fired[item.class_index]) / n_in if n_in else None
            elsewhere = float(fired.sum() - fired[item.class_index]) / n_out if n_out else None
        rows.append({
            "dataset": probe["dataset"], "model": probe["model"], "source": probe["source"], "layer": probe["layer"],
            "pooling": probe["pooling"], "binarize": probe["binarize"], "cv_macro_f1": probe.get("cv_macro_f1"),
            "test_macro_f1": probe.get("test_macro_f1"), "class_index": item.class_index, "class_name": item.class_name,
            "rank": item.rank, "feature": item.feature, "weight": item.weight, "docs_active_in_class": in_class,
            "docs_active_elsewhere": elsewhere, "max_activation": float(top.value[i, 0]) if top.doc_id[i, 0] >= 0 else None,
            "neuronpedia": neuronpedia_url(np_id, item.feature), "contexts": ctx,
        })
    return rows


def to_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


# --------------------------------------------------------------------------- rendering


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def markdown(df: pl.DataFrame, title: str = "Top SAE features of the best probes") -> str:
    """One section per (dataset, source) probe and one table per class."""
    out = [f"# {title}\n"]
    if df.is_empty():
        return out[0] + "\nNo SAE probes in this run.\n"
    for (ds, source), probe in df.group_by(["dataset", "source"], maintain_order=True):
        first = probe.row(0, named=True)
        out.append(f"\n## {ds} · {source}\n\nBest SAE probe by CV macro F1: model `{first['model']}`, layer "
                   f"{first['layer']}, pooling `{first['pooling']}`, binarize `{first['binarize']}` "
                   f"(CV macro F1 {first['cv_macro_f1']:.3f}, test macro F1 {first['test_macro_f1']:.3f}).\n")
        for (cls,), part in probe.group_by(["class_name"], maintain_order=True):
            out.append(f"\n### class `{cls}`\n\n| # | feature | weight | fires in class / elsewhere | max act. | "
                       "top contexts |\n|---|---|---|---|---|---|")
            for row in part.iter_rows(named=True):
                feature = f"[{row['feature']}]({row['neuronpedia']})" if row["neuronpedia"] else str(row["feature"])
                ctx = "<br>".join(
                    f"{c['activation']:.2f} [{c['label'] or ''} #{c['doc_id']}] "
                    + (_md_cell(c["text"]) if c["text"] is not None else f"token {c['position']}")
                    for c in row["contexts"]) or "–"
                max_act = "–" if row["max_activation"] is None else f"{row['max_activation']:.2f}"
                out.append(f"| {row['rank']} | {feature} | {row['weight']:+.3f} | {_pct(row['docs_active_in_class'])} / "
                           f"{_pct(row['docs_active_elsewhere'])} | {max_act} | {ctx} |")
    return "\n".join(out) + "\n"


HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; } h3 { font-size: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; text-align: left; }
th { background: #f2f2f2; } td.num { text-align: right; white-space: nowrap; }
.ctx { font-family: ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre-wrap; }
mark { background: #ffd54f; padding: 0 1px; } .meta { color: #666; } p.note { color: #444; max-width: 70em; }
"""


def _html_context(c: dict[str, Any]) -> str:
    meta = f"<span class='meta'>{c['activation']:.2f} · {html.escape(c['label'] or '')} #{c['doc_id']}</span> "
    if c["text"] is None:
        return meta + f"token {c['position']}"
    text = html.escape(c["text"])
    a, b = html.escape(MARK[0]), html.escape(MARK[1])
    if a in text and b in text:
        head, rest = text.split(a, 1)
        tok, tail = rest.split(b, 1)
        text = f"{head}<mark>{tok}</mark>{tail}"
    return meta + f"<span class='ctx'>{text}</span>"


def html_page(df: pl.DataFrame, title: str = "Top SAE features of the best probes", note: str = "") -> str:
    """A self-contained HTML page of the table (for the Snakemake report, which shows HTML inline)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{HTML_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if note:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    if df.is_empty():
        parts.append("<p>No SAE probes in this run.</p>")
    for (ds, source), probe in df.group_by(["dataset", "source"], maintain_order=True):
        first = probe.row(0, named=True)
        parts.append(f"<h2>{html.escape(ds)} · {html.escape(source)}</h2><p>Best SAE probe by CV macro F1: model "
                     f"<code>{html.escape(str(first['model']))}</code>, layer {first['layer']}, pooling "
                     f"<code>{html.escape(str(first['pooling']))}</code>, binarize <code>{html.escape(str(first['binarize']))}"
                     f"</code> — CV macro F1 {first['cv_macro_f1']:.3f}, test macro F1 {first['test_macro_f1']:.3f}.</p>")
        for (cls,), part in probe.group_by(["class_name"], maintain_order=True):
            parts.append(f"<h3>class <code>{html.escape(str(cls))}</code></h3><table><tr><th>#</th><th>feature</th>"
                         "<th>weight</th><th>fires in class / elsewhere</th><th>max act.</th><th>top contexts</th></tr>")
            for row in part.iter_rows(named=True):
                feature = (f"<a href='{html.escape(row['neuronpedia'])}' target='_blank'>{row['feature']}</a>"
                           if row["neuronpedia"] else str(row["feature"]))
                ctx = "<br>".join(_html_context(c) for c in row["contexts"]) or "–"
                max_act = "–" if row["max_activation"] is None else f"{row['max_activation']:.2f}"
                parts.append(f"<tr><td class='num'>{row['rank']}</td><td class='num'>{feature}</td>"
                             f"<td class='num'>{row['weight']:+.3f}</td><td class='num'>{_pct(row['docs_active_in_class'])}"
                             f" / {_pct(row['docs_active_elsewhere'])}</td><td class='num'>{max_act}</td><td>{ctx}</td></tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
