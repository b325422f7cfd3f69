"""Snakemake adapter: score a causal LM on multiple-choice items -> behaviour labels (saeprobe.behaviour)."""
from saeprobe import behaviour_data
from saeprobe.behaviour import score_entry
from saeprobe.job import setup

name = snakemake.wildcards.name
settings, runtime = snakemake.params.settings, snakemake.params.runtime
spec, model_spec = settings["entry"], settings["model"]
scorer = spec["model"]
job = setup(snakemake, dtype=model_spec["dtype"])
frame, meta = score_entry(spec, name, model_spec, scorer, job.device, job.dtype, token_budget=runtime["token_budget"],
                          batch_size=runtime["batch_size"])
behaviour_data.write(frame, meta, snakemake.output[0])
job.log.info("behaviour %s: %s answered %d of %d items correctly (accuracy %.3f; chance %.3f; majority label %s at "
             "%.3f); %d items with a truncated prompt", name, scorer, meta["n_correct"], meta["n_items"],
             meta["accuracy"], meta["chance_accuracy"], meta["majority_label"], meta["majority_rate"],
             meta["n_items_prompt_truncated"])
