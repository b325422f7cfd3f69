"""The experiment grid and the run's targets, decided from a validated config alone.

A *cell* is one probe: (model, dataset, feature source, layer, pooling, binarization); a *unit*
is the feature store the cells of one (model, dataset, source, layer) share, and the job unit of
the pool, fit_probe, transfer and sweep stages (each reads its store or pooled file once and
writes one folder of cell files, see :mod:`saeprobe.layout`). :func:`final_output` lists every
file ``rule all`` builds; :class:`Plan` indexes the cells by unit for the rules.

Imported by the Snakefile: nothing heavy at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from saeprobe import layout

HIDDEN = "hidden"  # feature source name of the hidden-state baseline


def model_kind(config: dict[str, Any], model: str) -> str:
    """``text`` or ``vision`` (a vision-language model)."""
    return config["models"][model]["kind"]


def dataset_kind(config: dict[str, Any], dataset: str) -> str:
    """``text`` or ``image``."""
    return config["datasets"][dataset]["kind"]


def dataset_models(config: dict[str, Any], dataset: str) -> list[str]:
    """Models whose features are computed on ``dataset``: its ``models`` list, else every model of its kind."""
    spec = config["datasets"][dataset]
    if spec.get("models"):
        return list(spec["models"])
    want = "vision" if dataset_kind(config, dataset) == "image" else "text"
    return [m for m in config["models"] if model_kind(config, m) == want]


def datasets_of_kind(config: dict[str, Any], kind: str) -> list[str]:
    return [d for d in config["datasets"] if dataset_kind(config, d) == kind]




def binarize_name(threshold: float | None) -> str:
    """File-name token for a binarization threshold: ``raw`` or ``gt<t>`` (e.g. ``gt1``, ``gt0.00001``).

    Positional notation with the shortest digits that round-trip (never an exponent, which the
    ``binarize`` wildcard does not match), so two different thresholds never share a name.
    """
    if threshold is None:
        return "raw"
    return "gt" + np.format_float_positional(float(threshold), trim="-")


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


def sae_datasets(config: dict[str, Any], sae: str) -> list[str]:
    """Datasets ``sae``'s features are computed and probed on: its ``datasets``, else every dataset its model processes."""
    spec = config["saes"][sae]
    if spec.get("datasets"):
        return list(spec["datasets"])
    return [d for d in config["datasets"] if spec["model"] in dataset_models(config, d)]


def sae_train_datasets(config: dict[str, Any], sae: str) -> list[str]:
    """Datasets whose train split trains ``sae``: ``train.datasets``, else :func:`sae_datasets`."""
    chosen = config["saes"][sae].get("train", {}).get("datasets")
    return list(chosen) if chosen else sae_datasets(config, sae)


def encode_settings(config: dict[str, Any], sae: str) -> dict[str, Any]:
    """Settings of ``sae`` that change its codes (the encode rule's param): its source keys and, for a
    trained SAE, the train keys its architecture reads, and ``encode_dtype`` (bfloat16 codes differ
    from float32 ones) — not the encoding batch size, nor which
    datasets, stages, poolings or thresholds probe it."""
    spec = config["saes"][sae]
    out = {k: spec[k] for k in ("model", "layers", "release", "sae_id", "path", "encode_dtype") if k in spec}
    if "train" in spec:
        out["train"] = train_settings(config, sae)
    return out


def sae_quality_datasets(config: dict[str, Any], sae: str) -> list[str]:
    """Datasets whose held-out (non-train) documents measure ``sae``'s quality: the ones it was
    trained on (a workflow-trained SAE), else the ones it is probed on."""
    return sae_train_datasets(config, sae) if "train" in config["saes"][sae] else sae_datasets(config, sae)


def sae_loss_datasets(config: dict[str, Any], sae: str) -> list[str]:
    """Text datasets whose held-out documents measure ``sae``'s spliced cross-entropy:
    ``sae_quality.loss_datasets`` that the SAE's model processes, or (null) its quality datasets."""
    chosen = config["sae_quality"]["loss_datasets"]
    model = config["saes"][sae]["model"]
    candidates = sae_quality_datasets(config, sae) if chosen is None else [
        d for d in chosen if model in dataset_models(config, d)]
    return [d for d in candidates if dataset_kind(config, d) == "text"]


def sae_probed(config: dict[str, Any], sae: str, dataset: str, stage: str) -> bool:
    """Whether ``stage`` (``grid``, ``transfer``, ...) probes ``sae``'s features on ``dataset``
    (the SAE's ``datasets`` and ``stages`` keys)."""
    spec = config["saes"][sae]
    return stage in spec["stages"] and dataset in sae_datasets(config, sae)


def train_settings(config: dict[str, Any], sae: str) -> dict[str, Any]:
    """The train keys of ``sae`` its architecture reads (:func:`saeprobe.config.train_settings`)."""
    from saeprobe.config import train_settings as settings

    return settings(config["saes"][sae]["train"])


SAE_ATTRIBUTES = ("sae_architecture", "sae_width", "sae_k", "sae_sparsity")


def sae_attributes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per ``saes.<name>`` (sweeps already expanded), the attributes every table carries as columns
    (:func:`saeprobe.tables.with_sae_attributes`; a rule param, read from the config alone, no weights):

    - ``sae_architecture``: ``train.architecture``; None for a ``release``/``path`` SAE (not known
      without loading it);
    - ``sae_width``: ``train.width``; for a release or path, the Gemma Scope-style ``width_<N>k`` of
      its ``sae_id``/``path`` (:func:`saeprobe.sizing.sae_width`), else None;
    - ``sae_k``: ``train.k`` of a k architecture (TopK, BatchTopK, Matryoshka), else None;
    - ``sae_sparsity``: the value of the architecture's sparsity key (k, ``l0_coefficient`` or
      ``l1_coefficient``); None for a release or path.
    """
    import re

    from saeprobe.config import ARCHITECTURE_KEYS, with_defaults
    from saeprobe.sizing import sae_width

    out = {}
    for name, spec in config["saes"].items():
        attrs: dict[str, Any] = dict.fromkeys(SAE_ATTRIBUTES)
        if "train" in spec:
            train = with_defaults("saes", spec)["train"]
            arch = train["architecture"]
            key = ARCHITECTURE_KEYS[arch][0]
            attrs.update(sae_architecture=arch, sae_width=int(train["width"]),
                         sae_k=float(train["k"]) if key == "k" else None,
                         sae_sparsity=None if train.get(key) is None else float(train[key]))
        elif re.search(r"width_\d+[km]?", str(spec.get("sae_id", spec.get("path", "")))):
            attrs["sae_width"] = sae_width(spec)
        out[name] = attrs
    return out


@dataclass(frozen=True)
class Unit:
    """One feature store: the job unit of pool, fit_probe, transfer and sweep."""

    model: str
    dataset: str
    source: str  # SAE name, or "hidden"
    layer: int

    def folder(self, pattern: str) -> str:
        """This unit's folder of ``pattern`` (:data:`saeprobe.layout.POOLED`, ``PROBES``, ...)."""
        return layout.unit_path(pattern, self)


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
    def unit(self) -> Unit:
        return Unit(self.model, self.dataset, self.source, self.layer)

    def file_in(self, folder_pattern: str, ext: str) -> str:
        """This cell's file in its unit folder of ``folder_pattern`` (e.g. :data:`saeprobe.layout.PROBES`)."""
        return layout.cell_file(layout.unit_path(folder_pattern, self), self.pooling, self.binarize, ext)

    @property
    def path(self) -> str:
        """The probe result JSON."""
        return self.file_in(layout.PROBES, "json")


def feature_cells(config: dict[str, Any], dataset: str, poolings: list[str], thresholds: list[float | None],
                  hidden_poolings: list[str], stage: str = "grid") -> list[ProbeCell]:
    """SAE sources × layers × poolings × thresholds, then hidden states × hidden poolings, on one dataset.

    Only SAEs that ``stage`` probes on ``dataset`` (:func:`sae_probed`); in the grid an SAE's own
    ``poolings`` / ``binarize`` replace the dataset's.
    """
    models = dataset_models(config, dataset)
    cells = []
    for sae, spec in config["saes"].items():
        if spec["model"] not in models or not sae_probed(config, sae, dataset, stage):
            continue
        own_poolings = spec.get("poolings") if stage == "grid" and spec.get("poolings") else poolings
        own_thresholds = spec.get("binarize") if stage == "grid" and spec.get("binarize") else thresholds
        for layer in sae_layers(config, sae):
            for pooling in own_poolings:
                for thr in own_thresholds:
                    cells.append(ProbeCell(spec["model"], dataset, sae, layer, pooling, binarize_name(thr)))
    for model in models:
        for layer in config["models"][model]["layers"]:
            for pooling in hidden_poolings:
                cells.append(ProbeCell(model, dataset, HIDDEN, layer, pooling, "raw"))
    return cells


def grid_datasets(config: dict[str, Any]) -> list[str]:
    return [d for d, spec in config["datasets"].items() if spec["grid"]]


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


def stage_cells(config: dict[str, Any], section: str) -> list[ProbeCell]:
    """The feature cells of a stage configured like ``transfer``/``sweep``/``ksparse``/``baselines``: its
    ``datasets`` × every SAE of their models × ``poolings`` × ``binarize``, and hidden states × ``hidden_poolings``."""
    spec = config[section]
    return [c for d in spec["datasets"]
            for c in feature_cells(config, d, spec["poolings"], spec["binarize"], spec["hidden_poolings"], section)]


def transfer_cells(config: dict[str, Any]) -> list[ProbeCell]:
    """One transfer matrix per (model, dataset, source, layer, pooling, binarization)."""
    return stage_cells(config, "transfer")


def sweep_cells(config: dict[str, Any]) -> list[ProbeCell]:
    return stage_cells(config, "sweep")


def ksparse_cells(config: dict[str, Any]) -> list[ProbeCell]:
    """The cells whose features the k-sparse stage ranks (one ranking and every k per cell)."""
    return stage_cells(config, "ksparse")


def baseline_cells(config: dict[str, Any]) -> list[ProbeCell]:
    """The cells the strong baselines are fitted on: hidden states if ``methods``, SAE features if ``sae_methods``."""
    return [c for c in stage_cells(config, "baselines") if baseline_methods(config, c.source)]


def baseline_methods(config: dict[str, Any], source: str) -> list[str]:
    """The baselines fitted on features of ``source`` (``hidden`` or an SAE name)."""
    spec = config["baselines"]
    return list(spec["methods"] if source == HIDDEN else spec["sae_methods"])


def sweep_tfidf_datasets(config: dict[str, Any]) -> list[str]:
    """Text datasets of the sweep that also get a TF-IDF data-size curve (``sweep.tfidf``)."""
    spec = config["sweep"]
    return [d for d in spec["datasets"] if dataset_kind(config, d) == "text"] if spec["tfidf"] else []


def by_unit(cells: list[ProbeCell]) -> dict[Unit, list[ProbeCell]]:
    """Cells grouped by their feature store, in first-seen order."""
    out: dict[Unit, list[ProbeCell]] = {}
    for cell in cells:
        out.setdefault(cell.unit, []).append(cell)
    return out


def unit_of(wildcards: Any) -> Unit:
    """The unit named by a job's wildcards (model, dataset, source, layer)."""
    return Unit(wildcards.model, wildcards.dataset, wildcards.source, int(wildcards.layer))


# Stages whose jobs are one unit each, and the cells each fits.
STAGES = ("grid", "transfer", "sweep", "ksparse", "baselines")


class Plan:
    """Every cell of a validated config, indexed by stage and unit; built once per Snakemake parse.

    ``Plan(config).cells("grid", unit)`` is what one ``fit_probe`` job fits, ``poolings(unit)``
    what one ``pool`` job writes (every pooling a stage needs from that store).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.stage_cells = {"grid": probe_cells(config), "transfer": transfer_cells(config), "sweep": sweep_cells(config),
                            "ksparse": ksparse_cells(config), "baselines": baseline_cells(config)}
        self.units = {stage: by_unit(cells) for stage, cells in self.stage_cells.items()}

    def cells(self, stage: str, unit: Unit) -> list[ProbeCell]:
        """The cells of ``stage`` on ``unit`` (empty when the stage does not use it)."""
        return self.units[stage].get(unit, [])

    def cell_names(self, stage: str, unit: Unit) -> list[list[str]]:
        """``[[pooling, binarize], ...]`` of :meth:`cells` (a rule param: changing the list reruns the job)."""
        return [[c.pooling, c.binarize] for c in self.cells(stage, unit)]

    @cached_property
    def pooled_units(self) -> dict[Unit, list[str]]:
        """Every unit any stage reads, with the poolings it needs (first-seen order)."""
        out: dict[Unit, list[str]] = {}
        for stage in STAGES:
            for unit, cells in self.units[stage].items():
                out[unit] = list(dict.fromkeys([*out.get(unit, []), *(c.pooling for c in cells)]))
        return out

    def poolings(self, unit: Unit) -> list[str]:
        return self.pooled_units.get(unit, [])

    def folders(self, stage: str, pattern: str, datasets: list[str] | None = None) -> list[str]:
        """The unit folders (of ``pattern``) of ``stage``, optionally only on ``datasets``."""
        return [u.folder(pattern) for u in self.units[stage] if datasets is None or u.dataset in datasets]

    # --- what the gathering rules read
    def probe_inputs(self, datasets: list[str] | None = None) -> list[str]:
        """Probe unit folders and TF-IDF result files of the grid (optionally only on ``datasets``)."""
        tfidf = [d for d in tfidf_datasets(self.config) if datasets is None or d in datasets]
        return self.folders("grid", layout.PROBES, datasets) + [layout.path(layout.TFIDF, dataset=d) for d in tfidf]

    @cached_property
    def tfidf_predictions(self) -> list[str]:
        """The per-document predictions files of the grid's TF-IDF baselines."""
        return [layout.path(layout.TFIDF_PREDICTIONS, dataset=d) for d in tfidf_datasets(self.config)]

    @cached_property
    def ksparse_inputs(self) -> list[str]:
        return self.folders("ksparse", layout.KSPARSE)

    @cached_property
    def baseline_inputs(self) -> list[str]:
        return self.folders("baselines", layout.BASELINES)

    @cached_property
    def transfer_inputs(self) -> list[str]:
        return self.folders("transfer", layout.TRANSFER)

    @cached_property
    def sweep_inputs(self) -> list[str]:
        return self.folders("sweep", layout.SWEEP) + [
            layout.path(layout.SWEEP_TFIDF, dataset=d) for d in sweep_tfidf_datasets(self.config)]

    @cached_property
    def sae_quality_inputs(self) -> list[str]:
        """One quality file per (SAE, layer), when ``sae_quality.enabled``."""
        if not self.config["sae_quality"]["enabled"]:
            return []
        return [layout.path(layout.SAE_QUALITY, sae=s, layer=layer) for s in self.config["saes"]
                for layer in sae_layers(self.config, s)]

    def sae_table_inputs(self, wildcards: Any = None) -> dict[str, Any]:
        """What ``tables/saes`` reads: the quality files, the grid table and (with a k-sparse stage) its table."""
        out: dict[str, Any] = {"quality": self.sae_quality_inputs,
                               "grid": layout.path(layout.TABLE, name="grid", ext="parquet")}
        if self.ksparse_inputs:
            out["ksparse"] = layout.path(layout.TABLE, name="ksparse", ext="parquet")
        return out

    def summary_inputs(self, wildcards: Any = None) -> dict[str, str]:
        """The tables the summary reads (k-sparse ones only when the run has a k-sparse stage)."""
        names = ["grid", "comparisons"] + (["ksparse", "ksparse_comparisons"] if self.ksparse_inputs else [])
        return {name: layout.path(layout.TABLE, name=name, ext="parquet") for name in names}

    @cached_property
    def figures(self) -> dict[str, str]:
        return figure_plan(self.config, self)

    @cached_property
    def top_feature_cells(self) -> list[ProbeCell]:
        """The SAE probe cells whose best one per (dataset, source) the top-features table opens."""
        return [c for c in self.stage_cells["grid"] if c.source != HIDDEN]

    def top_feature_inputs(self) -> dict[str, Any]:
        """Every file the ``top_features`` stage may open, by kind.

        Which SAE probe is best per (dataset, source) is known only once ``grid.parquet`` exists,
        so the probe folders and code stores of every SAE unit are inputs; tokens only for text
        datasets; the model folder for workflow-built models (random, GGUF), whose tokenizer lives there.
        """
        units = list(dict.fromkeys(c.unit for c in self.top_feature_cells))
        text = [u for u in units if dataset_kind(self.config, u.dataset) == "text"]
        models = sorted({u.model for u in text})
        return {
            "grid": layout.path(layout.TABLE, name="grid", ext="parquet"),
            "probes": [u.folder(layout.PROBES) for u in units],
            "codes": sorted({layout.path(layout.CODES, model=u.model, dataset=u.dataset, sae=u.source, layer=u.layer)
                             for u in units}),
            "data": sorted({layout.path(layout.DATA, dataset=u.dataset) for u in units}),
            "tokens": sorted({layout.path(layout.TOKENS, model=u.model, dataset=u.dataset) for u in text}),
            "models": [f for m in models if (f := layout.built_model(m, self.config["models"][m]))],
        }

    @cached_property
    def report_pages(self) -> dict[str, str]:
        """Result tables shown as HTML pages in the Snakemake report: page name -> its parquet table."""
        names = ["summary", "best"] + (["behaviour"] if self.config["behaviour"] else []) + (
            ["transfer"] if self.stage_cells["transfer"] else []) + (["saes"] if self.sae_quality_inputs else [])
        return {name: layout.path(layout.TABLE, name=name, ext="parquet") for name in names}

    @cached_property
    def report_downloads(self) -> dict[str, str]:
        """CSV tables offered as downloads in the report."""
        names = ["grid", "comparisons"] + (["ksparse"] if self.ksparse_inputs else []) + (
            ["sweep"] if self.sweep_inputs else [])
        return {name: layout.path(layout.TABLE, name=name, ext="csv") for name in names}

    def final_output(self) -> list[str]:
        """Every file ``rule all`` builds (the one place that decides the run's targets)."""
        out = [f for name in ("grid", "best", "best_on_test", "comparisons", "summary") for f in layout.tables(name)]
        if self.ksparse_inputs:
            out += [f for name in ("ksparse", "ksparse_comparisons", "binarize_vs_ksparse") for f in layout.tables(name)]
        if self.config["probe"]["split_seeds"] and self.stage_cells["grid"]:
            out += layout.tables("grid_splits")
        if self.transfer_inputs:
            out += layout.tables("transfer")
        if self.sweep_inputs:
            out += layout.tables("sweep")
        if self.config["behaviour"]:
            out += layout.tables("behaviour")
        if self.sae_quality_inputs:
            out += layout.tables("saes")
        out += [layout.path(layout.FIGURE, name=name, ext=ext) for name in self.figures for ext in layout.FIGURE_FORMATS]
        if self.top_feature_cells:
            out += [layout.path(layout.TOP_FEATURES, ext=ext) for ext in ("parquet", "md", "html")]
        out += [layout.path(layout.REPORT_PAGE, name=name) for name in self.report_pages]
        return out


# The table each figure is drawn from.
FIGURE_TABLES = ("grid", "transfer", "sweep", "behaviour", "ksparse", "binarize_vs_ksparse", "saes")


def figure_plan(config: dict[str, Any], plan: Plan | None = None) -> dict[str, str]:
    """Figure name -> the table (one of :data:`FIGURE_TABLES`) it is drawn from, for a validated config.

    - ``f1_by_layer`` (grid): when the grid has any SAE or hidden-state probe;
    - ``f1_by_width``, ``pooling_binarize`` (grid): when the grid has SAE probes;
    - ``transfer_<dataset>`` (transfer): per ``transfer.datasets`` entry that has feature cells;
    - ``data_size`` (sweep): when the sweep has anything to run;
    - ``regimes`` (sweep): besides, when ``sweep.imbalance`` or ``sweep.label_noise`` has values;
    - ``behaviour`` (behaviour): when ``behaviour`` has entries;
    - ``ksparse`` (ksparse), ``binarize_vs_ksparse`` (binarize_vs_ksparse): when the k-sparse stage has cells;
    - ``sae_frontier``, ``sae_reconstruction`` (saes): when SAE quality is measured (``sae_quality.enabled``).
    """
    plan = plan or Plan(config)
    figures: dict[str, str] = {}
    cells = plan.stage_cells["grid"]
    if cells:
        figures["f1_by_layer"] = "grid"
    if any(c.source != HIDDEN for c in cells):
        figures["f1_by_width"] = "grid"
        figures["pooling_binarize"] = "grid"
    transfer = {c.dataset for c in plan.stage_cells["transfer"]}
    for ds in config["transfer"]["datasets"]:
        if ds in transfer:
            figures[f"transfer_{ds}"] = "transfer"
    if config["sweep"]["datasets"] and plan.sweep_inputs:
        figures["data_size"] = "sweep"
        if config["sweep"]["imbalance"] or config["sweep"]["label_noise"]:
            figures["regimes"] = "sweep"
    if config["behaviour"]:
        figures["behaviour"] = "behaviour"
    if plan.stage_cells["ksparse"]:
        figures["ksparse"] = "ksparse"
        figures["binarize_vs_ksparse"] = "binarize_vs_ksparse"
    if plan.sae_quality_inputs:
        figures["sae_frontier"] = "saes"
        figures["sae_reconstruction"] = "saes"
    return figures


def final_output(config: dict[str, Any]) -> list[str]:
    """Every file ``rule all`` builds for a validated ``config`` (see :meth:`Plan.final_output`)."""
    return Plan(config).final_output()
