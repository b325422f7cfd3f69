"""Snakemake adapter: the k-sparse tables (saeprobe.ksparse_tables)."""
from pathlib import Path

from saeprobe.io import read_parquet, setup_logging
from saeprobe.ksparse_tables import binarize_vs_ksparse, ksparse_comparisons, ksparse_markdown, ksparse_table
from saeprobe.tables import markdown, with_sae_attributes, write_table

log = setup_logging(snakemake.log[0])
p = snakemake.params
boot = dict(resamples=p.bootstrap["resamples"], level=p.bootstrap["level"], seed=p.seed)
out = Path(snakemake.output[0]).parent
df = with_sae_attributes(ksparse_table(snakemake.input.ksparse), p.sae_attributes)
comparisons = ksparse_comparisons(df, **boot)
write_table(df, out / "ksparse", md=ksparse_markdown(df, comparisons))
write_table(comparisons, out / "ksparse_comparisons", "k-sparse probes: CV-best SAE − CV-best hidden-state probe at each k "
            "(paired bootstrap over the same test documents; win/loss only when the interval excludes 0)")
versus = with_sae_attributes(binarize_vs_ksparse(read_parquet(snakemake.input.grid), df, **boot), p.sae_attributes)
write_table(versus, out / "binarize_vs_ksparse", md="# Binarization against feature selection\n\n"
            "Each binarized all-feature SAE probe against k-sparse probes on the raw features of the same store and pooling; "
            "difference = binarized − k-sparse test macro F1, paired bootstrap interval; matched = the smallest k at or above "
            "the binarized probe's mean active features per document.\n\n" + markdown(versus.filter("matched"))
            + "\n\nEvery k: binarize_vs_ksparse.csv / .parquet.\n")
log.info("%d k-sparse probes, %d SAE-vs-hidden comparisons, %d binarized-vs-k-sparse comparisons", df.height,
         comparisons.height, versus.height)
