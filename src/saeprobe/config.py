"""Configuration: validation against the JSON Schema, defaults, consistency checks.

The schema lives in ``workflow/schemas/config.schema.yaml``. :func:`validate` fills in its
defaults and turns schema violations into one :class:`~saeprobe.errors.ConfigError` whose
message names every offending key, e.g. ``unknown key 'probe.cv_fold'`` or
``'models.minilm.layers': 'two' is not of type 'array'``.

What a valid config runs (its cells, units and targets) is :mod:`saeprobe.grid`.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from saeprobe import layout
from saeprobe.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# Wildcard patterns of the results layout (the Snakefile's wildcard_constraints). Every config
# value that becomes part of a file name is checked against its pattern by :func:`validate`, so
# a value the rules cannot match stops the run at start-up, not as a MissingInputException.
NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"
WILDCARDS = {
    "model": NAME,
    "dataset": NAME,
    "sae": NAME,
    "source": NAME,
    "layer": r"\d+",
    "pooling": r"(mean|max|sum|last|top[1-9]\d*)",
    "binarize": r"(raw|gt[0-9][0-9.]*)",
}


# SAE architectures trained here (saeprobe.sae.training_sae) and the ``saes.<name>.train`` keys each
# reads besides the common ones (its sparsity setting first). Lists in ``width`` and in the
# sparsity key expand into one SAE each (:func:`expand_sae_sweeps`).
COMMON_TRAIN_KEYS = ("architecture", "width", "training_tokens", "batch_size", "lr", "max_buffer_tokens",
                     "heldout_fraction", "datasets")
ARCHITECTURE_KEYS = {
    "topk": ("k",),
    "batchtopk": ("k",),
    "matryoshka_batchtopk": ("k", "matryoshka_widths"),
    "jumprelu": ("l0_coefficient", "jumprelu_init_threshold", "jumprelu_bandwidth"),
    "standard": ("l1_coefficient",),
    "gated": ("l1_coefficient",),
}
SPARSITY_TAG = {"k": "k", "l0_coefficient": "l0c", "l1_coefficient": "l1c"}  # in generated SAE names


def train_settings(train: dict[str, Any]) -> dict[str, Any]:
    """The keys of a validated ``saes.<name>.train`` entry that its architecture reads (a rule param:
    a key the architecture ignores, e.g. ``l1_coefficient`` of a TopK SAE, reruns nothing)."""
    keys = (*COMMON_TRAIN_KEYS, *ARCHITECTURE_KEYS[train["architecture"]])
    return {k: train[k] for k in keys if k in train}


def _tag(value: float) -> str:
    """A number as a file-name part: ``32``, ``0p5``, ``0p001`` (never an exponent)."""
    import numpy as np

    text = np.format_float_positional(float(value), trim="-")
    return text.replace(".", "p")


def sweep_suffix(width: int, sparsity_key: str, value: float) -> str:
    """What :func:`expand_sae_sweeps` appends to an entry's name for one SAE of its sweep:
    ``_w<width>_<k|l0c|l1c><value>`` (``sparsity_key``: ``k``, ``l0_coefficient`` or ``l1_coefficient``)."""
    return f"_w{width}_{SPARSITY_TAG[sparsity_key]}{_tag(value)}"


def expand_sae_sweeps(config: dict[str, Any]) -> None:
    """Expand each ``saes.<name>`` entry whose ``train.width`` or sparsity key is a list into one entry per
    combination, named ``<name>_w<width>_<k|l0c|l1c><value>`` (e.g. ``minilm_batchtopk_w2048_k32``,
    ``minilm_jumprelu_w2048_l0c0p5``), in the config's order. Entries without lists keep their name.
    Idempotent (expanded entries hold scalars).

    Raises:
        ConfigError: a list in a key the architecture does not read, or a generated name that is
            already an entry.
    """
    out: dict[str, Any] = {}
    problems = []
    for name, spec in config["saes"].items():
        train = spec.get("train")
        if not train:
            out[name] = spec
            continue
        arch = train["architecture"]
        sparsity = ARCHITECTURE_KEYS[arch][0]
        listed = [k for k in ("width", "k", "l0_coefficient", "l1_coefficient") if isinstance(train.get(k), list)]
        for key in listed:
            if key not in ("width", sparsity):
                problems.append(f"'saes.{name}.train.{key}': a {arch} SAE does not read {key}, so it cannot be swept "
                                f"(sweep width or {sparsity})")
        if not listed:
            out[name] = spec
            continue
        widths = train["width"] if isinstance(train["width"], list) else [train["width"]]
        values = train[sparsity] if isinstance(train[sparsity], list) else [train[sparsity]]
        for width in widths:
            for value in values:
                generated = name + sweep_suffix(width, sparsity, value)
                if generated in config["saes"] or generated in out:
                    problems.append(f"'saes.{name}': the sweep's SAE '{generated}' is also an entry of saes; rename one")
                    continue
                out[generated] = {**copy.deepcopy(spec), "train": {**copy.deepcopy(train), "width": width, sparsity: value}}
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    config["saes"] = out


def load_schema(path: str | Path | None = None) -> dict[str, Any]:
    return yaml.safe_load(Path(path or SCHEMA_PATH).read_text())


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) config file.

    Raises:
        ConfigError: the file is missing, is not valid YAML (the message names the file, line
            and column of the error), or does not hold a mapping of keys at its top level.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"config file {path}: invalid YAML at {where}: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: invalid YAML: {exc}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected keys at the top level (a mapping), got a {type(loaded).__name__}")
    return loaded


def _fill_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    """Recursively set missing object properties to their schema ``default`` (in place)."""
    if "$ref" in schema:
        ref = schema["$ref"].removeprefix("#/").split("/")
        target: Any = root
        for part in ref:
            target = target[part]
        _fill_defaults(instance, target, root)
    if not isinstance(instance, dict):
        return
    props = schema.get("properties", {})
    for key, sub in props.items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in props:
                _fill_defaults(value, extra, root)


def with_defaults(section: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of one ``<section>.<name>`` entry (``datasets``, ``models``, ``saes``, ``behaviour``)
    with the schema's defaults filled in, for callers of the library that pass a partial entry
    (the workflow's entries are already filled by :func:`validate`). Not validated.

    Raises:
        KeyError: ``section`` is not a section of named entries.
    """
    schema = _schema()
    node = schema["properties"][section]["additionalProperties"]
    out = copy.deepcopy(spec)
    _fill_defaults(out, node, schema)
    return out


@functools.cache
def _schema() -> dict[str, Any]:
    return load_schema()  # read once per process; never modified (defaults are deep-copied out)


def model_sources() -> tuple[str, ...]:
    """The keys that say where ``models.<name>``'s weights come from (``path``, ``hub``, ...,
    ``gguf``): the schema's ``oneOf``, which lets a model have exactly one of them."""
    return tuple(option["required"][0] for option in _schema()["properties"]["models"]["additionalProperties"]["oneOf"])


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a top-level ``$ref`` followed (``#/definitions/...``)."""
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


_TYPE_WORDS = {"integer": ("an integer", "integers"), "number": ("a number", "numbers"), "string": ("a string", "strings"),
               "boolean": ("true or false", "true/false values"), "null": ("null", "nulls"),
               "array": ("a list", "lists"), "object": ("a mapping of keys", "mappings")}


def _expected(schema: dict[str, Any], root: dict[str, Any], plural: bool = False) -> str:
    """What ``schema`` accepts, in words: ``an integer >= 1``, ``a list of distinct numbers > 0``,
    ``one of mean, max``, ``the key path`` (a branch that only requires keys)."""
    schema = _resolve(schema, root)
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema:
            return " or ".join(_expected(s, root, plural) for s in schema[combinator])
    if "enum" in schema:
        return ("any of " if plural else "one of ") + ", ".join(
            "null" if v is None else str(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    types = schema.get("type")
    if types is None:
        if "required" in schema:
            return "the key" + ("s " if len(schema["required"]) > 1 else " ") + " + ".join(schema["required"])
        return "anything"
    phrases = []
    for t in types if isinstance(types, list) else [types]:
        words = _TYPE_WORDS.get(t, (t, t))[1 if plural else 0]
        if t in ("integer", "number"):
            bounds = [f"{op} {schema[key]}" for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                            ("maximum", "<="), ("exclusiveMaximum", "<"))
                      if key in schema]
            words = " ".join([words, " and ".join(bounds)]) if bounds else words
        elif t == "string" and "pattern" in schema:
            words += f" matching {schema['pattern']}"
        elif t == "array":
            items = schema.get("items")
            if isinstance(items, dict):
                words += " of " + ("distinct " if schema.get("uniqueItems") else "") + _expected(items, root, True)
            if schema.get("minItems", 0) > 1:
                words += f" (at least {schema['minItems']})"
            elif schema.get("minItems") == 1:
                words = words.replace("a list", "a non-empty list", 1) if not plural else words
        phrases.append(words)
    return " or ".join(phrases)


def _given(instance: Any) -> str:
    """A config value as the user wrote it, with its YAML type where the type is the problem."""
    if isinstance(instance, str):
        hint = ": write a number without quotes" if _is_number_text(instance) else ""
        return f"'{instance}' (a string{hint})"
    if isinstance(instance, bool):
        return str(instance).lower()
    if instance is None:
        return "null"
    if isinstance(instance, list):
        shown = "[" + ", ".join(repr(v) if isinstance(v, str) else str(v) for v in instance) + "]"
        same = _equal_items(instance)
        return shown + (f" ({same[0]} and {same[1]} are the same value)" if same else "")
    if isinstance(instance, dict):
        return "a mapping of keys"
    return str(instance)


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _equal_items(items: list[Any]) -> tuple[str, str] | None:
    """The first two items of ``items`` that JSON Schema counts as one value (``4`` and ``4.0``)."""
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            if a == b and type(a) is not bool and type(b) is not bool:
                return str(a), str(b)
    return None


def _describe_property_name(error: jsonschema.ValidationError, where: str) -> str:
    """A section's entry name (``saes.<name>``, ``datasets.<name>``) that the schema refuses."""
    name = error.instance
    key = f"{where}.{name}"
    if error.validator == "not":
        reserved = error.validator_value.get("enum", [])
        why = error.schema.get("description") or error.validator_value.get("description")
        return (f"'{key}': the name '{name}' is reserved ({', '.join(map(str, reserved))} are taken"
                f"{': ' + why.rstrip('.') if why else ''}); give the entry another name")
    if error.validator == "pattern":
        return (f"'{key}': the name '{name}' cannot be used: names become parts of file names, so they start with a "
                "letter or digit and hold only letters, digits, '_' and '-'")
    return f"'{key}': {error.message}"


def _describe(error: jsonschema.ValidationError, root: dict[str, Any] | None = None) -> str:
    """One line for one schema violation: the key, what is allowed and what was given."""
    root = root or _schema()
    where = _key(error.absolute_path)
    if "propertyNames" in error.schema_path:
        return _describe_property_name(error, where)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        prefix = f"{where}." if error.absolute_path else ""
        hint = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""

        def guess(key: str) -> str:
            close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
            return f" — did you mean '{close[0]}'?" if close else ""

        return "; ".join(f"unknown key '{prefix}{k}'{guess(k)}{hint}" for k in unknown)
    if error.validator in ("oneOf", "anyOf"):
        branches = [_resolve(s, root) for s in error.validator_value]
        if all(set(s) <= {"required", "description"} and s.get("required") for s in branches):
            options = [" + ".join(s["required"]) for s in branches]
            many = "exactly one" if error.validator == "oneOf" else "at least one"
            if not isinstance(error.instance, dict):
                return f"'{where}': expected a mapping of keys with {many} of: {' | '.join(options)}; got {_given(error.instance)}"
            named = sorted({k for s in branches for k in s["required"]} & set(error.instance))
            has = f" (it has {', '.join(named)})" if named else " (it has none of them)"
            return f"'{where}' needs {many} of: {' | '.join(options)}{has}"
        return f"'{where}': expected {_expected(error.schema, root)}; got {_given(error.instance)}"
    if error.validator == "required":
        return f"'{where}' is missing the required key: {error.message.split(' is a')[0]}"
    return f"'{where}': {error.message}"


def validate(config: dict[str, Any], schema_path: str | Path | None = None, *,
             directory: str | Path | None = None) -> dict[str, Any]:
    """Validate ``config`` in place against the schema, fill defaults, check consistency.

    Args:
        config: the loaded YAML (a mapping); filled in place.
        schema_path: the schema (default :data:`SCHEMA_PATH`).
        directory: the directory the run reads its relative paths from (snakemake's working
            directory). Given, every local file or folder the config names must exist there
            (:func:`check_paths`); None (library callers, tests) checks no file.
    Returns:
        The same dict, with defaults filled in.
    Raises:
        ConfigError: listing every invalid key with what was expected (and, with ``directory``,
            every configured path that does not exist).
    """
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [_describe(e, schema) for e in errors]
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(lines))
    _fill_defaults(config, schema, schema)
    expand_sae_sweeps(config)
    _normalise_layers(config)
    _add_behaviour_datasets(config, schema)
    _check_consistency(config)
    _check_file_names(config)
    if directory is not None:
        check_paths(config, directory)
    return config


def _normalise_layers(config: dict[str, Any]) -> None:
    """Sort and de-duplicate every layer list, so that ``[3, 1]`` and ``[1, 3]`` are one setting
    (the lists reach rule params: a reordering would otherwise rerun extraction)."""
    for section in ("models", "saes"):
        for spec in config.get(section, {}).values():
            if spec.get("layers") is not None:
                spec["layers"] = sorted(set(spec["layers"]))


def _add_behaviour_datasets(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Register each ``behaviour`` entry as a dataset of the same name (idempotent).

    Its file, :data:`saeprobe.layout.BEHAVIOUR`, is written by the ``score_behaviour`` stage
    (text = the prompt, label = correct/incorrect); it is split 80/20 stratified like any
    dataset without a split column.
    """
    for name, spec in config["behaviour"].items():
        existing = config["datasets"].get(name)
        entry = {
            "path": behaviour_path(name), "text_column": "text", "label_column": "label", "split_column": None,
            "test_fraction": spec["test_fraction"],
        }
        for key in ("models", "poolings", "binarize", "hidden_poolings"):
            if key in spec:
                entry[key] = list(spec[key])
        if existing is not None and existing.get("path") != entry["path"]:
            raise ConfigError(f"invalid configuration:\n  - 'behaviour.{name}': a dataset named '{name}' already "
                              "exists; behaviour entries become datasets, so give it another name")
        if existing is None:
            _fill_defaults(entry, schema["properties"]["datasets"]["additionalProperties"], schema)
            config["datasets"][name] = entry


def behaviour_path(name: str) -> str:
    """Where ``score_behaviour`` writes behaviour set ``name`` (a classification dataset)."""
    return layout.path(layout.BEHAVIOUR, name=name)


def _dataset_models(config: dict[str, Any], dataset: str) -> list[str]:
    from saeprobe.grid import dataset_models

    return dataset_models(config, dataset)


def _train_problems(name: str, train: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """What is wrong with one (expanded) ``saes.<name>.train`` entry."""
    if not train:
        return []
    problems = []
    key = f"saes.{name}.train"
    for ds in train.get("datasets") or []:
        if ds not in config["datasets"]:
            problems.append(f"'{key}.datasets': unknown dataset '{ds}'")
    arch, width = train["architecture"], train["width"]
    if train["training_tokens"] < train["batch_size"]:
        problems.append(f"'{key}.training_tokens': {train['training_tokens']} is less than one batch (batch_size "
                        f"{train['batch_size']}): training runs training_tokens // batch_size whole batches, so it "
                        f"would train no full step; raise training_tokens to at least {train['batch_size']} or lower "
                        "batch_size")
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        if train["k"] > width:
            problems.append(f"'{key}.k': a {arch} SAE keeps k of its width latents per token, so k must be "
                            f"at most width; got k={train['k']} > width={width}")
        if arch == "topk" and train["k"] != int(train["k"]):
            problems.append(f"'{key}.k': a TopK SAE keeps a whole number of latents per token; got k={train['k']}")
    if arch == "matryoshka_batchtopk":
        widths = train.get("matryoshka_widths")
        if not widths:
            problems.append(f"'{key}.matryoshka_widths': a Matryoshka SAE needs its nested widths, e.g. "
                            f"[{max(1, width // 8)}, {max(1, width // 2)}]")
        elif any(b <= a for a, b in zip(widths, widths[1:], strict=False)) or widths[-1] >= width:
            problems.append(f"'{key}.matryoshka_widths': {widths} must be strictly increasing and below width={width} "
                            "(width itself is the last level)")
    elif "matryoshka_widths" in train:
        problems.append(f"'{key}.matryoshka_widths': only for architecture matryoshka_batchtopk (this one is {arch})")
    return problems


# A percentile interval's ends are order statistics of the resamples: each tail of a `level`
# interval holds resamples x (1 - level) / 2 of them, and with fewer than this many the end is
# one or two extreme resamples (B = 1 gives a zero-width interval that can miss its own estimate).
MIN_TAIL_RESAMPLES = 5


def min_resamples(level: float) -> int:
    """The fewest bootstrap resamples that leave :data:`MIN_TAIL_RESAMPLES` in each tail of a
    two-sided ``level`` percentile interval: 200 at 0.95, 100 at 0.9, 1000 at 0.99."""
    return math.ceil(round(2 * MIN_TAIL_RESAMPLES / (1 - level), 9))


def _bootstrap_problems(bootstrap: dict[str, Any]) -> list[str]:
    resamples, level = bootstrap["resamples"], bootstrap["level"]
    need = min_resamples(level)
    if resamples >= need:
        return []
    tail = resamples * (1 - level) / 2
    return [f"'bootstrap.resamples': {resamples} resamples leave {tail:g} in each {(1 - level) / 2:.3g} tail of a "
            f"{level:g} percentile interval; its ends need at least {MIN_TAIL_RESAMPLES} resamples per tail, so "
            f"resamples must be at least {need} at level {level:g}"]


def _check_consistency(config: dict[str, Any]) -> None:
    problems = []
    models = config["models"]
    for name, sae in config["saes"].items():
        model = sae["model"]
        if model not in models:
            problems.append(f"'saes.{name}.model': unknown model '{model}' (models: {', '.join(models)})")
            continue
        missing = sorted(set(sae.get("layers", [])) - set(models[model]["layers"]))
        if missing:
            problems.append(
                f"'saes.{name}.layers': layers {missing} are not extracted for model '{model}' "
                f"(models.{model}.layers = {models[model]['layers']})"
            )
        for ds in sae.get("datasets") or []:
            if ds not in config["datasets"]:
                problems.append(f"'saes.{name}.datasets': unknown dataset '{ds}'")
            elif model not in _dataset_models(config, ds):
                problems.append(f"'saes.{name}.datasets': dataset '{ds}' is not processed by the SAE's model '{model}'")
        problems += _train_problems(name, sae.get("train", {}), config)
        if "path" in sae:
            try:
                sae_path(sae, 0)
            except ConfigError as exc:
                problems.append(f"'saes.{name}.path': {exc}")
    for name, spec in config["datasets"].items():
        kind = spec["kind"]
        if "sklearn" in spec and kind != "image":
            problems.append(f"'datasets.{name}.sklearn': scikit-learn sets are images; set kind: image")
        for key in ("max_rows", "prompt"):
            if key in spec and kind != "image":
                problems.append(f"'datasets.{name}.{key}': only for image datasets (kind: image)")
        for model in spec.get("models", []):
            if model not in models:
                problems.append(f"'datasets.{name}.models': unknown model '{model}' (models: {', '.join(models)})")
            elif (models[model]["kind"] == "vision") != (kind == "image"):
                problems.append(f"'datasets.{name}.models': model '{model}' is a {models[model]['kind']} "
                                f"model but the dataset's kind is {kind}")
    for name, spec in config["behaviour"].items():
        if spec["model"] not in models:
            problems.append(f"'behaviour.{name}.model': unknown model '{spec['model']}' (models: {', '.join(models)})")
        elif models[spec["model"]]["kind"] != "text":
            problems.append(f"'behaviour.{name}.model': '{spec['model']}' is not a text model")
    for ds in config["sae_quality"]["loss_datasets"] or []:
        if ds not in config["datasets"]:
            problems.append(f"'sae_quality.loss_datasets': unknown dataset '{ds}' (datasets: {', '.join(config['datasets'])})")
    problems += _bootstrap_problems(config["bootstrap"])
    for stage in ("transfer", "sweep", "ksparse", "baselines"):
        for ds in config[stage]["datasets"]:
            if ds not in config["datasets"]:
                problems.append(f"'{stage}.datasets': unknown dataset '{ds}' (datasets: {', '.join(config['datasets'])})")
            elif stage == "transfer" and not config["datasets"][ds].get("lang_column"):
                problems.append(f"'transfer.datasets': dataset '{ds}' has no lang_column, so it has no languages "
                                "to transfer between")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


# --------------------------------------------------------------------------- file names


def _check_file_names(config: dict[str, Any]) -> None:
    """Every value that becomes part of a file name matches its wildcard, and none collide.

    Checked per list of binarization thresholds (``features``, each dataset's and behaviour
    entry's, ``transfer``, ``sweep``, ``ksparse``, ``baselines``) and per probe cell field. Raises ConfigError naming the key.
    """
    from saeprobe.grid import baseline_cells, binarize_name, ksparse_cells, probe_cells, sweep_cells, transfer_cells

    problems = []
    lists = [("features.binarize", config["features"]["binarize"])]
    lists += [(f"datasets.{d}.binarize", s["binarize"]) for d, s in config["datasets"].items() if "binarize" in s]
    lists += [(f"behaviour.{b}.binarize", s["binarize"]) for b, s in config["behaviour"].items() if "binarize" in s]
    lists += [(f"saes.{n}.binarize", s["binarize"]) for n, s in config["saes"].items() if "binarize" in s]
    lists += [(f"{stage}.binarize", config[stage]["binarize"]) for stage in ("transfer", "sweep", "ksparse", "baselines")
              if stage in config]
    binarize = re.compile(WILDCARDS["binarize"])
    for key, thresholds in lists:
        names: dict[str, float | None] = {}
        for t in thresholds:
            if t is not None and not 0 <= t < float("inf"):
                problems.append(f"'{key}': threshold {t!r} must be a finite number of at least 0 (SAE codes are "
                                "non-negative, so a negative threshold keeps every feature)")
                continue
            name = binarize_name(t)
            if not binarize.fullmatch(name):
                problems.append(f"'{key}': threshold {t!r} gives the file name part '{name}', which does not match "
                                f"{WILDCARDS['binarize']}")
            elif name in names:
                problems.append(f"'{key}': thresholds {names[name]!r} and {t!r} are the same value ('{name}')")
            names[name] = t
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    patterns = {field: re.compile(WILDCARDS[field]) for field in ("model", "dataset", "source", "layer", "pooling")}
    for cell in {*probe_cells(config), *transfer_cells(config), *sweep_cells(config), *ksparse_cells(config),
                 *baseline_cells(config)}:
        for field, pattern in patterns.items():
            value = str(getattr(cell, field))
            if not pattern.fullmatch(value):
                problems.append(f"{field} '{value}' (dataset '{cell.dataset}') does not match the file-name pattern "
                                f"{WILDCARDS[field]}")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(sorted(set(problems))))


# --------------------------------------------------------------------------- local files


def sae_path(spec: dict[str, Any], layer: int) -> str:
    """The local folder of a ``saes.<name>`` entry with ``path`` at ``layer`` (``{layer}`` filled in).

    Raises:
        ConfigError: the path holds a placeholder other than ``{layer}`` (or a stray brace).
    """
    try:
        return str(spec["path"]).format(layer=layer)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"'{spec['path']}' cannot be filled in ({type(exc).__name__}: {exc}); {{layer}} is the only "
                          "placeholder (double a brace that is part of the name: {{ }})") from None


def local_paths(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, path) for every local file or folder a validated config reads, as written (relative
    paths are relative to the run's working directory), in config order, each once:
    ``datasets.<d>.path``, ``models.<m>.path``, ``models.<m>.random.tokenizer``,
    ``saes.<s>.path`` once per layer of the SAE (``{layer}`` filled in; key
    ``saes.<s>.path (layer L)``) and ``behaviour.<b>.path``. Hub ids, packages, scikit-learn sets
    and SAELens releases are not files; the dataset a behaviour entry becomes is written by the
    workflow, so it is not listed.
    """
    from saeprobe.grid import sae_layers

    out: list[tuple[str, str]] = []
    for name, spec in config["datasets"].items():
        if "path" in spec and not (name in config["behaviour"] and spec["path"] == behaviour_path(name)):
            out.append((f"datasets.{name}.path", spec["path"]))
    for name, spec in config["models"].items():
        if "path" in spec:
            out.append((f"models.{name}.path", spec["path"]))
        if spec.get("random", {}).get("tokenizer"):
            out.append((f"models.{name}.random.tokenizer", spec["random"]["tokenizer"]))
    for name, spec in config["saes"].items():
        if "path" not in spec:
            continue
        layers = sae_layers(config, name)
        folders = {layer: sae_path(spec, layer) for layer in layers}
        templated = len(set(folders.values())) > 1
        for layer, folder in folders.items():
            key = f"saes.{name}.path" + (f" (layer {layer})" if templated else "")
            if (key, folder) not in out:
                out.append((key, folder))
    for name, spec in config["behaviour"].items():
        if "path" in spec:
            out.append((f"behaviour.{name}.path", spec["path"]))
    return out


def check_paths(config: dict[str, Any], directory: str | Path) -> None:
    """Every path of :func:`local_paths` exists, relative ones under ``directory``.

    Run at start-up (the Snakefile, with snakemake's working directory; ``python -m
    saeprobe.config``, with ``--directory``): a missing dataset or SAE file would otherwise only
    be noticed when its job is planned, and Snakemake keeps existing tables whose producer cannot
    be built ("Nothing to be done") — reporting the previous run's tables as current.

    Raises:
        ConfigError: one line per missing path, naming the key and the path (and, for a relative
            path, the directory it was resolved against).
    """
    base = Path(directory).resolve()
    problems = []
    for key, path in local_paths(config):
        if (base / path).exists():  # an absolute path ignores base
            continue
        where = "" if Path(path).is_absolute() else (
            f" (relative paths are resolved against {base}, the directory snakemake runs in; --directory changes it)")
        problems.append(f"'{key}': {path} does not exist{where}")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def main(argv: list[str] | None = None) -> int:
    """``python -m saeprobe.config [--directory DIR] FILE...``: check config files as a run would,
    without running.

    Prints one line per file: ``ok`` with its counts, or the error (YAML errors with file, line
    and column; schema and consistency errors with the key; a local path that does not exist,
    relative paths resolved against ``--directory``, default the current directory — where
    ``snakemake`` without ``--directory`` would read them). Returns 0 when every file is ok,
    1 otherwise, 2 for a usage error.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m saeprobe.config",
                                     description="Check saeprobe config files as a run would, without running.")
    parser.add_argument("configs", nargs="+", metavar="CONFIG.yaml")
    parser.add_argument("--directory", "-d", default=".",
                        help="the directory snakemake will run in (its --directory): relative paths in the config "
                             "are resolved against it (default: the current directory)")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not Path(args.directory).is_dir():
        print(f"--directory {args.directory}: not a directory")
        return 2
    status = 0
    for path in args.configs:
        try:
            loaded = load_yaml(path)
        except ConfigError as exc:
            print(exc)
            status = 1
            continue
        try:
            config = validate(loaded, directory=args.directory)
        except ConfigError as exc:
            print(f"config file {path}: {exc}")
            status = 1
            continue
        from saeprobe.grid import probe_cells

        print(f"config file {path}: ok ({len(config['datasets'])} datasets, {len(config['models'])} models, "
              f"{len(config['saes'])} SAEs, {len(probe_cells(config))} probes)")
    return status


if __name__ == "__main__":
    sys.exit(main())
