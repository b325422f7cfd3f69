"""Snakemake adapter: the probe grid over re-drawn splits, mean ± std per cell (saeprobe.tables.grid_splits)."""
from pathlib import Path

from saeprobe.io import setup_logging
from saeprobe.tables import grid_splits, write_table

log = setup_logging(snakemake.log[0])
df = grid_splits(snakemake.input)
write_table(df, Path(snakemake.output[0]).with_suffix(""), "Test macro F1 over the dataset's own split and its re-drawn "
            "ones (probe.split_seeds; `splits` counts both): mean, std, min and max per cell, and the own split's "
            "(test_macro_f1_own); C by CV on each split's train rows")
log.info("%d cells over re-drawn splits", df.height)
