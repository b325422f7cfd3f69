"""Snakemake adapter: gather the transfer cell files into the transfer table (saeprobe.transfer_tables)."""
from pathlib import Path

from saeprobe.io import setup_logging
from saeprobe.tables import with_sae_attributes, write_table
from saeprobe.transfer_tables import transfer_markdown, transfer_table

log = setup_logging(snakemake.log[0])
df = with_sae_attributes(transfer_table(snakemake.input), snakemake.params.sae_attributes)
write_table(df, Path(snakemake.output[0]).with_suffix(""), md=transfer_markdown(df))
log.info("transfer table: %d rows from %d unit folders", df.height, len(snakemake.input))
