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
                generated = f"{name}_w{width}_{SPARSITY_TAG[sparsity]}{_tag(value)}"
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


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        prefix = f"{where}." if error.absolute_path else ""
        hint = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""

        def guess(key: str) -> str:
            close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
            return f" — did you mean '{close[0]}'?" if close else ""

        return "; ".join(f"unknown key '{prefix}{k}'{guess(k)}{hint}" for k in unknown)
    if error.validator == "oneOf":
        options = [" + ".join(s.get("required", [])) for s in error.validator_value]
        return f"'{where}' needs exactly one of: {' | '.join(options)}"
    if error.validator == "required":
        return f"'{where}' is missing the required key: {error.message.split(' is a')[0]}"
    return f"'{where}': {error.message}"


def validate(config: dict[str, Any], schema_path: str | Path | None = None) -> dict[str, Any]:
    """Validate ``config`` in place against the schema, fill defaults, check consistency.

    Returns:
        The same dict, with defaults filled in.
    Raises:
        ConfigError: listing every invalid key with what was expected.
    """
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [_describe(e) for e in errors]
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(lines))
    _fill_defaults(config, schema, schema)
    expand_sae_sweeps(config)
    _normalise_layers(config)
    _add_behaviour_datasets(config, schema)
    _check_consistency(config)
    _check_file_names(config)
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


def main(argv: list[str] | None = None) -> int:
    """``python -m saeprobe.config FILE...``: check config files as a run would, without running.

    Prints one line per file: ``ok`` with its counts, or the error (YAML errors with file, line
    and column; schema and consistency errors with the key).
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m saeprobe.config CONFIG.yaml [...]", file=sys.stderr)
        return 2
    status = 0
    for path in argv:
        try:
            loaded = load_yaml(path)
        except ConfigError as exc:
            print(exc)
            status = 1
            continue
        try:
            config = validate(loaded)
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
