"""Snakemake adapter: draw the run's figures (saeprobe.figures) as PNG + SVG."""
from pathlib import Path

from saeprobe import figures
from saeprobe.io import read_parquet, setup_logging

log = setup_logging(snakemake.log[0])
tables = {name: read_parquet(path) for name, path in snakemake.input.items()}
for name, table in tables.items():
    log.info("%s: %d rows", name, table.height)
pngs = [Path(p) for p in snakemake.output if p.endswith(".png")]
for name, png in zip(snakemake.params.names, pngs, strict=True):
    fig = figures.make(name, tables)
    paths = figures.save(fig, png.with_suffix(""))
    log.info("wrote %s", ", ".join(map(str, paths)))
