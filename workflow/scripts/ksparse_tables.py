"""Snakemake adapter: the k-sparse tables (saeprobe.ksparse_tables)."""
from pathlib import Path

import polars as pl

from saeprobe.comparisons import UNSTABLE_MEANING
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
write_table(comparisons, out / "ksparse_comparisons", "k-sparse probes: SAE − hidden-state probe at each k, each side "
            "chosen on CV by the one-standard-error rule; ranking `best`: each side over every ranking run (the symmetric "
            "baseline, counted in the summary), a named ranking: both sides on that ranking (paired bootstrap over the "
            "same test documents; win/loss only when the interval excludes 0 for every pair of configurations CV cannot "
            f"tell apart, band_verdicts: each pair's verdict; `unstable`: {UNSTABLE_MEANING})")
versus = with_sae_attributes(binarize_vs_ksparse(read_parquet(snakemake.input.grid), df, **boot), p.sae_attributes)
unmatched = (versus.filter(pl.col("matched_note").is_not_null())
             .unique(["dataset", "model", "source", "layer", "pooling", "threshold"], maintain_order=True)
             .select("dataset", "model", "source", "layer", "pooling", "threshold", "binarized_mean_active_features",
                     "binarized_flag", "matched_note"))
write_table(versus, out / "binarize_vs_ksparse", md="# Binarization against feature selection\n\n"
            "Each binarized all-feature SAE probe against k-sparse probes on the raw features of the same store and pooling; "
            "difference = binarized − k-sparse test macro F1, paired bootstrap interval; matched = the smallest k run at or "
            "above the binarized probe's mean active features per document (none when no k run is that large: see below). "
            "binarized_flag / ksparse_flag: the grid's degenerate-row flags (few active features, one class predicted, not "
            "above the majority class): such a row is not an ordinary loss.\n\n" + markdown(versus.filter("matched"))
            + ("\n\n## Binarized probes with no matching k\n\n" + markdown(unmatched) if unmatched.height else "")
            + "\n\nEvery k: binarize_vs_ksparse.csv / .parquet.\n")
log.info("%d k-sparse probes, %d SAE-vs-hidden comparisons, %d binarized-vs-k-sparse comparisons (%d binarized probes "
         "with no k at or above their active features)", df.height, comparisons.height, versus.height, unmatched.height)
