"""Snakemake adapter: re-draw a dataset's split with each of probe.split_seeds (saeprobe.data)."""
from saeprobe import data
from saeprobe.io import setup_logging

log = setup_logging(snakemake.log[0])
name, p = snakemake.wildcards.dataset, snakemake.params
frame, _ = data.read(snakemake.input.data)
splits = data.redraw_splits(p.spec, name, frame, p.split_seeds)
data.write_splits(splits, snakemake.output[0])
log.info("dataset %s: %d re-drawn splits (%s)", name, len(p.split_seeds), ", ".join(splits.columns[1:]))
