"""Snakemake adapter: the summary table and page, from the grid, comparison and k-sparse tables (saeprobe.summary)."""
from pathlib import Path

from saeprobe.io import read_parquet, setup_logging
from saeprobe.summary import summary, summary_markdown
from saeprobe.tables import write_table

log = setup_logging(snakemake.log[0])
inputs = snakemake.input
ksparse = read_parquet(inputs.ksparse) if "ksparse" in inputs.keys() else None
ksparse_comparisons = read_parquet(inputs.ksparse_comparisons) if "ksparse_comparisons" in inputs.keys() else None
comparisons = read_parquet(inputs.comparisons)
p = snakemake.params
df = summary(read_parquet(inputs.grid), comparisons, ksparse, resamples=p.bootstrap["resamples"],
             level=p.bootstrap["level"], seed=p.seed)
write_table(df, Path(snakemake.output[0]).with_suffix(""),
            md=summary_markdown(df, comparisons, ksparse_comparisons, p.bootstrap["level"]))
log.info("summary: %d entries over %d datasets", df.height, df["dataset"].n_unique())
