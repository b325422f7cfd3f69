"""Snakemake adapter: score a causal LM on multiple-choice items -> behaviour labels (saeprobe.behaviour)."""
import torch

from saeprobe.behaviour import score_entry
from saeprobe.behaviour_data import write
from saeprobe.io import setup_logging
from saeprobe.models import pick_device, pick_dtype

log = setup_logging(snakemake.log[0])
name = snakemake.wildcards.name
spec = snakemake.config["behaviour"][name]
scorer = spec["model"]
model_spec = snakemake.config["models"][scorer]
torch.set_num_threads(snakemake.threads)
device = pick_device(snakemake.config["device"])
dtype = pick_dtype(model_spec["dtype"], device)
frame, meta = score_entry(spec, name, model_spec, scorer, device, dtype, token_budget=model_spec["token_budget"],
                          batch_size=spec["batch_size"])
write(frame, meta, snakemake.output[0])
log.info("behaviour %s: %s answered %d of %d items correctly (accuracy %.3f; chance %.3f; majority label %s at %.3f); "
         "%d items with a truncated prompt", name, scorer, meta["n_correct"], meta["n_items"], meta["accuracy"],
         meta["chance_accuracy"], meta["majority_label"], meta["majority_rate"], meta["n_items_prompt_truncated"])
