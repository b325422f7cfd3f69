"""The results layout: every path under ``results/``, written once.

The rules use these patterns as their ``output:`` (and their consumers as ``input:``), Python
code formats them with :func:`path`; nothing else types a path under ``results/``
(``tests/test_layout.py`` checks that the rules' outputs are exactly these patterns and that no
rule or module spells one out by hand).

Patterns are Snakemake wildcard patterns (``{model}``, ``{dataset}``, ...). The unit of the
probe stages is one feature store: a (model, dataset, feature source, layer); its stages write
one folder per unit holding one file per cell (pooling, binarization), see :func:`cell_file`.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

RESULTS = "results"

# One feature store (model, dataset, feature source = an SAE name or "hidden", layer).
UNIT = "{model}/{dataset}/{source}/layer_{layer}"

# --- inputs prepared by the workflow
DATA = "results/data/{dataset}.parquet"  # prepared dataset: doc_id, text/image, label, split (docs/DESIGN.md §4)
SPLITS = "results/data/{dataset}.splits.parquet"  # doc_id + one re-drawn split column per probe.split_seeds entry
BEHAVIOUR = "results/behaviour/{name}.parquet"  # a behaviour entry scored by its model (a dataset)
MODEL = "results/models/{model}"  # Hugging Face folder of a model the workflow builds (BUILT_MODELS)
TOKENS = "results/tokens/{model}/{dataset}.parquet"

# Model sources whose Hugging Face folder the workflow builds at MODEL, and the rule that builds it:
# a random initialisation, or a GGUF file (or package) converted to safetensors (saeprobe.gguf).
BUILT_MODELS = {"random": "init_random_model", "gguf": "convert_gguf", "gguf_package": "convert_gguf"}

# --- activations and SAEs
ACTIVATIONS = "results/activations/{model}/{dataset}.zarr"  # residual stream, all extracted layers
SAE = "results/saes/{sae}/layer_{layer}"  # an SAE trained by the workflow (SAELens folder)
CODES = "results/features/{model}/{dataset}/{sae}/layer_{layer}.zarr"  # sparse SAE codes
SAE_QUALITY = "results/sae_quality/{sae}/layer_{layer}.json"  # held-out L0, EV, dead/dense, spliced loss

# --- per-unit folders: one file per cell inside (cell_file)
POOLED = f"results/pooled/{UNIT}"  # {pooling}.npz
PROBES = f"results/probes/{UNIT}"  # {pooling}__{binarize}.json + .coef.npz
TRANSFER = f"results/transfer/{UNIT}"  # {pooling}__{binarize}.parquet
SWEEP = f"results/sweeps/{UNIT}"  # {pooling}__{binarize}.parquet
KSPARSE = f"results/ksparse/{UNIT}"  # {pooling}__{binarize}.{ranking}.json + .{ranking}.predictions.npz
BASELINES = f"results/baselines/{UNIT}"  # {pooling}__{binarize}.{method}.json + .{method}.predictions.npz

# --- baselines without a feature store
TFIDF = "results/probes/tfidf/{dataset}.json"
TFIDF_PREDICTIONS = "results/probes/tfidf/{dataset}.predictions.npz"
SWEEP_TFIDF = "results/sweeps/tfidf/{dataset}.parquet"

# --- what a run hands back
TABLE = "results/tables/{name}.{ext}"
TABLE_FORMATS = ("parquet", "csv", "md")
TOP_FEATURES = "results/tables/top_features.{ext}"
FIGURE = "results/figures/{name}.{ext}"
FIGURE_FORMATS = ("png", "svg")
REPORT_PAGE = "results/report/{name}.html"
REPORT = "results/report.html"

# --- bookkeeping of every job
LOG = "results/logs/{rule}/{job}.log"
BENCHMARK = "results/benchmarks/{rule}/{job}.tsv"
BENCHMARKS = "results/benchmarks"


def path(pattern: str, **values: Any) -> str:
    """``pattern`` with its wildcards filled in, e.g. ``path(CODES, model="m", dataset="d", sae="s", layer=3)``.

    Raises:
        KeyError: a wildcard of ``pattern`` has no value.
    """
    return pattern.format(**values)


def built_model(name: str, spec: dict[str, Any]) -> str | None:
    """:data:`MODEL` of ``models.<name>`` when the workflow builds its folder (a source key of
    :data:`BUILT_MODELS` in ``spec``), else None (a ``path``, ``package`` or ``hub`` source)."""
    return path(MODEL, model=name) if any(k in spec for k in BUILT_MODELS) else None


def cell_file(folder: str, pooling: str, binarize: str | None = None, ext: str = "npz") -> str:
    """The file of one cell inside a unit folder: ``<folder>/<pooling>[__<binarize>].<ext>``.

    ``ext`` may name a probe of the cell too, e.g. ``predictions.npz`` or ``knn.json``.
    """
    stem = pooling if binarize is None else f"{pooling}__{binarize}"
    return f"{folder}/{stem}.{ext}"


def predictions_of(result: str | PurePath) -> str:
    """The per-document predictions file stored beside a probe result JSON (``X.json`` -> ``X.predictions.npz``).

    Raises:
        ValueError: ``result`` is not a ``.json`` path.
    """
    result = str(result)
    if not result.endswith(".json"):
        raise ValueError(f"not a probe result file (.json): {result}")
    return result.removesuffix(".json") + ".predictions.npz"


def unit_path(pattern: str, cell: Any) -> str:
    """A unit folder (:data:`POOLED`, :data:`PROBES`, ...) of a cell with model/dataset/source/layer fields."""
    return path(pattern, model=cell.model, dataset=cell.dataset, source=cell.source, layer=cell.layer)


def tables(name: str) -> list[str]:
    """``results/tables/<name>.parquet``, ``.csv``, ``.md``."""
    return [path(TABLE, name=name, ext=ext) for ext in TABLE_FORMATS]


def log(rule: str, job: str = "") -> str:
    """Log file of one job of ``rule``; ``job`` is a wildcard pattern (e.g. :data:`UNIT`), empty for one-job rules."""
    return path(LOG, rule=rule, job=job or rule)


def benchmark(rule: str, job: str = "") -> str:
    """Snakemake ``benchmark:`` file of one job of ``rule`` (see :func:`log`)."""
    return path(BENCHMARK, rule=rule, job=job or rule)


# Outputs that are folders (Snakemake directory()): a damaged file inside one is rebuilt by rerunning the folder.
FOLDER_OUTPUTS = (MODEL, ACTIVATIONS, SAE, CODES, POOLED, PROBES, TRANSFER, SWEEP, KSPARSE, BASELINES)


def _regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[a-z_]+\})", pattern)
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(rf"(?:^|/){body}$")


_FOLDER_REGEXES = [_regex(p) for p in FOLDER_OUTPUTS]


def output_of(path: str | PurePath) -> str:
    """The workflow output to rerun for ``path``: the folder output holding it, else ``path`` itself.

    E.g. ``results/pooled/m/d/s/layer_1/mean.npz`` -> ``results/pooled/m/d/s/layer_1`` (the pool
    job's output, what ``snakemake --forcerun`` needs).
    """
    p = PurePath(path)
    for candidate in (p, *p.parents):
        if any(r.search(candidate.as_posix()) for r in _FOLDER_REGEXES):
            return str(candidate)
    return str(path)
