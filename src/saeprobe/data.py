"""Dataset preparation: read a labelled source, normalise it, fix its splits once.

Output (DESIGN.md §4, ``results/data/{dataset}.parquet``), one row per document:

- ``doc_id`` (int64): stable 0..n-1 in source order, after dropping empty texts;
- ``text`` (str), ``label`` (int64 index into the label names), ``label_name`` (str);
- ``split`` (str): ``train`` / ``validation`` / ``test``;
- ``lang`` (str, nullable).

The ordered label names are also kept in the Parquet schema metadata (``saeprobe.label_names``).
When the source has no split column, a seeded, stratified split is drawn here, once; every
probe and baseline downstream uses these same splits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from saeprobe.errors import DataError
from saeprobe.io import atomic_path

log = logging.getLogger("saeprobe")

SPLITS = ("train", "validation", "test")
LABEL_NAMES_KEY = b"saeprobe.label_names"
# Columns added to hub sources: the split and the config each row came from (usable as
# split_column / lang_column, e.g. one config or split per language).
HUB_SPLIT, HUB_CONFIG = "hub_split", "hub_config"


def read_source(spec: dict[str, Any], name: str = "dataset") -> tuple[pl.DataFrame, str]:
    """Read a dataset source into a DataFrame.

    Args:
        spec: one ``datasets.<name>`` config entry (``path`` or ``hub`` plus options).
    Returns:
        (frame, description of where it came from)
    Raises:
        DataError: unreadable file or unsupported format.
    """
    if "path" in spec:
        path = Path(spec["path"])
        if not path.exists():
            raise DataError(f"dataset '{name}': file not found: {path}")
        suffix = "".join(path.suffixes[-1:]).lower()
        try:
            if suffix == ".parquet":
                df = pl.read_parquet(path)
            elif suffix in (".csv", ".tsv"):
                df = pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=0)
            elif suffix in (".jsonl", ".ndjson"):
                df = pl.read_ndjson(path)
            elif suffix == ".json":
                df = pl.read_json(path)
            else:
                raise DataError(
                    f"dataset '{name}': unsupported file type '{suffix}' for {path} "
                    "(expected .parquet, .csv, .tsv, .jsonl or .json)"
                )
        except DataError:
            raise
        except Exception as exc:  # polars raises many types; the message is what matters
            raise DataError(f"dataset '{name}': could not read {path}: {exc}") from exc
        return df, str(path)

    import datasets  # heavy; only needed for hub datasets

    configs = spec.get("hub_config")
    configs = configs if isinstance(configs, list) else [configs]
    frames = []
    for config_name in configs:
        try:
            ds = datasets.load_dataset(spec["hub"], config_name, revision=spec.get("revision"))
        except Exception as exc:
            what = f"'{spec['hub']}'" + (f" (config '{config_name}')" if config_name else "")
            raise DataError(f"dataset '{name}': could not load {what} from the Hugging Face hub: {exc}") from exc
        for split in spec.get("hub_splits") or list(ds.keys()):
            if split not in ds:
                raise DataError(f"dataset '{name}': hub dataset '{spec['hub']}' has no split '{split}' (has {list(ds)})")
            frame = pl.from_arrow(ds[split].data.table)
            frames.append(frame.with_columns(pl.lit(split).alias(HUB_SPLIT), pl.lit(config_name).alias(HUB_CONFIG)))
    return pl.concat(frames, how="diagonal_relaxed"), f"hub:{spec['hub']}"


def _require_column(df: pl.DataFrame, column: str, role: str, name: str, origin: str) -> None:
    if column not in df.columns:
        raise DataError(
            f"dataset '{name}' ({origin}): no {role} column '{column}'; "
            f"columns are {df.columns}. Set datasets.{name}.{role}_column in the config."
        )


def prepare(spec: dict[str, Any], name: str, seed: int) -> tuple[pl.DataFrame, list[str], dict[str, Any]]:
    """Normalise a source to doc_id/text/label/label_name/split/lang with fixed splits.

    Returns:
        (frame, label names in index order, report dict with counts of what was dropped)
    Raises:
        DataError: missing columns, missing labels, an unknown split name, too few examples.
    """
    df, origin = read_source(spec, name)
    text_col, label_col = spec.get("text_column", "text"), spec.get("label_column", "label")
    _require_column(df, text_col, "text", name, origin)
    _require_column(df, label_col, "label", name, origin)
    if df.height == 0:
        raise DataError(f"dataset '{name}' ({origin}): no rows")

    split_col = spec.get("split_column", "split")
    if HUB_SPLIT in df.columns and split_col is not None and split_col not in df.columns:
        split_col = HUB_SPLIT  # the hub's own splits; split_column: null draws our own instead
    lang_col = spec.get("lang_column")
    if lang_col is not None:
        _require_column(df, lang_col, "lang", name, origin)

    out = pl.DataFrame(
        {
            "source_row": np.arange(df.height, dtype=np.int64),
            "text": df[text_col].cast(pl.String),
            "label_raw": df[label_col],
            "split_raw": df[split_col].cast(pl.String) if split_col and split_col in df.columns else None,
            "lang": df[lang_col].cast(pl.String) if lang_col else pl.Series([None] * df.height, dtype=pl.String),
        }
    )

    missing_label = out.filter(pl.col("label_raw").is_null() | (pl.col("label_raw").cast(pl.String).str.strip_chars() == ""))
    if missing_label.height:
        rows = missing_label["source_row"].head(5).to_list()
        raise DataError(
            f"dataset '{name}' ({origin}): column '{label_col}' has {missing_label.height} missing labels "
            f"(first source rows: {rows})"
        )

    empty = out["text"].is_null() | (out["text"].str.strip_chars() == "")
    n_empty = int(empty.sum())
    if n_empty:
        rows = out.filter(empty)["source_row"].head(10).to_list()
        log.warning("dataset %s: dropped %d empty or whitespace-only texts (source rows %s...)", name, n_empty, rows)
        out = out.filter(~empty)
    if out.height == 0:
        raise DataError(f"dataset '{name}' ({origin}): every text in column '{text_col}' is empty")

    # Label names in a stable order: numeric labels (also numbers read as text from CSV) sort
    # numerically, other strings lexically.
    raw = out["label_raw"]
    values = sorted(set(raw.to_list()), key=_label_order)
    label_names = [str(v) for v in values]
    if len(label_names) < 2:
        raise DataError(f"dataset '{name}' ({origin}): column '{label_col}' has a single class {label_names}; a probe needs two or more")
    index = {v: i for i, v in enumerate(values)}
    labels = np.array([index[v] for v in raw.to_list()], dtype=np.int64)
    out = out.with_columns(pl.Series("label", labels), pl.Series("label_name", [label_names[i] for i in labels]))

    report: dict[str, Any] = {"source": origin, "n_source_rows": df.height, "n_dropped_empty_text": n_empty}
    split = _assign_splits(out, spec, name, seed, report)
    out = out.with_columns(pl.Series("split", split))
    out = out.with_columns(pl.arange(0, out.height, dtype=pl.Int64).alias("doc_id"))
    out = out.select("doc_id", "text", "label", "label_name", "split", "lang", "source_row")
    report["n_docs"] = out.height
    counts = out.group_by("split", "label_name").len().sort("split", "label_name")
    report["counts"] = {s: {n: int(c) for _, n, c in counts.filter(pl.col("split") == s).iter_rows()} for s in SPLITS}
    return out, label_names, report


def _label_order(value: object) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _assign_splits(out: pl.DataFrame, spec: dict[str, Any], name: str, seed: int, report: dict[str, Any]) -> np.ndarray:
    mapping = spec.get("split_names") or {}
    if out["split_raw"].dtype != pl.Null and out["split_raw"].null_count() < out.height:
        raw = out["split_raw"].to_list()
        unknown = sorted({s for s in raw if s not in mapping and s not in SPLITS}, key=str)
        if unknown:
            raise DataError(
                f"dataset '{name}': split column has values {unknown} that map to none of train/validation/test; "
                f"add them to datasets.{name}.split_names"
            )
        split = np.array([mapping.get(s, s) for s in raw], dtype=object)
        report["splits_from"] = "source"
        if "train" not in set(split) or "test" not in set(split):
            # The source has splits, but not both train and test: carve the missing ones from what is there.
            return _carve(out, split, spec, name, seed, report)
        return split.astype(str)
    report["splits_from"] = "seeded stratified split"
    return _carve(out, np.full(out.height, "train", dtype=object), spec, name, seed, report)


def _carve(out: pl.DataFrame, split: np.ndarray, spec: dict[str, Any], name: str, seed: int, report: dict[str, Any]) -> np.ndarray:
    """Draw test (and validation) rows, stratified by label and seeded, from rows not yet in a split.

    Source splits that exist are kept: only rows labelled train (or everything when there is
    no split) are divided.
    """
    split = split.copy()
    if "train" not in set(split.tolist()):
        log.info("dataset %s: source splits %s have no train split; splitting all rows", name, sorted(set(split.tolist())))
        split[:] = "train"
    pool = np.flatnonzero(split == "train")
    labels = out["label"].to_numpy()
    before = set(split.tolist())
    for target, frac in (("test", spec.get("test_fraction", 0.2)), ("validation", spec.get("validation_fraction", 0.0))):
        if target in set(split.tolist()) or not frac:
            continue
        counts = np.bincount(labels[pool])
        too_small = [i for i, c in enumerate(counts) if 0 < c < 2]
        if too_small:
            raise DataError(
                f"dataset '{name}': cannot draw a stratified {target} split: label index {too_small} "
                "has a single example"
            )
        size = frac if target == "test" else frac / max(1e-9, 1 - spec.get("test_fraction", 0.2))
        keep, take = train_test_split(pool, test_size=size, random_state=seed, stratify=labels[pool])
        split[take] = target
        pool = np.sort(keep)
    report["carved"] = sorted(set(split.tolist()) - before)
    return split.astype(str)


def write(out: pl.DataFrame, label_names: list[str], path: str | Path) -> None:
    """Write the prepared dataset atomically with label names in the schema metadata."""
    table = out.to_arrow()
    meta = dict(table.schema.metadata or {})
    meta[LABEL_NAMES_KEY] = json.dumps(label_names).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read(path: str | Path) -> tuple[pl.DataFrame, list[str]]:
    """Read a prepared dataset. Returns (frame sorted by doc_id, label names)."""
    table = pq.read_table(path)
    names = json.loads((table.schema.metadata or {}).get(LABEL_NAMES_KEY, b"[]"))
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df.sort("doc_id"), names
