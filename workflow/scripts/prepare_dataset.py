"""Snakemake adapter: normalise a dataset and fix its splits (saeprobe.data)."""
from saeprobe import data
from saeprobe.io import setup_logging

log = setup_logging(snakemake.log[0])
name = snakemake.wildcards.dataset
frame, label_names, report = data.prepare(snakemake.params.spec, name, snakemake.params.seed)
data.write(frame, label_names, snakemake.output[0])
log.info("dataset %s: %d documents, labels %s, splits from %s; per split and label: %s",
         name, report["n_docs"], label_names, report["splits_from"], report["counts"])
