"""Behaviour labels: multiple-choice items, and a causal language model's answers to them.

The paper's cross-model experiment asks whether the features of model X predict whether model
Y answers a question correctly. This module produces Y's correctness labels: for each item the
prompt (the entry's ``prompt`` template filled with the row's columns) is followed by each
option, and the option's **mean token cross-entropy** given the prompt is computed; the answer
is the option with the lowest loss (ties go to the earlier option), and the item is ``correct``
when that is the gold answer. This is the "lowest-loss option" rule of docs/DESIGN.md §5, length
normalised per token as in lm-evaluation-harness' ``acc_norm``-style scoring by mean loss.

Tokens: the option is scored as ``" " + option`` (the space is left out when the prompt ends
with whitespace or the option starts with it). Prompt and option are tokenized **separately**
without special tokens and the ids concatenated, with the tokenizer's own prefix (BOS) once in
front when it adds one, so the option's tokens are known exactly whatever the tokenizer merges.
When ``prefix + prompt + option`` exceeds the model's ``max_length`` the prompt is cut from the
**left** (the BOS kept); if even the option does not fit beside one prompt token, the option is
cut from the right. Both are counted and logged.

This module holds the items (:func:`read_items`, :func:`prepare_items`) and the scoring
(:func:`encode`, :func:`option_losses`, :func:`score`; :func:`score_entry` runs the stage). The
scorer is loaded by :func:`saeprobe.models.load_pretrained` (purpose ``causal_lm``); the file it
writes (:data:`saeprobe.layout.BEHAVIOUR`, columns and summary metadata) is
:mod:`saeprobe.behaviour_data`; the behaviour table is :mod:`saeprobe.behaviour_tables`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import string
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from saeprobe import data
from saeprobe.activations import plan_batches
from saeprobe.behaviour_data import frame, summary
from saeprobe.config import with_defaults
from saeprobe.errors import ConfigError, DataError, one_line

log = logging.getLogger("saeprobe")


# --------------------------------------------------------------------------- reading the items


def read_items(spec: dict[str, Any], name: str) -> tuple[pl.DataFrame, str]:
    """Read the multiple-choice source of ``behaviour.<name>`` (local file or hub dataset).

    Returns:
        (frame with every source column, description of where it came from)
    Raises:
        DataError: file missing/unreadable, hub dataset unavailable (offline, not cached, or the
            ``datasets`` package not installed).
    """
    if "path" in spec:
        return data.read_source({"path": spec["path"]}, f"behaviour.{name}")
    if importlib.util.find_spec("datasets") is None:
        raise DataError(f"behaviour '{name}': hub source '{spec['hub']}' needs the 'datasets' package "
                        f"(pip install datasets), or give a local file with behaviour.{name}.path")
    hub = {k: spec.get(k) for k in ("hub", "hub_config", "hub_splits", "revision") if spec.get(k) is not None}
    try:
        return data.read_source(hub, f"behaviour.{name}")
    except DataError as exc:
        if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
            raise DataError(f"{exc} (the run is offline — `offline: true` — and '{spec['hub']}' is not in the local "
                            f"cache; set offline: false, or download it and give behaviour.{name}.path)") from exc
        raise


def template_fields(template: str) -> list[str]:
    """Column names a ``str.format`` template refers to (``{question}``, ``{asks_for!r}`` -> the root names).

    Raises:
        ConfigError: positional fields (``{}``, ``{0}``) or a malformed template.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"prompt template {template!r} is malformed: {one_line(exc)}") from exc
    fields = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root == "" or root.isdigit():
            raise ConfigError(f"prompt template {template!r}: positional field '{{{field}}}'; name a column, "
                              "e.g. {question}")
        if root not in fields:
            fields.append(root)
    return fields


@dataclass
class Items:
    """Validated multiple-choice items (one entry per kept source row)."""

    prompts: list[str]
    choices: list[list[str]]
    answers: np.ndarray  # (n,) int64 gold index
    item_ids: list[str]
    source_rows: np.ndarray  # (n,) int64


def prepare_items(df: pl.DataFrame, spec: dict[str, Any], name: str, origin: str) -> Items:
    """Validate the source and fill the prompt template, for the first ``max_items`` rows.

    ``{question}`` is the ``question_column``'s value; any other ``{field}`` is the column of
    that name.

    Raises:
        ConfigError: the template names a field that is not a column (the message lists the columns).
        DataError: a missing question/choices/answer column; a null question or template value;
            choices that are not a list or have fewer than 2 options or an empty option; an answer
            that is missing, not an integer, or out of range — naming the file, column and row.
    """
    spec = with_defaults("behaviour", spec)
    qcol = spec["question_column"]
    ccol = spec["choices_column"]
    acol = spec["answer_column"]
    where = f"behaviour '{name}' ({origin})"
    for role, col in (("question", qcol), ("choices", ccol), ("answer", acol)):
        if col not in df.columns:
            raise DataError(f"{where}: no {role} column '{col}'; columns are {df.columns}. "
                            f"Set behaviour.{name}.{role}_column in the config.")
    template = spec["prompt"]
    fields = template_fields(template)
    unknown = [f for f in fields if f != "question" and f not in df.columns]
    if unknown:
        raise ConfigError(f"behaviour.{name}.prompt: unknown placeholder '{{{unknown[0]}}}' in {template!r}; "
                          f"available: {{question}} (= column '{qcol}') and the columns {df.columns}")
    n_source = df.height
    max_items = spec.get("max_items")
    if max_items is not None:
        df = df.head(max_items)
        log.info("%s: scoring the first %d of %d items (max_items)", where, df.height, n_source)
    if df.height == 0:
        raise DataError(f"{where}: no items")

    choices_raw = df[ccol]
    if choices_raw.dtype == pl.String:  # CSV/TSV: a JSON list per cell
        choices_raw = pl.Series(ccol, [_json_list(v, where, ccol, i) for i, v in enumerate(choices_raw.to_list())],
                                dtype=pl.List(pl.String))
    elif not isinstance(choices_raw.dtype, pl.List | pl.Array):
        raise DataError(f"{where}: column '{ccol}' must hold a list of options per row, not {choices_raw.dtype}")
    choices: list[list[str]] = []
    for i, opts in enumerate(choices_raw.to_list()):
        if opts is None or len(opts) < 2:
            raise DataError(f"{where}: column '{ccol}', row {i}: needs at least 2 choices, got {opts!r}")
        for j, opt in enumerate(opts):
            if opt is None or not str(opt).strip():
                raise DataError(f"{where}: column '{ccol}', row {i}: option {j} is empty ({opt!r})")
        choices.append([str(o) for o in opts])

    answers = np.empty(df.height, dtype=np.int64)
    for i, ans in enumerate(df[acol].to_list()):
        try:
            value = int(ans)
            if value != float(ans):
                raise ValueError
        except (TypeError, ValueError):
            raise DataError(f"{where}: column '{acol}', row {i}: answer {ans!r} is not an option index "
                            f"(0..{len(choices[i]) - 1})") from None
        if not 0 <= value < len(choices[i]):
            raise DataError(f"{where}: column '{acol}', row {i}: answer {value} is out of range for "
                            f"{len(choices[i])} choices (valid 0..{len(choices[i]) - 1})")
        answers[i] = value

    columns = {f: df[qcol if f == "question" else f].to_list() for f in fields}
    prompts = []
    for i in range(df.height):
        values = {f: columns[f][i] for f in fields}
        null = [f for f, v in values.items() if v is None]
        if null:
            col = qcol if null[0] == "question" else null[0]
            raise DataError(f"{where}: column '{col}', row {i}: missing value for the prompt's {{{null[0]}}}")
        try:
            prompts.append(template.format_map(values))
        except (AttributeError, IndexError, KeyError, ValueError) as exc:
            raise ConfigError(f"behaviour.{name}.prompt: cannot fill {template!r} for row {i}: {one_line(exc)}") from exc

    ids = [str(v) for v in df["id"].to_list()] if "id" in df.columns else [str(i) for i in range(df.height)]
    return Items(prompts, choices, answers, ids, np.arange(df.height, dtype=np.int64))


def _json_list(value: Any, where: str, col: str, row: int) -> list[str] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list):
        raise DataError(f"{where}: column '{col}', row {row}: expected a JSON list of options, got {value!r}")
    return parsed


# --------------------------------------------------------------------------- tokens of the options


def model_max_length(model: nn.Module, configured: int) -> int:
    """``configured``, capped at the model's ``max_position_embeddings`` when it has one."""
    cap = getattr(model.config, "max_position_embeddings", None)
    return min(configured, int(cap)) if cap else configured


def bos_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts **before** a text (``[BOS]`` for Llama/Gemma, ``[]`` for GPT-2)."""
    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    full = tokenizer("a b", add_special_tokens=True)["input_ids"]
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return list(full[:k])
    return []


def separator(prompt: str, option: str) -> str:
    """A single space between prompt and option, unless one of them already supplies whitespace."""
    return "" if (not prompt or prompt[-1].isspace() or option[:1].isspace()) else " "


@dataclass
class Encoded:
    """Token ids of every (item, option) pair, flattened item-major.

    ``ids[u]`` = prefix + prompt tokens + option tokens; the option is ``ids[u][start[u]:]``.
    """

    ids: list[list[int]]
    start: np.ndarray  # (n_units,) int64 index of the first option token
    item: np.ndarray  # (n_units,) int64 item index
    option: np.ndarray  # (n_units,) int64 option index
    prompt_truncated: np.ndarray  # (n_units,) bool
    option_truncated: np.ndarray  # (n_units,) bool


def encode(items: Items, tokenizer: Any, max_length: int) -> Encoded:
    """Tokenize every prompt/option pair, cutting the prompt from the left to fit ``max_length``.

    Raises:
        DataError: an empty prompt with a tokenizer that adds no BOS (the first option token
            would have no context), or ``max_length`` too small to hold prefix + 1 + 1 tokens.
    """
    prefix = bos_prefix(tokenizer)
    if max_length < len(prefix) + 2:
        raise DataError(f"max_length {max_length} cannot hold a prompt token and an option token")
    prompt_ids = tokenizer(items.prompts, add_special_tokens=False, verbose=False)["input_ids"]
    pairs = [(i, j, separator(p, o) + o) for i, (p, opts) in enumerate(zip(items.prompts, items.choices, strict=True))
             for j, o in enumerate(opts)]
    option_ids = tokenizer([text for _, _, text in pairs], add_special_tokens=False, verbose=False)["input_ids"]
    budget = max_length - len(prefix)
    ids, start, p_cut, o_cut = [], [], [], []
    for (i, j, text), opt in zip(pairs, option_ids, strict=True):
        ctx = list(prompt_ids[i])
        if not opt:
            raise DataError(f"item {items.item_ids[i]} (row {i}): option {j} {text!r} has no tokens")
        if not ctx and not prefix:
            raise DataError(f"item {items.item_ids[i]} (row {i}): the prompt is empty and the tokenizer adds no BOS, "
                            "so the option has no context to be scored against")
        cut_prompt = cut_option = False
        if len(ctx) + len(opt) > budget:
            keep = max(budget - len(opt), 1 if ctx else 0)
            cut_prompt = keep < len(ctx)
            ctx = ctx[len(ctx) - keep :] if keep else []
            if len(ctx) + len(opt) > budget:
                opt = opt[: budget - len(ctx)]
                cut_option = True
        ids.append(prefix + ctx + list(opt))
        start.append(len(prefix) + len(ctx))
        p_cut.append(cut_prompt)
        o_cut.append(cut_option)
    return Encoded(ids, np.array(start, dtype=np.int64), np.array([p[0] for p in pairs], dtype=np.int64),
                   np.array([p[1] for p in pairs], dtype=np.int64), np.array(p_cut, dtype=bool),
                   np.array(o_cut, dtype=bool))


# --------------------------------------------------------------------------- losses


def _head(model: nn.Module) -> Any:
    """hidden (N, d) -> logits (N, V) as the model's own forward computes them (Gemma 2 soft-capping included)."""
    lm_head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)

    def head(hidden: torch.Tensor) -> torch.Tensor:
        logits = lm_head(hidden)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return head


@torch.no_grad()
def option_losses(model: nn.Module, enc: Encoded, token_budget: int = 16384, batch_size: int = 512,
                  pad_id: int = 0) -> np.ndarray:
    """Mean token cross-entropy (nats) of each unit's option tokens given what precedes them.

    Units are batched longest-first under ``token_budget`` padded tokens and at most
    ``batch_size`` units per forward pass, right-padded with an attention mask (so real tokens
    never see padding; ``pad_id`` fills the padding). Only the final hidden states that predict
    option tokens go through the LM head (so a 256k vocabulary costs memory per option token, not
    per position); the head is checked once against the model's own logits, and the full forward
    is used instead if they differ (a model with extra logit scaling). Cross-entropy is computed
    on float32 logits, averaged in float64.

    Returns:
        (n_units,) float64 losses, in ``enc`` order.
    """
    device = next(model.parameters()).device
    lengths = np.array([len(x) for x in enc.ids], dtype=np.int64)
    out = np.full(len(enc.ids), np.nan)
    base = model.base_model
    usable = base is not model and model.get_output_embeddings() is not None
    head, checked = (_head(model) if usable else None), not usable
    for batch in plan_batches(lengths, token_budget):
        for s in range(0, len(batch), batch_size):
            rows = batch[s : s + batch_size]
            width = int(lengths[rows].max())
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, u in enumerate(rows):
                ids[r, : lengths[u]] = torch.tensor(enc.ids[u])
                mask[r, : lengths[u]] = 1
            ids, mask = ids.to(device), mask.to(device)
            # Positions p whose output predicts token p+1, for p+1 in each option.
            b_idx = np.concatenate([np.full(lengths[u] - enc.start[u], r) for r, u in enumerate(rows)])
            t_idx = np.concatenate([np.arange(enc.start[u], lengths[u]) for u in rows])
            b_t, t_t = torch.from_numpy(b_idx).to(device), torch.from_numpy(t_idx).to(device)
            targets = ids[b_t, t_t]
            if head is not None:
                hidden = base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                logits = head(hidden[b_t, t_t - 1]).float()
                if not checked:
                    checked = True
                    head = _check_head(model, head, ids[:1], mask[:1])
                    if head is None:
                        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[b_t, t_t - 1].float()
            else:
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[b_t, t_t - 1].float()
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none").double()
            sums = torch.zeros(len(rows), dtype=torch.float64, device=device).index_add_(0, b_t, nll)
            counts = torch.from_numpy(lengths[rows] - enc.start[rows]).to(device)
            out[rows] = (sums / counts).cpu().numpy()
    return out


def _check_head(model: nn.Module, head: Any, ids: torch.Tensor, mask: torch.Tensor) -> Any | None:
    """``head`` when it reproduces ``model(...).logits`` on one sequence (1, T), else None (with a warning)."""
    n = int(mask.sum())
    ids, mask = ids[:, :n], mask[:, :n]
    full = model(input_ids=ids, attention_mask=mask).logits[0].float()
    mine = head(model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[0]).float()
    scale = float(full.abs().max()) + 1.0
    diff = float((full - mine).abs().max())
    if diff > 2e-2 * scale:
        log.warning("the LM head applied to the last hidden state differs from %s's logits by %.3g; scoring with "
                    "full-vocabulary logits at every position instead (more memory)", type(model).__name__, diff)
        return None
    return head


@dataclass
class Scores:
    """Per-item scoring results (n = number of items)."""

    losses: list[list[float]]
    option_tokens: list[list[int]]
    predicted: np.ndarray  # (n,) int64
    correct: np.ndarray  # (n,) bool
    prompt_truncated: np.ndarray  # (n,) bool
    n_prompt_truncated: int  # (item, option) pairs whose prompt was cut
    n_option_truncated: int
    n_ties: int  # items whose lowest loss is shared by two options


def score(model: nn.Module, tokenizer: Any, items: Items, max_length: int, token_budget: int = 16384,
          batch_size: int = 512) -> Scores:
    """Score every item: answer = argmin of the options' mean token losses (first option on ties)."""
    max_length = model_max_length(model, max_length)
    enc = encode(items, tokenizer, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    flat = option_losses(model, enc, token_budget=token_budget, batch_size=batch_size, pad_id=pad)
    n = len(items.prompts)
    bounds = np.cumsum([0] + [len(c) for c in items.choices])
    n_tok = np.array([len(x) for x in enc.ids]) - enc.start
    losses = [flat[bounds[i] : bounds[i + 1]].tolist() for i in range(n)]
    tokens = [n_tok[bounds[i] : bounds[i + 1]].astype(int).tolist() for i in range(n)]
    predicted = np.array([int(np.argmin(x)) for x in losses], dtype=np.int64)
    ties = sum(int(np.sum(np.asarray(x) == np.min(x)) > 1) for x in losses)
    p_cut = np.array([enc.prompt_truncated[bounds[i] : bounds[i + 1]].any() for i in range(n)], dtype=bool)
    n_p, n_o = int(enc.prompt_truncated.sum()), int(enc.option_truncated.sum())
    if n_p:
        log.warning("cut the prompt from the left for %d of %d (item, option) pairs (%d items) to fit max_length=%d",
                    n_p, len(enc.ids), int(p_cut.sum()), max_length)
    if n_o:
        log.warning("cut %d options from the right: even with one prompt token they exceed max_length=%d",
                    n_o, max_length)
    if ties:
        log.warning("%d items have tied lowest losses; the earlier option was taken", ties)
    return Scores(losses, tokens, predicted, predicted == items.answers, p_cut, n_p, n_o, ties)


# --------------------------------------------------------------------------- the stage


def score_entry(spec: dict[str, Any], name: str, model_spec: dict[str, Any], scorer: str, device: torch.device,
                dtype: torch.dtype, *, token_budget: int = 16384, batch_size: int = 512,
                ) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Read, validate and score ``behaviour.<name>`` with model ``scorer``.

    Args:
        spec: the ``behaviour.<name>`` settings that change the scores (source, columns,
            ``prompt``, ``max_items``; defaults filled).
        model_spec: the scorer's source keys, ``max_length``, ``attn_implementation`` (defaults filled).
        dtype: the scorer's compute dtype.
        token_budget, batch_size: padded tokens and (item, option) pairs per forward pass (speed
            and memory only; the losses do not depend on them beyond float rounding).
    Returns:
        (the behaviour dataset :func:`saeprobe.behaviour_data.frame`, its
        :func:`~saeprobe.behaviour_data.summary` with the scoring settings)
    Raises:
        ConfigError, DataError: see :func:`prepare_items`, :func:`saeprobe.models.load_pretrained`,
            :func:`encode`.
    """
    spec, model_spec = with_defaults("behaviour", spec), with_defaults("models", model_spec)
    from saeprobe.models import load_pretrained, load_tokenizer

    df, origin = read_items(spec, name)
    items = prepare_items(df, spec, name, origin)
    tokenizer = load_tokenizer(model_spec, scorer)
    model = load_pretrained(model_spec, scorer, "causal_lm", device, dtype)
    max_length = model_max_length(model, model_spec["max_length"])
    scores = score(model, tokenizer, items, max_length, token_budget=token_budget, batch_size=batch_size)
    meta = summary(items, scores, behaviour=name, scorer=scorer, source=origin, n_source_rows=df.height,
                   prompt=spec["prompt"], max_length=max_length,
                   dtype=str(dtype).removeprefix("torch."), device=str(device), scoring="mean token loss, lowest wins",
                   model_class=type(model).__name__)
    if meta["n_correct"] in (0, meta["n_items"]):
        log.warning("behaviour %s: the scorer got %d of %d items right, so the labels have a single class and "
                    "cannot be probed", name, meta["n_correct"], meta["n_items"])
    return frame(items, scores), meta
