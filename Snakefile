# saeprobe: sparse-autoencoder feature probes, from labelled text to tables.
# DAG: prepare_dataset -> tokenize -> extract_activations -> (train_sae) -> encode_sae -> pool
#      -> fit_probe -> tables; pool also reads activations (hidden-state baseline);
#      prepare_dataset -> fit_tfidf (bag-of-words baseline). See docs/DESIGN.md and README.md.
# Paths: saeprobe.layout; what runs (cells, units, targets): saeprobe.grid, via get_final_output().
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

import saeprobe.config as sc
from saeprobe.errors import ConfigError
from saeprobe.io import RUN_OPTIONS_ENV, run_options
from saeprobe.offline import set_offline

min_version("9.0")


# The default configuration runs only when no --configfile is given. A `configfile:` directive
# would be *extended* by --configfile, mixing the default grid into a user's run.
DEFAULT_CONFIG = Path(workflow.basedir) / "config" / "config.yaml"
if not workflow.config_settings.configfiles:
    try:

        configfile: DEFAULT_CONFIG

    except WorkflowError:
        try:  # Snakemake's message names no line: read it again with ours, which does
            sc.load_yaml(DEFAULT_CONFIG)
        except ConfigError as exc:
            raise WorkflowError(f"saeprobe: {exc}") from None
        raise


report: "workflow/report/workflow.rst"


# The main process also checks that every local file the config names exists, relative paths
# under the working directory (--directory): a missing dataset or SAE path would otherwise let
# Snakemake keep the tables of a previous run ("Nothing to be done"). Jobs re-reading this file
# (a cluster job, a subprocess) skip that check.
try:
    sc.validate(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml",
                directory=Path.cwd() if workflow.is_main_process else None)
except ConfigError as exc:
    raise WorkflowError(f"saeprobe: {exc}") from None

# The options of this run (--configfile, --config, --directory, --snakefile) for the rebuild hint
# of a damaged cached file (saeprobe.io.rebuild_command): set in the main process, inherited by
# every job (under SLURM too: sbatch exports the environment); a job re-reading this file keeps it.
if workflow.is_main_process or RUN_OPTIONS_ENV not in os.environ:
    _moved = workflow.overwrite_workdir is not None  # --directory: where the command is typed is unknown
    _snakefile = Path(workflow.main_snakefile).resolve()
    os.environ[RUN_OPTIONS_ENV] = run_options(
        configfiles=workflow.config_settings.configfiles,
        config_args=workflow.config_settings.config_args or [],
        directory=Path.cwd() if _moved else None,
        snakefile=_snakefile if _moved or _snakefile != (Path.cwd() / "Snakefile").resolve() else None,
    )
set_offline(config["offline"])

# GPU rules ask a scheduler for one GPU when the config says `device: cuda` (or cuda:N); such a job
# stops with a clear message if it gets none (saeprobe.models.pick_device), it never falls back to
# the CPU. `auto` (CUDA if the job sees one, else the CPU) and `cpu` ask for none.
GPU = 1 if str(config["device"]).startswith("cuda") else 0


# One owner: saeprobe.config.WILDCARDS (the config is checked against the same patterns).
wildcard_constraints:
    **sc.WILDCARDS,


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/behaviour.smk"
include: "workflow/rules/vision.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/ksparse.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    localrule: True
    input:
        get_final_output(),


onsuccess:
    best = Path(sl.path(sl.TABLE, name="best", ext="md"))
    if best.exists():
        print(f"\nsaeprobe: tables are in {best.parent}/ (best.md = best configuration per dataset, grid.md = every probe)")
