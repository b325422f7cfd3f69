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
        return "; ".join(f"unknown key '{prefix}{k}'{hint}" for k in unknown)
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
    _check_consistency(config)
    return config


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
    return list(config["saes"][sae].get("train", {}).get("datasets") or config["datasets"])


@dataclass(frozen=True)
class ProbeCell:
    """One cell of the experiment grid: a probe on one pooled feature set."""

    model: str
    dataset: str
    source: str  # SAE name, or "hidden"
    layer: int
    pooling: str
    binarize: str

    @property
    def path(self) -> str:
        return (
            f"results/probes/{self.model}/{self.dataset}/{self.source}/"
            f"layer_{self.layer}/{self.pooling}__{self.binarize}.json"
        )


def probe_cells(config: dict[str, Any]) -> list[ProbeCell]:
    """Every probe of the run: SAE sources × poolings × binarizations, plus hidden states."""
    feats = config["features"]
    cells = []
    for dataset in config["datasets"]:
        for sae in config["saes"]:
            model = config["saes"][sae]["model"]
            for layer in sae_layers(config, sae):
                for pooling in feats["poolings"]:
                    for thr in feats["binarize"]:
                        cells.append(ProbeCell(model, dataset, sae, layer, pooling, binarize_name(thr)))
        if feats["hidden_states"]:
            for model, mspec in config["models"].items():
                for layer in mspec["layers"]:
                    for pooling in feats["hidden_poolings"]:
                        cells.append(ProbeCell(model, dataset, HIDDEN, layer, pooling, "raw"))
    return cells


def probe_targets(config: dict[str, Any]) -> list[str]:
    """Paths of every probe result JSON, TF-IDF baselines included."""
    paths = [c.path for c in probe_cells(config)]
    if config["tfidf"]["enabled"]:
        paths += [f"results/probes/tfidf/{d}.json" for d in config["datasets"]]
    return paths
