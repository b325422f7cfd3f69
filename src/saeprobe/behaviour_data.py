"""The behaviour dataset file: one scored multiple-choice item per row, with a JSON summary.

Output (:data:`saeprobe.layout.BEHAVIOUR`, written by :func:`write`), one row per item in
source order (the first ``max_items`` rows):

- ``text`` (str): the filled prompt — what the probes read;
- ``label`` (str): ``correct`` / ``incorrect`` — what the probes predict;
- ``item_id`` (str): the source's ``id`` column, else the source row number;
- ``source_row`` (int64), ``answer`` (int64, gold index), ``answer_text`` (str),
  ``predicted`` (int64), ``predicted_text`` (str), ``correct`` (bool);
- ``losses`` (list<float64>): mean token loss per option (nats), in the source's option order;
- ``option_tokens`` (list<int32>): tokens scored per option;
- ``prompt_truncated`` (bool): the prompt was cut for at least one option.

The Parquet schema metadata key ``saeprobe.behaviour`` holds a JSON summary (:func:`summary`):
scorer, accuracy, majority-label rate, chance rate, truncation and tie counts. The items and
scores come from :mod:`saeprobe.behaviour`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from saeprobe.io import atomic_path, reading

if TYPE_CHECKING:  # behaviour imports this module
    from saeprobe.behaviour import Items, Scores

META_KEY = b"saeprobe.behaviour"
CORRECT, INCORRECT = "correct", "incorrect"


def frame(items: Items, scores: Scores) -> pl.DataFrame:
    """The behaviour dataset of scored ``items`` (columns in the module docstring), one row per item."""
    return pl.DataFrame({
        "text": items.prompts,
        "label": [CORRECT if c else INCORRECT for c in scores.correct],
        "item_id": items.item_ids,
        "source_row": items.source_rows,
        "answer": items.answers,
        "answer_text": [c[a] for c, a in zip(items.choices, items.answers, strict=True)],
        "predicted": scores.predicted,
        "predicted_text": [c[p] for c, p in zip(items.choices, scores.predicted, strict=True)],
        "correct": scores.correct,
        "losses": pl.Series(scores.losses, dtype=pl.List(pl.Float64)),
        "option_tokens": pl.Series(scores.option_tokens, dtype=pl.List(pl.Int32)),
        "prompt_truncated": scores.prompt_truncated,
    })


def summary(items: Items, scores: Scores, **extra: Any) -> dict[str, Any]:
    """Accuracy and baselines of one scoring run.

    ``majority_rate`` is the share of the more common of correct/incorrect (what a probe
    predicting one label everywhere would reach); ``chance_accuracy`` the mean of 1/n_choices;
    ``gold_position_majority`` the accuracy of always answering the most common gold index.
    """
    n = len(items.prompts)
    n_correct = int(scores.correct.sum())
    acc = n_correct / n
    gold_pos = np.bincount(items.answers).max() / n
    return {
        **extra, "n_items": n, "n_correct": n_correct, "accuracy": acc,
        "majority_label": CORRECT if n_correct >= n - n_correct else INCORRECT, "majority_rate": max(acc, 1 - acc),
        "chance_accuracy": float(np.mean([1 / len(c) for c in items.choices])),
        "gold_position_majority": float(gold_pos), "n_prompt_truncated": scores.n_prompt_truncated,
        "n_items_prompt_truncated": int(scores.prompt_truncated.sum()),
        "n_option_truncated": scores.n_option_truncated, "n_ties": scores.n_ties,
    }


def write(df: pl.DataFrame, meta: dict[str, Any], path: str | Path) -> None:
    """Write the behaviour dataset atomically with ``meta`` as JSON under :data:`META_KEY`."""
    table = df.to_arrow()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON summary stored by :func:`write` (empty dict when absent).

    Raises:
        CacheError: the file is missing, truncated or not Parquet (see :func:`saeprobe.io.reading`).
    """
    with reading(path):
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
        return json.loads(raw) if raw else {}
