# saeprobe: sparse-autoencoder feature probes, from labelled text to tables.
# DAG: prepare_dataset -> tokenize -> extract_activations -> (train_sae) -> encode_sae -> pool
#      -> fit_probe -> tables; pool also reads activations (hidden-state baseline);
#      prepare_dataset -> fit_tfidf (bag-of-words baseline). See DESIGN.md and README.md.
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

import saeprobe.config as sc
from saeprobe.errors import ConfigError
from saeprobe.io import set_offline  # not saeprobe.models: parsing must not import torch

min_version("9.0")


configfile: "config/config.yaml"


try:
    sc.validate(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
except ConfigError as exc:
    raise WorkflowError(f"saeprobe: {exc}") from None
set_offline(config["offline"])

# GPU rules ask for one GPU unless the run is pinned to the CPU.
GPU = 0 if config["device"] == "cpu" else 1
NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"


wildcard_constraints:
    model=NAME,
    dataset=NAME,
    sae=NAME,
    source=NAME,
    layer=r"\d+",
    pooling=r"(mean|max|sum|last|top[1-9]\d*)",
    binarize=r"(raw|gt[0-9][0-9.]*)",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/behaviour.smk"
include: "workflow/rules/vision.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        TARGETS,


onsuccess:
    if Path("results/tables/best.md").exists():
        print("\nsaeprobe: tables are in results/tables/ (best.md = best configuration per dataset, grid.md = every probe)")
