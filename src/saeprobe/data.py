"""Dataset preparation: read a labelled source, normalise it, fix its splits once.

Output (docs/DESIGN.md §4, :data:`saeprobe.layout.DATA`), one row per document:

- ``doc_id`` (int64): stable 0..n-1 in source order, after dropping empty texts;
- ``text`` (str), ``label`` (int64 index into the label names), ``label_name`` (str);
- ``split`` (str): ``train`` / ``validation`` / ``test``;
- ``lang`` (str, nullable);
- ``source_row`` (int64): the row of the source it came from;
- ``group`` (str), only when ``group_column`` is set: the group (template, source, ...) the row
  belongs to, kept whole in one split (see :func:`_carve`); unset, the column is absent and the
  frame is exactly what it was before grouped splits existed.

The ordered label names are also kept in the Parquet schema metadata (``saeprobe.label_names``).
When the source has no split column, a seeded, stratified split is drawn here, once; every
probe and baseline downstream uses these same splits.

Bad input (each message names the dataset, its file, the column and rows):

- empty or whitespace-only texts are dropped, counted and logged (documented behaviour);
- a missing text/label/lang/id/group column, a missing label (null, empty, NaN) or group (null,
  NaN), fewer than two classes, a class with fewer than two train examples (stratified CV needs
  two), numeric labels that look like a continuous variable (:func:`_check_not_continuous`),
  a text that is not valid UTF-8, duplicate values in ``id_column``, too few groups for a
  grouped split, no rows at all: :class:`DataError` (an error about many classes names
  :data:`SHOWN_CLASSES` of them and counts the rest);
- duplicate texts are kept (real datasets have them) but counted and logged, with how many
  cross the train/test boundary and how many carry conflicting labels.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from saeprobe.config import with_defaults
from saeprobe.errors import DataError, one_line
from saeprobe.io import atomic_path, reading
from saeprobe.offline import is_offline

log = logging.getLogger("saeprobe")

SPLITS = ("train", "validation", "test")
LABEL_NAMES_KEY = b"saeprobe.label_names"
# Columns added to hub sources: the split, the config and the folder (``hub_data_dir``) each row
# came from (usable as split_column / lang_column, e.g. one config, split or folder per language).
HUB_SPLIT, HUB_CONFIG, HUB_DATA_DIR = "hub_split", "hub_config", "hub_data_dir"
# Labels that look like a continuous variable, not classes (:func:`_check_not_continuous`): at
# least CONTINUOUS_MIN_VALUES distinct numbers, of which some are not whole numbers, or whose
# values hold a median of fewer than CONTINUOUS_MAX_MEDIAN_ROWS rows each.
CONTINUOUS_MIN_VALUES = 10
CONTINUOUS_MAX_MEDIAN_ROWS = 5
SHOWN_CLASSES = 5  # classes an error names; the rest are counted


def read_source(spec: dict[str, Any], name: str = "dataset") -> tuple[pl.DataFrame, str]:
    """Read a dataset source into a DataFrame.

    A ``hub`` source is read with ``datasets.load_dataset`` once per ``hub_config`` x ``hub_data_dir``
    (each a name, a list, or null), its splits concatenated with columns :data:`HUB_SPLIT`,
    :data:`HUB_CONFIG` and :data:`HUB_DATA_DIR`; offline, from the repository's snapshot in the
    Hugging Face hub cache when there is one (:func:`_hub_location`).

    Args:
        spec: one ``datasets.<name>`` config entry (``path`` or ``hub`` plus options).
    Returns:
        (frame, description of where it came from)
    Raises:
        DataError: unreadable file or unsupported format; a hub dataset that cannot be loaded (not
            cached offline, a loading-script repository, no such config, folder or split), naming it.
    """
    if "path" in spec:
        path = Path(spec["path"])
        if not path.exists():
            raise DataError(f"dataset '{name}': file not found: {path}")
        suffix = "".join(path.suffixes[-1:]).lower()
        _check_unique_columns(path, suffix, name)
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
            where = _utf8_error(path, suffix) if suffix != ".parquet" else None
            if where:
                raise DataError(f"dataset '{name}': {path} is not valid UTF-8: {where}; re-encode the file as UTF-8 "
                                f"(e.g. iconv -f latin1 -t utf-8)") from exc
            raise DataError(f"dataset '{name}': could not read {path}: {one_line(exc)}") from exc
        return df, str(path)

    import datasets  # heavy; only needed for hub datasets

    configs = spec.get("hub_config")
    configs = configs if isinstance(configs, list) else [configs]
    data_dirs = spec.get("hub_data_dir")
    data_dirs = data_dirs if isinstance(data_dirs, list) else [data_dirs]
    source, revision = _hub_location(spec["hub"], spec.get("revision"))
    frames = []
    for config_name in configs:
        for data_dir in data_dirs:
            try:
                folder = {"data_dir": data_dir} if data_dir else {}
                ds = datasets.load_dataset(source, config_name, revision=revision, **folder)
            except Exception as exc:
                what = f"'{spec['hub']}'" + (f" (config '{config_name}')" if config_name else "") + (
                    f" (folder '{data_dir}')" if data_dir else "") + (f" at revision '{revision}'" if revision else "")
                where = f"its snapshot in the local Hugging Face cache ({source})" if source != spec["hub"] else \
                    "the Hugging Face hub"
                raise DataError(f"dataset '{name}': could not load {what} from {where}: {one_line(exc)}") from exc
            for split in spec.get("hub_splits") or list(ds.keys()):
                if split not in ds:
                    raise DataError(f"dataset '{name}': hub dataset '{spec['hub']}' has no split '{split}' (has {list(ds)})")
                frame = pl.from_arrow(ds[split].data.table)
                frames.append(frame.with_columns(pl.lit(split).alias(HUB_SPLIT), pl.lit(config_name).alias(HUB_CONFIG),
                                                 pl.lit(data_dir).alias(HUB_DATA_DIR)))
    return pl.concat(frames, how="diagonal_relaxed"), f"hub:{spec['hub']}"


def _hub_location(repo_id: str, revision: str | None) -> tuple[str, str | None]:
    """(what ``load_dataset`` reads, its revision) for hub dataset ``repo_id``.

    Offline (``offline: true`` or ``HF_HUB_OFFLINE``), ``datasets`` 4+ does not read a repository's
    files from the Hugging Face hub cache — only its own processed cache of an earlier online load —
    so a repository downloaded with ``huggingface_hub`` (``hf download --repo-type dataset``, or an
    earlier run on a machine with network) would not load. Offline, the snapshot of ``revision`` in
    the hub cache (``snapshot_download(..., local_files_only=True)``) is read as a local folder
    instead; ``datasets`` reads its README's configs and data files as it would on the hub. With no
    such snapshot, or online, the hub id is returned unchanged.
    """
    if not is_offline():
        return repo_id, revision
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - not in the hub cache: datasets' own cache may still hold it
        log.debug("dataset %s@%s: no snapshot in the hub cache (%s)", repo_id, revision or "main", one_line(exc))
        return repo_id, revision
    log.info("dataset %s@%s: offline, reading its snapshot in the hub cache, %s", repo_id, revision or "main", folder)
    return folder, None


def _column_names(path: Path, suffix: str) -> list[str] | None:
    """The column names as written in a .csv/.tsv header or a Parquet schema (None: another format,
    or a file too broken to tell, which the reader then reports)."""
    try:
        if suffix == ".parquet":
            return list(pq.read_schema(path).names)
        if suffix in (".csv", ".tsv"):
            with open(path, newline="", encoding="utf-8-sig") as fh:
                return next(csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ","), [])
    except Exception:  # noqa: BLE001 - unreadable: read_source's own reader names the problem
        return None
    return None


def _check_unique_columns(path: Path, suffix: str, name: str) -> None:
    """Two columns of one name are an error: polars would silently rename one (CSV) or fail (Parquet)."""
    names = _column_names(path, suffix) or []
    seen: dict[str, list[int]] = {}
    for i, col in enumerate(names):
        seen.setdefault(col, []).append(i)
    dups = {col: idx for col, idx in seen.items() if len(idx) > 1}
    if dups:
        shown = "; ".join(f"'{col}' (columns {', '.join(str(i) for i in idx)})" for col, idx in dups.items())
        raise DataError(f"dataset '{name}': {path} has more than one column named {shown} (0-based); "
                        "rename them so that each column name is used once")


def _utf8_error(path: Path, suffix: str) -> str | None:
    """Where ``path`` first stops being UTF-8: row (0-based, header not counted), column, byte offset.

    Returns None when the file decodes (the read failed for another reason).
    """
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        return None
    except UnicodeDecodeError as exc:
        start, bad = exc.start, raw[exc.start : exc.start + 4]
    prefix = raw[:start].decode("utf-8")
    if suffix in (".csv", ".tsv"):
        records = list(csv.reader(io.StringIO(prefix), delimiter="\t" if suffix == ".tsv" else ","))
        header = records[0] if records else []
        if not records or prefix.endswith(("\n", "\r")):
            row, col = len(records), 0  # the bad byte starts a new record
        else:
            row, col = len(records) - 1, len(records[-1]) - 1
        column = f"column '{header[col]}'" if row > 0 and col < len(header) else f"column {col}"
        where = f"row {row - 1}, {column}" if row > 0 else "the header line"
    else:
        where = f"row {prefix.count(chr(10))}"
    return f"{where} (byte offset {start}: {bad!r})"


def _as_text(series: pl.Series, column: str, name: str, origin: str) -> pl.Series:
    """``series`` as UTF-8 strings; a binary column must decode (else the first bad row is named)."""
    if series.dtype == pl.Binary:
        values = series.to_list()
        for row, value in enumerate(values):
            if value is None:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"dataset '{name}' ({origin}): column '{column}' row {row} is not valid UTF-8 "
                    f"(byte {exc.start}: {value[exc.start : exc.start + 4]!r}); re-encode the texts as UTF-8"
                ) from None
        return pl.Series(column, [None if v is None else v.decode("utf-8") for v in values], dtype=pl.String)
    return series.cast(pl.String)


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
    spec = with_defaults("datasets", spec)
    df, origin = read_source(spec, name)
    text_col, label_col = spec["text_column"], spec["label_column"]
    _require_column(df, text_col, "text", name, origin)
    _require_column(df, label_col, "label", name, origin)
    if df.height == 0:
        raise DataError(f"dataset '{name}' ({origin}): no rows")

    split_col = spec["split_column"]
    if HUB_SPLIT in df.columns and split_col is not None and split_col not in df.columns:
        split_col = HUB_SPLIT  # the hub's own splits; split_column: null draws our own instead
    lang_col = spec.get("lang_column")
    if lang_col is not None:
        _require_column(df, lang_col, "lang", name, origin)
    id_col = spec.get("id_column")
    if id_col is not None:
        _require_column(df, id_col, "id", name, origin)
        _check_ids(df[id_col], id_col, name, origin)
    group_col = spec.get("group_column")
    if group_col is not None:
        _require_column(df, group_col, "group", name, origin)

    label_raw = df[label_col]
    if label_raw.dtype == pl.Binary:
        label_raw = _as_text(label_raw, label_col, name, origin)
    out = pl.DataFrame(
        {
            "source_row": np.arange(df.height, dtype=np.int64),
            "text": _as_text(df[text_col], text_col, name, origin),
            "label_raw": label_raw,
            "split_raw": df[split_col].cast(pl.String) if split_col and split_col in df.columns else None,
            "lang": df[lang_col].cast(pl.String) if lang_col else pl.Series([None] * df.height, dtype=pl.String),
        }
    )
    if group_col is not None:
        out = out.with_columns(_groups(df[group_col], group_col, name, origin))

    # Missing: null, empty/whitespace, float NaN, or the text "nan" (a NaN written out by pandas).
    as_text = pl.col("label_raw").cast(pl.String).str.strip_chars()
    missing = pl.col("label_raw").is_null() | (as_text == "") | (as_text.str.to_lowercase() == "nan")
    if out["label_raw"].dtype.is_float():
        missing = missing | pl.col("label_raw").is_nan()
    missing_label = out.filter(missing)
    if missing_label.height:
        rows = missing_label["source_row"].head(10).to_list()
        raise DataError(
            f"dataset '{name}' ({origin}): column '{label_col}' has {missing_label.height} missing labels "
            f"(null, empty or NaN) in rows {rows}{' ...' if missing_label.height > 10 else ''} "
            "(0-based, header not counted); fill them in or remove those rows"
        )

    empty = out["text"].is_null() | (out["text"].str.strip_chars() == "")
    n_empty = int(empty.sum())
    if n_empty:
        rows = out.filter(empty)["source_row"].head(10).to_list()
        log.warning("dataset %s: dropped %d empty or whitespace-only texts (source rows %s...)", name, n_empty, rows)
        out = out.filter(~empty)
    if out.height == 0:
        raise DataError(f"dataset '{name}' ({origin}): every text in column '{text_col}' is empty")

    label_names, labels, merged = normalise_labels(out["label_raw"].to_list(), out["source_row"].to_list())
    for canonical, spellings in merged.items():
        detail = ", ".join(f"{sp!r} ({len(rows)} rows, e.g. row {rows[0]})" for sp, rows in spellings.items())
        log.warning("dataset %s: column '%s': %s are one class '%s' (surrounding whitespace is stripped and "
                    "numbers compare by value)", name, label_col, detail, canonical)
    log.info("dataset %s: column '%s' has %d classes %s", name, label_col, len(label_names), label_names[:20])
    _check_not_continuous(label_names, labels, name, origin, label_col)
    if len(label_names) < 2:
        raise DataError(f"dataset '{name}' ({origin}): column '{label_col}' has a single class {label_names}; a probe needs two or more")
    out = out.with_columns(pl.Series("label", labels), pl.Series("label_name", [label_names[i] for i in labels]))

    report: dict[str, Any] = {"source": origin, "n_source_rows": df.height, "n_dropped_empty_text": n_empty,
                              "label_spellings_merged": {c: sorted(sp) for c, sp in merged.items()}}
    split = _assign_splits(out, spec, name, seed, report, label_names, label_col, origin)
    out = out.with_columns(pl.Series("split", split))
    _check_train_classes(out, label_names, name, origin, label_col)
    report["duplicates"] = _count_duplicates(out, name)
    out = out.with_columns(pl.arange(0, out.height, dtype=pl.Int64).alias("doc_id"))
    out = out.select("doc_id", "text", "label", "label_name", "split", "lang", "source_row",
                     *(["group"] if group_col is not None else []))
    report["n_docs"] = out.height
    counts = out.group_by("split", "label_name").len().sort("split", "label_name")
    report["counts"] = {s: {n: int(c) for _, n, c in counts.filter(pl.col("split") == s).iter_rows()} for s in SPLITS}
    return out, label_names, report


def canonical_label(value: object) -> str:
    """The class a raw label value names: text stripped of surrounding whitespace; a number (or a
    text that reads as a finite number) written by value, so ``1``, ``1.0``, ``"1.0"`` and
    ``" 1"`` are all ``"1"`` and ``0.5`` is ``"0.5"``; booleans as ``True``/``False``."""
    if isinstance(value, bool):
        return str(value)
    text = value.strip() if isinstance(value, str) else value
    try:
        number = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(text)
    if not np.isfinite(number):
        return str(text)
    return str(int(number)) if number.is_integer() and abs(number) < 2**63 else repr(number)


def normalise_labels(values: list[object], rows: list[int]) -> tuple[list[str], np.ndarray, dict[str, dict[str, list[int]]]]:
    """Map raw label values to class indices.

    Args:
        values: (n,) raw labels (no missing ones). rows: (n,) their source rows, for the report.
    Returns:
        (class names in a stable order — numeric classes by value, then text lexically —,
        (n,) int64 class index per value, and the classes written more than one way:
        ``{class: {raw spelling: [source rows]}}``).
    """
    canonical = [canonical_label(v) for v in values]
    names = sorted(set(canonical), key=_label_order)
    index = {c: i for i, c in enumerate(names)}
    spellings: dict[str, dict[str, list[int]]] = {}
    for value, c, row in zip(values, canonical, rows, strict=True):
        spellings.setdefault(c, {}).setdefault(str(value), []).append(row)
    merged = {c: sp for c, sp in spellings.items() if len(sp) > 1}
    return names, np.array([index[c] for c in canonical], dtype=np.int64), merged


def _label_order(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _check_ids(ids: pl.Series, column: str, name: str, origin: str) -> None:
    """``id_column`` values must be present and unique."""
    rows = np.flatnonzero(ids.is_null().to_numpy())
    if len(rows):
        raise DataError(f"dataset '{name}' ({origin}): column '{column}' (id_column) is empty in rows "
                        f"{rows[:10].tolist()} (0-based, header not counted)")
    dup = ids.is_duplicated().to_numpy()
    if dup.any():
        frame = pl.DataFrame({"id": ids, "row": np.arange(len(ids))}).filter(pl.Series(dup))
        groups = frame.group_by("id", maintain_order=True).agg(pl.col("row")).head(5)
        shown = "; ".join(f"{v!r} in rows {r}" for v, r in groups.iter_rows())
        n_ids = frame["id"].n_unique()
        raise DataError(f"dataset '{name}' ({origin}): column '{column}' (id_column) has {n_ids} duplicated ids: "
                        f"{shown}{' ...' if n_ids > 5 else ''} (rows 0-based, header not counted)")


def _groups(values: pl.Series, column: str, name: str, origin: str) -> pl.Series:
    """``group_column`` as the text column ``group``; a null (or NaN) group is an error naming the rows.

    Rows are never dropped for a missing group: which split they belong to would be a guess.
    """
    missing = values.is_null()
    if values.dtype.is_float():
        missing = missing | values.is_nan()
    rows = np.flatnonzero(missing.to_numpy())
    if len(rows):
        raise DataError(f"dataset '{name}' ({origin}): column '{column}' (group_column) has {len(rows)} missing groups "
                        f"(null or NaN) in rows {rows[:10].tolist()}{' ...' if len(rows) > 10 else ''} (0-based, "
                        "header not counted); fill them in (e.g. a group of its own per row) or remove those rows")
    try:
        text = _as_text(values, column, name, origin)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"dataset '{name}' ({origin}): column '{column}' (group_column) of type {values.dtype} "
                        f"cannot be read as text: {one_line(exc)}") from None
    return text.alias("group")


def _some(items: list[str]) -> str:
    """The first :data:`SHOWN_CLASSES` of ``items``, joined, and how many more there are."""
    shown = ", ".join(items[:SHOWN_CLASSES])
    return shown + (f" and {len(items) - SHOWN_CLASSES} more" if len(items) > SHOWN_CLASSES else "")


def _many_small_classes(labels: np.ndarray, n_classes: int, label_col: str) -> str:
    """A hint for an error about small classes when there are many classes of few rows each (else "")."""
    median = float(np.median(np.bincount(labels, minlength=n_classes)))
    if n_classes < CONTINUOUS_MIN_VALUES or median >= CONTINUOUS_MAX_MEDIAN_ROWS:
        return ""
    return (f" ({n_classes} classes of a median {median:g} rows each in {len(labels)} rows: is '{label_col}' the "
            "column of class labels?)")


def _check_not_continuous(label_names: list[str], labels: np.ndarray, name: str, origin: str, label_col: str) -> None:
    """Numeric labels that look like a continuous variable, not classes, are an error.

    That is: every class name is a number, there are at least :data:`CONTINUOUS_MIN_VALUES`
    of them, and some are not whole numbers (``0.0, 0.1, ... 1.0``) or the values hold a
    median of fewer than :data:`CONTINUOUS_MAX_MEDIAN_ROWS` rows each (a score or a count
    with a value per handful of rows). A probe classifies: each distinct value would be a class
    of its own. Class codes written as names (``c1``, ``low``) are never numbers.

    Args:
        label_names: the classes, numeric ones first (:func:`normalise_labels`).
        labels: (n,) int64 class index per row.
    Raises:
        DataError: naming the column, a few values, their count and why it looks continuous.
    """
    try:
        values = [float(v) for v in label_names]
    except ValueError:
        return  # a class that is not a number: named classes
    if len(values) < CONTINUOUS_MIN_VALUES:
        return
    fractional = sum(not v.is_integer() for v in values)
    median = float(np.median(np.bincount(labels, minlength=len(label_names))))
    if not fractional and median >= CONTINUOUS_MAX_MEDIAN_ROWS:
        return
    why = (f"{fractional} of them not whole numbers" if fractional else
           f"a median of {median:g} rows per value (fewer than {CONTINUOUS_MAX_MEDIAN_ROWS})")
    raise DataError(
        f"dataset '{name}' ({origin}): column '{label_col}' looks like a continuous variable, not class labels: "
        f"{len(values)} distinct numbers ({_some(label_names)}), {why}; a probe classifies, so each value would be a "
        "class of its own — bin the values into classes in the file (e.g. low/high), or, if they are class codes, "
        "write them as names (e.g. 'c0.1')"
    )


def _check_train_classes(out: pl.DataFrame, label_names: list[str], name: str, origin: str, label_col: str) -> None:
    """Every class needs two train examples: the probe's C is chosen by stratified CV on train."""
    labels, split = out["label"].to_numpy(), out["split"].to_numpy()
    train = np.bincount(labels[split == "train"], minlength=len(label_names))
    total = np.bincount(labels, minlength=len(label_names))
    short = [i for i, c in enumerate(train) if c < 2]
    if short:
        detail = _some([f"'{label_names[i]}' ({train[i]} in train, {total[i]} in all)" for i in short])
        raise DataError(
            f"dataset '{name}' ({origin}): column '{label_col}': {len(short)} of {len(label_names)} classes have fewer "
            f"than 2 train examples: {detail}{_many_small_classes(labels, len(label_names), label_col)}; stratified "
            "cross-validation needs at least 2 per class — add examples or remove (merge) those classes"
        )


def _count_duplicates(out: pl.DataFrame, name: str) -> dict[str, int]:
    """Count duplicate texts (kept, not dropped): rows, those across train/test, those with conflicting labels."""
    groups = out.group_by("text").agg(pl.len().alias("n"), pl.col("split").n_unique().alias("n_splits"),
                                      pl.col("label").n_unique().alias("n_labels"),
                                      pl.col("split").is_in(["train"]).any().alias("in_train"),
                                      pl.col("split").is_in(["test"]).any().alias("in_test"))
    dup = groups.filter(pl.col("n") > 1)
    counts = {
        "n_duplicate_rows": int((dup["n"] - 1).sum()) if dup.height else 0,
        "n_duplicated_texts": dup.height,
        "n_texts_in_train_and_test": int((dup["in_train"] & dup["in_test"]).sum()) if dup.height else 0,
        "n_texts_with_conflicting_labels": int((dup["n_labels"] > 1).sum()) if dup.height else 0,
    }
    if dup.height:
        log.warning("dataset %s: %d texts occur more than once (%d extra rows, kept); %d of them are in both train and "
                    "test, %d carry different labels", name, counts["n_duplicated_texts"], counts["n_duplicate_rows"],
                    counts["n_texts_in_train_and_test"], counts["n_texts_with_conflicting_labels"])
    return counts


def _assign_splits(out: pl.DataFrame, spec: dict[str, Any], name: str, seed: int, report: dict[str, Any],
                   label_names: list[str], label_col: str, origin: str) -> np.ndarray:
    """Each row's split: the source's (mapped by ``split_names``), with missing train/test carved out, or drawn.

    With a ``group`` column in ``out`` (``group_column``), drawn splits keep each group whole and
    ``report["groups"]`` records the groups per split; ``out`` without one (image datasets) and a
    ``group_column`` set is an error.
    """
    group_col = spec.get("group_column")
    groups = out["group"].to_numpy() if "group" in out.columns else None
    if group_col is not None and groups is None:
        raise DataError(f"dataset '{name}': group_column is not supported for {spec.get('kind')} datasets")
    split = _split_rows(out, spec, name, seed, report, label_names, label_col, origin, groups)
    if groups is not None:
        report["groups"] = _group_report(split, groups, group_col, name, origin)
    return split


def _group_report(split: np.ndarray, groups: np.ndarray, column: str, name: str, origin: str) -> dict[str, Any]:
    """Groups per split, and the groups found in more than one split (only the source's splits can do
    that: they are kept as they are, with a warning). Fewer than 2 train groups is an error."""
    frame = pl.DataFrame({"split": split, "group": groups})
    per_group = frame.group_by("group").agg(pl.col("split").n_unique().alias("n_splits"))
    n_across = int((per_group["n_splits"] > 1).sum())
    per_split = {s: frame.filter(pl.col("split") == s)["group"].n_unique() for s in SPLITS}
    if n_across:
        log.warning("dataset %s: %d of %d groups of column '%s' (group_column) span more than one of the source's "
                    "splits (kept as the source has them): their documents are in more than one split",
                    name, n_across, per_group.height, column)
    if per_split["train"] < 2:
        raise DataError(f"dataset '{name}' ({origin}): column '{column}' (group_column): the train split holds "
                        f"{per_split['train']} group(s); grouped cross-validation needs at least 2 — add groups or "
                        "lower test_fraction/validation_fraction")
    return {"column": column, "n_groups": per_group.height, "per_split": per_split, "n_across_splits": n_across}


def _split_rows(out: pl.DataFrame, spec: dict[str, Any], name: str, seed: int, report: dict[str, Any],
                label_names: list[str], label_col: str, origin: str, groups: np.ndarray | None) -> np.ndarray:
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
            return _carve(out, split, spec, name, seed, report, label_names, label_col, origin, groups)
        return split.astype(str)
    report["splits_from"] = "seeded stratified split" if groups is None else "seeded stratified grouped split"
    return _carve(out, np.full(out.height, "train", dtype=object), spec, name, seed, report, label_names, label_col,
                  origin, groups)


def _carve(out: pl.DataFrame, split: np.ndarray, spec: dict[str, Any], name: str, seed: int, report: dict[str, Any],
           label_names: list[str], label_col: str, origin: str, groups: np.ndarray | None = None) -> np.ndarray:
    """Draw test (and validation) rows, stratified by label and seeded, from rows not yet in a split.

    Source splits that exist are kept: only rows labelled train (or everything when there is
    no split) are divided. With ``groups`` (n rows) each group goes whole to one split
    (:func:`_draw_groups`).
    """
    from sklearn.model_selection import train_test_split  # here, not at the top: most jobs read prepared data only

    split = split.copy()
    if "train" not in set(split.tolist()):
        log.info("dataset %s: source splits %s have no train split; splitting all rows", name, sorted(set(split.tolist())))
        split[:] = "train"
    pool = np.flatnonzero(split == "train")
    labels = out["label"].to_numpy()
    before = set(split.tolist())
    for target, frac in (("test", spec["test_fraction"]), ("validation", spec["validation_fraction"])):
        if target in set(split.tolist()) or not frac:
            continue
        counts = np.bincount(labels[pool], minlength=len(label_names))
        too_small = [i for i, c in enumerate(counts) if 0 < c < 3]
        if too_small:
            detail = _some([f"'{label_names[i]}' ({counts[i]})" for i in too_small])
            many = _many_small_classes(labels[pool], len(label_names), label_col)
            raise DataError(
                f"dataset '{name}' ({origin}): column '{label_col}': cannot draw a stratified {target} split: "
                f"{len(too_small)} of {int((counts > 0).sum())} classes have fewer than 3 examples: {detail} (each "
                f"needs 1 in {target} and 2 in train for cross-validation){many} — add examples or remove (merge) "
                "those classes"
            )
        size = frac if target == "test" else frac / max(1e-9, 1 - spec["test_fraction"])
        if groups is not None:
            keep, take = _draw_groups(pool, labels, groups, size, seed, target, frac, spec["group_column"], name, origin)
            split[take] = target
            pool = keep
            continue
        try:
            keep, take = train_test_split(pool, test_size=size, random_state=seed, stratify=labels[pool])
        except ValueError as exc:  # e.g. a test split smaller than the number of classes
            raise DataError(
                f"dataset '{name}' ({origin}): cannot draw a stratified {target} split ({frac:g} of {len(pool)} rows, "
                f"{int((counts > 0).sum())} classes): {one_line(exc)}"
            ) from None
        split[take] = target
        pool = np.sort(keep)
    report["carved"] = sorted(set(split.tolist()) - before)
    return split.astype(str)


def _draw_groups(pool: np.ndarray, labels: np.ndarray, groups: np.ndarray, size: float, seed: int, target: str,
                 frac: float, column: str, name: str, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, drawn rows) of ``pool``: a share ``size`` of it drawn as whole groups, approximately
    stratified by label.

    ``StratifiedGroupKFold(n_splits=round(1/size), shuffle=True, random_state=seed)`` over the
    pool's rows; the drawn rows are the fold whose size is nearest ``size * len(pool)`` (ties:
    the first). Each group lands in exactly one fold, so its rows are all drawn or all kept;
    the share is a multiple of 1/n_splits only approximately (groups differ in size), and the
    stratification is as close as whole groups allow (sklearn's greedy assignment).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / size))
    n_groups = len(np.unique(groups[pool]))
    if n_groups < n_splits:
        raise DataError(
            f"dataset '{name}' ({origin}): column '{column}' (group_column): cannot draw a grouped {target} split "
            f"({frac:g} of the rows = one of {n_splits} folds of whole groups): the {len(pool)} rows to split hold "
            f"{n_groups} group(s), fewer than {n_splits} — add groups or raise the fraction"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    try:
        with warnings.catch_warnings():
            # "The least populated class in y has only N members": stratification is approximate anyway.
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            folds = [test for _, test in splitter.split(pool, labels[pool], groups[pool])]
    except ValueError as exc:  # every class smaller than n_splits
        raise DataError(f"dataset '{name}' ({origin}): cannot draw a grouped {target} split ({frac:g} of {len(pool)} "
                        f"rows, {n_groups} groups): {one_line(exc)}") from None
    want = size * len(pool)
    best = min(range(n_splits), key=lambda i: (len(folds[i]) == 0, abs(len(folds[i]) - want), i))
    take = pool[folds[best]]
    return np.setdiff1d(pool, take), take


def write(out: pl.DataFrame, label_names: list[str], path: str | Path) -> None:
    """Write the prepared dataset atomically with label names in the schema metadata."""
    table = out.to_arrow()
    meta = dict(table.schema.metadata or {})
    meta[LABEL_NAMES_KEY] = json.dumps(label_names).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read(path: str | Path) -> tuple[pl.DataFrame, list[str]]:
    """Read a prepared dataset. Returns (frame sorted by doc_id, label names).

    Raises:
        CacheError: the file is missing, truncated or not Parquet (see :func:`saeprobe.io.reading`).
    """
    with reading(path):
        table = pq.read_table(path)
        names = json.loads((table.schema.metadata or {}).get(LABEL_NAMES_KEY, b"[]"))
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df.sort("doc_id"), names


def label_arrays(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y (n_docs,) int64 labels, split (n_docs,) str, doc_id (n_docs,) int64) of a prepared dataset, doc_id order."""
    return frame["label"].to_numpy(), frame["split"].to_numpy(), frame["doc_id"].to_numpy()


def groups_of(frame: pl.DataFrame) -> np.ndarray | None:
    """(n_docs,) the ``group`` column of a prepared dataset (``group_column`` set), else None."""
    return frame["group"].to_numpy() if "group" in frame.columns else None


def split_column(seed: int) -> str:
    """Column of a :func:`redraw_splits` file holding the split drawn with ``seed``."""
    return f"split_seed{seed}"


def redraw_splits(spec: dict[str, Any], name: str, prepared: pl.DataFrame, seeds: list[int]) -> pl.DataFrame:
    """The split of dataset ``name`` drawn again with each of ``seeds`` (``probe.split_seeds``).

    Each seed prepares the source again (:func:`prepare`: same fractions, stratification and
    groups), so a re-drawn split of a drawn split is exactly what ``seed: <s>`` would have drawn.
    A split that comes from the source (wholly, or with a missing part carved out) is re-drawn
    over all rows as if the source had none (``split_column: null``): seeded, stratified by
    label, grouped with ``group_column``, with the prepared split's fractions of test and
    validation rows (:func:`source_fractions`) — a random split of the same sizes, logged, which
    need not resemble how the source built its own (e.g. a test set from another domain).

    Returns:
        doc_id plus one :func:`split_column` per seed, in doc_id order.
    Raises:
        DataError: the re-prepared documents differ from ``prepared`` (the source changed), or a
            split cannot be drawn (see :func:`prepare`).
    """
    out = prepared.select("doc_id")
    redraw = spec
    for seed in seeds:
        frame, _, report = prepare(redraw, name, seed)
        if report["splits_from"] == "source":  # the first seed tells: re-draw every seed from all rows
            redraw = {**spec, "split_column": None, **source_fractions(prepared)}
            log.warning("dataset %s: its split comes from the source; the split seeds draw random splits of all rows "
                        "with its fractions (test %.4g, validation %.4g)%s", name, redraw["test_fraction"],
                        redraw["validation_fraction"], ", whole groups" if "group" in prepared.columns else "")
            frame, _, report = prepare(redraw, name, seed)
        if not frame["doc_id"].equals(prepared["doc_id"]) or not frame["label"].equals(prepared["label"]):
            raise DataError(f"dataset '{name}': re-preparing with seed {seed} gave other documents or labels than "
                            "the prepared file: was the source changed?")
        out = out.with_columns(frame["split"].alias(split_column(seed)))
    return out


def source_fractions(prepared: pl.DataFrame) -> dict[str, float]:
    """``test_fraction`` and ``validation_fraction`` of a prepared dataset's split (what
    :func:`redraw_splits` re-draws a source split with): its test and validation rows over all rows,
    each lowered by the last float bits that would make :func:`_carve`'s row-wise draw (``ceil`` of
    fraction x rows, validation as ``validation_fraction / (1 - test_fraction)`` of the rest) take
    one row more than the source's split has; grouped draws are approximate anyway."""
    n = prepared.height
    n_test, n_val = int((prepared["split"] == "test").sum()), int((prepared["split"] == "validation").sum())
    test = n_test / n
    while test * n > n_test:
        test = float(np.nextafter(test, 0.0))
    val = n_val / n
    while val and val / (1 - test) * (n - n_test) > n_val:
        val = float(np.nextafter(val, 0.0))
    return {"test_fraction": test, "validation_fraction": val}


def write_splits(splits: pl.DataFrame, path: str | Path) -> None:
    """Write a :func:`redraw_splits` frame atomically."""
    with atomic_path(path) as tmp:
        splits.write_parquet(tmp)


def read_splits(path: str | Path) -> pl.DataFrame:
    """Read a :func:`redraw_splits` file (sorted by doc_id).

    Raises:
        CacheError: the file is missing, truncated or not Parquet (see :func:`saeprobe.io.reading`).
    """
    with reading(path):
        return pl.read_parquet(path).sort("doc_id")
