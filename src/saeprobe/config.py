"""Configuration: validation against the JSON Schema, defaults, and the experiment grid.

The schema lives in ``workflow/schemas/config.schema.yaml``. :func:`validate` fills in its
defaults and turns schema violations into one :class:`~saeprobe.errors.ConfigError` whose
message names every offending key, e.g. ``unknown key 'probe.cv_fold'`` or
``'models.minilm.layers': 'two' is not of type 'array'``.

The grid helpers (:func:`probe_targets` and friends) enumerate the files a run must produce;
the Snakefile asks for exactly those.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from saeprobe.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

HIDDEN = "hidden"  # feature source name of the hidden-state baseline


def load_schema(path: str | Path | None = None) -> dict[str, Any]:
    return yaml.safe_load(Path(path or SCHEMA_PATH).read_text())


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
    _add_behaviour_datasets(config, schema)
    _check_consistency(config)
    return config


def _add_behaviour_datasets(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Register each ``behaviour`` entry as a dataset of the same name (idempotent).

    Its file, ``results/behaviour/<name>.parquet``, is written by the ``score_behaviour`` stage
    (text = the prompt, label = correct/incorrect); it is split 80/20 stratified like any
    dataset without a split column.
    """
    for name, spec in config.get("behaviour", {}).items():
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
    return f"results/behaviour/{name}.parquet"


def model_kind(config: dict[str, Any], model: str) -> str:
    """``text`` or ``vision`` (a vision-language model)."""
    return config["models"][model].get("kind", "text")


def dataset_kind(config: dict[str, Any], dataset: str) -> str:
    """``text`` or ``image``."""
    return config["datasets"][dataset].get("kind", "text")


def dataset_models(config: dict[str, Any], dataset: str) -> list[str]:
    """Models whose features are computed on ``dataset``: its ``models`` list, else every model of its kind."""
    spec = config["datasets"][dataset]
    if spec.get("models"):
        return list(spec["models"])
    want = "vision" if dataset_kind(config, dataset) == "image" else "text"
    return [m for m in config["models"] if model_kind(config, m) == want]


def datasets_of_kind(config: dict[str, Any], kind: str) -> list[str]:
    return [d for d in config["datasets"] if dataset_kind(config, d) == kind]


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
        for ds in sae.get("train", {}).get("datasets", []):
            if ds not in config["datasets"]:
                problems.append(f"'saes.{name}.train.datasets': unknown dataset '{ds}'")
    for name, spec in config["datasets"].items():
        kind = spec.get("kind", "text")
        if "sklearn" in spec and kind != "image":
            problems.append(f"'datasets.{name}.sklearn': scikit-learn sets are images; set kind: image")
        for key in ("max_rows", "prompt"):
            if key in spec and kind != "image":
                problems.append(f"'datasets.{name}.{key}': only for image datasets (kind: image)")
        for model in spec.get("models", []):
            if model not in models:
                problems.append(f"'datasets.{name}.models': unknown model '{model}' (models: {', '.join(models)})")
            elif (models[model].get("kind", "text") == "vision") != (kind == "image"):
                problems.append(f"'datasets.{name}.models': model '{model}' is a {models[model].get('kind', 'text')} "
                                f"model but the dataset's kind is {kind}")
    for name, spec in config.get("behaviour", {}).items():
        if spec["model"] not in models:
            problems.append(f"'behaviour.{name}.model': unknown model '{spec['model']}' (models: {', '.join(models)})")
        elif models[spec["model"]].get("kind", "text") != "text":
            problems.append(f"'behaviour.{name}.model': '{spec['model']}' is not a text model")
    for stage in ("transfer", "sweep"):
        for ds in config.get(stage, {}).get("datasets", []):
            if ds not in config["datasets"]:
                problems.append(f"'{stage}.datasets': unknown dataset '{ds}' (datasets: {', '.join(config['datasets'])})")
            elif stage == "transfer" and not config["datasets"][ds].get("lang_column"):
                problems.append(f"'transfer.datasets': dataset '{ds}' has no lang_column, so it has no languages "
                                "to transfer between")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


# --------------------------------------------------------------------------- the grid


def binarize_name(threshold: float | None) -> str:
    """File-name token for a binarization threshold: ``raw`` or ``gt<t>`` (e.g. ``gt1``)."""
    return "raw" if threshold is None else f"gt{float(threshold):g}"


def parse_binarize(name: str) -> float | None:
    """Inverse of :func:`binarize_name`."""
    if name == "raw":
        return None
    if not name.startswith("gt"):
        raise ValueError(f"binarization must be 'raw' or 'gt<threshold>', got {name!r}")
    return float(name[2:])


def sae_layers(config: dict[str, Any], sae: str) -> list[int]:
    spec = config["saes"][sae]
    return list(spec.get("layers") or config["models"][spec["model"]]["layers"])


def sae_train_datasets(config: dict[str, Any], sae: str) -> list[str]:
    """Datasets whose train split trains ``sae``: ``train.datasets``, else every dataset its model processes."""
    chosen = config["saes"][sae].get("train", {}).get("datasets")
    if chosen:
        return list(chosen)
    model = config["saes"][sae]["model"]
    return [d for d in config["datasets"] if model in dataset_models(config, d)]


@dataclass(frozen=True)
class ProbeCell:
    """One cell of the experiment grid: a probe on one pooled feature set."""

    model: str
    dataset: str
    source: str  # SAE name, or "hidden"
    layer: int
    pooling: str
    binarize: str

    def path_in(self, stage: str, ext: str) -> str:
        """``results/<stage>/<model>/<dataset>/<source>/layer_<L>/<pooling>__<binarize>.<ext>``."""
        return (
            f"results/{stage}/{self.model}/{self.dataset}/{self.source}/"
            f"layer_{self.layer}/{self.pooling}__{self.binarize}.{ext}"
        )

    @property
    def path(self) -> str:
        return self.path_in("probes", "json")


def feature_cells(config: dict[str, Any], dataset: str, poolings: list[str], thresholds: list[float | None],
                  hidden_poolings: list[str]) -> list[ProbeCell]:
    """SAE sources × layers × poolings × thresholds, then hidden states × hidden poolings, on one dataset."""
    models = dataset_models(config, dataset)
    cells = []
    for sae, spec in config["saes"].items():
        if spec["model"] not in models:
            continue
        for layer in sae_layers(config, sae):
            for pooling in poolings:
                for thr in thresholds:
                    cells.append(ProbeCell(spec["model"], dataset, sae, layer, pooling, binarize_name(thr)))
    for model in models:
        for layer in config["models"][model]["layers"]:
            for pooling in hidden_poolings:
                cells.append(ProbeCell(model, dataset, HIDDEN, layer, pooling, "raw"))
    return cells


def grid_datasets(config: dict[str, Any]) -> list[str]:
    return [d for d, spec in config["datasets"].items() if spec.get("grid", True)]


def probe_cells(config: dict[str, Any]) -> list[ProbeCell]:
    """Every probe of the grid: SAE sources × poolings × binarizations, plus hidden states."""
    feats = config["features"]
    cells = []
    for d in grid_datasets(config):
        spec = config["datasets"][d]
        hidden = spec.get("hidden_poolings", feats["hidden_poolings"]) if feats["hidden_states"] else []
        cells += feature_cells(config, d, spec.get("poolings", feats["poolings"]), spec.get("binarize", feats["binarize"]),
                               hidden)
    return cells


def tfidf_datasets(config: dict[str, Any]) -> list[str]:
    if not config["tfidf"]["enabled"]:
        return []
    return [d for d in grid_datasets(config) if dataset_kind(config, d) == "text"]


def probe_targets(config: dict[str, Any]) -> list[str]:
    """Paths of every probe result JSON, TF-IDF baselines included."""
    return [c.path for c in probe_cells(config)] + [f"results/probes/tfidf/{d}.json" for d in tfidf_datasets(config)]


def transfer_cells(config: dict[str, Any]) -> list[ProbeCell]:
    """One transfer matrix per (model, dataset, source, layer, pooling, binarization)."""
    spec = config["transfer"]
    return [c for d in spec["datasets"]
            for c in feature_cells(config, d, spec["poolings"], spec["binarize"], spec["hidden_poolings"])]


def transfer_targets(config: dict[str, Any]) -> list[str]:
    return [c.path_in("transfer", "parquet") for c in transfer_cells(config)]


def sweep_cells(config: dict[str, Any]) -> list[ProbeCell]:
    spec = config["sweep"]
    return [c for d in spec["datasets"]
            for c in feature_cells(config, d, spec["poolings"], spec["binarize"], spec["hidden_poolings"])]


def sweep_targets(config: dict[str, Any]) -> list[str]:
    """Data-size curves per feature cell, plus TF-IDF per text dataset when ``sweep.tfidf``."""
    spec = config["sweep"]
    paths = [c.path_in("sweeps", "parquet") for c in sweep_cells(config)]
    if spec["tfidf"]:
        paths += [f"results/sweeps/tfidf/{d}.parquet" for d in spec["datasets"] if dataset_kind(config, d) == "text"]
    return paths
