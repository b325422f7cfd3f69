"""Snakemake adapter: gather the sweep cell files into the sweep table (saeprobe.sweep_tables)."""
from pathlib import Path

from saeprobe.io import setup_logging
from saeprobe.sweep_tables import sweep_markdown, sweep_skipped, sweep_table
from saeprobe.tables import with_sae_attributes, write_table

log = setup_logging(snakemake.log[0])
df = with_sae_attributes(sweep_table(snakemake.input), snakemake.params.sae_attributes)
skipped = sweep_skipped(snakemake.input)  # draws the sweep jobs could not cross-validate (no rows; marked in the md)
write_table(df, Path(snakemake.output[0]).with_suffix(""), md=sweep_markdown(df, skipped))
log.info("sweep table: %d rows from %d inputs; %d draws skipped", df.height, len(snakemake.input), skipped.height)
