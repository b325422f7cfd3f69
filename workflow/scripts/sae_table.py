"""Snakemake adapter: gather every SAE's quality beside its best probes into tables/saes.* (saeprobe.sae_quality)."""
from pathlib import Path

from saeprobe.io import read_parquet, setup_logging
from saeprobe.sae_quality import sae_table
from saeprobe.tables import write_table

log = setup_logging(snakemake.log[0])
ksparse = read_parquet(snakemake.input.ksparse) if "ksparse" in snakemake.input.keys() else None
t = sae_table(snakemake.input.quality, read_parquet(snakemake.input.grid), ksparse)
write_table(t, Path(snakemake.output[0]).with_suffix(""), "SAE quality on held-out documents (L0, explained variance, "
            "dead / dense fraction; causal LMs: CE clean / spliced / zero-ablated, loss recovered, KL) beside each SAE's "
            "best all-feature and k-sparse probe per dataset (chosen on CV macro F1; test macro F1 and its bootstrap interval "
            "[lo, hi] shown)")
log.info("%d SAE rows:\n%s", t.height, t)
