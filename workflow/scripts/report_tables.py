"""Snakemake adapter: result tables as HTML pages for the Snakemake report (saeprobe.report)."""
from saeprobe.io import atomic_path, read_parquet, setup_logging
from saeprobe.report import table_page

log = setup_logging(snakemake.log[0])
PAGES = {
    "summary": ("Summary: which features classify best, with uncertainty",
                "Per dataset and model, each family's and probe kind's configuration chosen on the CV macro F1 of the "
                "train split by the one-standard-error rule (the simplest within one standard error of the best), "
                "ordered by CV macro F1 (never by the test score), with its test macro F1 and bootstrap interval [lo, hi] "
                "over test documents. sae_minus_this: the paired bootstrap difference of the CV-chosen SAE linear probe "
                "against that row (same resampled documents), k-sparse rows included; a win or loss only when its "
                "interval excludes 0 for every pair of configurations CV cannot tell apart (band_verdicts), else "
                "unstable (not decided). flag: degenerate rows.",
                "dataset"),
    "best": ("Best configuration per dataset, model, feature family and probe",
             "The configuration chosen on the CV macro F1 of the train split by the one-standard-error rule: the simplest "
             "(fewest features, then fewest active features) within one standard error of the best (band_size of them); "
             "its test macro F1 (with its bootstrap interval) is an honest estimate. vs_hidden_* / vs_tfidf_*: paired "
             "bootstrap difference of the SAE probe against the hidden-state probe of the same model and against TF-IDF; "
             "the verdict is unstable when the configurations CV cannot tell apart disagree. The test-score argmax "
             "(MOSAIC's procedure, optimistic) is in best_on_test.*, not here.", "dataset"),
    "behaviour": ("Behaviour probes: predicting whether the scored model answered correctly",
                  "scorer_accuracy = the scored model's accuracy on the multiple-choice items (lowest mean option loss); "
                  "majority_rate = share of the more common correct/incorrect label (majority_rate_test: on the test "
                  "split); per probe model and feature family, the probe chosen on CV macro F1 (one-standard-error "
                  "rule) and its test scores.",
                  "dataset"),
    "saes": ("Which SAE gives the best probe features, and does it reconstruct best?",
             "Per SAE and layer, quality on held-out documents: L0, explained variance, dead and dense fraction (latents "
             "firing on more than dense_threshold of tokens) and, for causal LMs, loss recovered = (CE_zero - CE_spliced) / "
             "(CE_zero - CE_clean) with the reconstruction spliced into the residual stream, and KL(clean || spliced); beside "
             "it per dataset the SAE's all-feature probe and k-sparse probe chosen on CV (one-standard-error rule; test "
             "macro F1 shown).",
             "dataset"),
    "transfer": ("Cross-lingual transfer", "Probe trained on train_lang's train split, scored on test_lang's test "
                 "split, same features; C chosen by CV on the training language only.", "dataset"),
}
for name in snakemake.params.names:
    df = read_parquet(snakemake.input[name])
    df = df.drop([c for c in ("result", "selected_on") if c in df.columns])  # file paths; one selection per page
    title, note, group = PAGES[name]
    with atomic_path(snakemake.output[name]) as tmp:
        tmp.write_text(table_page(df, title, note, group_by=group))
    log.info("%s: %d rows -> %s", name, df.height, snakemake.output[name])
