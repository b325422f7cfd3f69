"""Snakemake adapter: collect an image dataset, encode images as PNG, fix its splits (saeprobe.vision)."""
from saeprobe import data, vision
from saeprobe.io import setup_logging

log = setup_logging(snakemake.log[0])
name = snakemake.wildcards.dataset
frame, label_names, report = vision.prepare(snakemake.params.spec, name, snakemake.params.seed)
data.write(frame, label_names, snakemake.output[0])
log.info("image dataset %s (%s): %d images of %d source rows, labels %s, splits from %s; per split and label: %s",
         name, report["source"], report["n_docs"], report["n_source_rows"], label_names, report["splits_from"],
         report["counts"])
