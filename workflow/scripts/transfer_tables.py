"""Snakemake adapter: aggregate transfer matrices or sweeps into results/tables (saeprobe.transfer_tables)."""
from pathlib import Path

from saeprobe.io import setup_logging
from saeprobe.tables import write_table
from saeprobe.transfer_tables import sweep_markdown, sweep_table, transfer_markdown, transfer_table

log = setup_logging(snakemake.log[0])
stem = Path(snakemake.output[0]).with_suffix("")
if snakemake.params.kind == "transfer":
    df = transfer_table(snakemake.input)
    write_table(df, stem, md=transfer_markdown(df))
else:
    df = sweep_table(snakemake.input)
    write_table(df, stem, md=sweep_markdown(df))
log.info("%s: %d rows from %d files", stem, df.height, len(snakemake.input))
