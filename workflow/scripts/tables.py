"""Snakemake adapter: aggregate probe results into the grid, best and comparison tables (saeprobe.tables,
saeprobe.comparisons)."""
from pathlib import Path

from saeprobe.comparisons import UNSTABLE_MEANING, comparisons, win_tie_loss, with_comparisons
from saeprobe.io import setup_logging
from saeprobe.tables import SAE_ATTRIBUTE_SCHEMA, best, grid, markdown, with_sae_attributes, write_table

log = setup_logging(snakemake.log[0])
p = snakemake.params
out = Path(snakemake.output[0]).parent
level = f"{p.bootstrap['level']:.0%}"
g = with_sae_attributes(grid(snakemake.input.results), p.sae_attributes)
write_table(g, out / "grid", md_exclude=SAE_ATTRIBUTE_SCHEMA, title="All probes (CV = stratified CV on the train split, "
            "cv_macro_f1_se = standard error of its mean over folds; test = held-out test split; "
            f"[lo, hi] = {level} stratified bootstrap interval over test documents; flag = degenerate row)")
flagged = g.filter(g["flag"].is_not_null())
if flagged.height:
    log.warning("%d of %d probes are flagged (few active features, one class predicted, or not above the majority "
                "class): see the flag column of grid.*", flagged.height, g.height)
c = comparisons(g, resamples=p.bootstrap["resamples"], level=p.bootstrap["level"], seed=p.seed)
counts = win_tie_loss(c)
write_table(c, out / "comparisons", md="# Paired comparisons of the CV-chosen SAE probe (a) against other probes (b)\n\n"
            f"difference = a − b in test macro F1 of the two CV-chosen configurations, paired {level} bootstrap interval "
            "over the same resampled test documents; win/loss only when the interval excludes 0. band_a / band_b = the "
            "configurations CV cannot tell apart from each side's choice (within one standard error of its best CV macro "
            "F1); the verdict is given only when every pair of them agrees (band_verdicts: the verdict of each pair), "
            f"else `unstable`: {UNSTABLE_MEANING}.\n\n" + markdown(c)
            + "\n## Win / tie / loss of the SAE probe\n\n" + markdown(counts))
b = with_sae_attributes(with_comparisons(best(g, "cv"), c), p.sae_attributes)
write_table(b, out / "best", "Best configuration per dataset, model, family and probe, chosen on the CV macro F1 of the "
            "train split by the one-standard-error rule: the simplest configuration (fewest features, then fewest active "
            "features per document) whose CV macro F1 is within one standard error of the best; band_size = how many "
            "configurations are within that band. vs_hidden_* / vs_tfidf_*: paired bootstrap difference of the SAE probe "
            "against the hidden-state probe of the same model and against TF-IDF (win/loss only when the interval "
            f"excludes 0 for every pair of the two bands; `unstable`: {UNSTABLE_MEANING})")
write_table(with_sae_attributes(best(g, "test"), p.sae_attributes), out / "best_on_test", "Best configuration selected on the TEST score (MOSAIC's procedure), "
            "for comparison with the paper only: optimistic by construction; read best.* for saeprobe's CV selection")
log.info("%d probes aggregated, %d paired comparisons; best configurations:\n%s", g.height, c.height, b)
