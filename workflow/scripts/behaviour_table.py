"""Snakemake adapter: scorer accuracy, majority rates and best probes per behaviour dataset (saeprobe.behaviour_tables)."""
from pathlib import Path

from saeprobe.behaviour_tables import behaviour_table, dataset_stats
from saeprobe.io import setup_logging
from saeprobe.tables import write_table

log = setup_logging(snakemake.log[0])
stats = [dataset_stats(name, scored, prepared)
         for name, scored, prepared in zip(snakemake.params.names, snakemake.input.scored, snakemake.input.data, strict=True)]
df = behaviour_table(list(snakemake.input.probes), stats)
write_table(df, Path(snakemake.output[0]).with_suffix(""),
            "Cross-model behaviour probing: do a model's features predict whether the scorer answered correctly? "
            "Best probe per feature family chosen on CV macro F1 (never on test); compare test accuracy with "
            "majority_rate_test")
log.info("behaviour table: %d rows\n%s", df.height, df)
