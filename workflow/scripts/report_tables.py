"""Snakemake adapter: result tables as HTML pages for the Snakemake report (saeprobe.report)."""
import polars as pl

from saeprobe.io import atomic_path, read_parquet, setup_logging
from saeprobe.report import table_page

log = setup_logging(snakemake.log[0])
PAGES = {
    "best": ("Best configuration per dataset, model and feature family",
             "selected_on = cv: saeprobe's choice, the configuration with the highest CV macro F1 on the train split; "
             "its test macro F1 is an honest estimate. selected_on = test: MOSAIC's procedure, the configuration with "
             "the highest test macro F1 itself, shown for comparison with the paper; it overstates what a user would "
             "get.", "dataset"),
    "behaviour": ("Behaviour probes: predicting whether the scored model answered correctly",
                  "scorer_accuracy = the scored model's accuracy on the multiple-choice items (lowest mean option loss); "
                  "majority_rate = share of the more common correct/incorrect label (majority_rate_test: on the test "
                  "split); per probe model and feature family, the probe with the best CV macro F1 and its test scores.",
                  "dataset"),
    "transfer": ("Cross-lingual transfer", "Probe trained on train_lang's train split, scored on test_lang's test "
                 "split, same features; C chosen by CV on the training language only.", "dataset"),
}
for name in snakemake.params.names:
    df = read_parquet(snakemake.input[name])
    if "selected_on" in df.columns:  # best: which selection a row is, first
        df = df.select("selected_on", pl.exclude("selected_on"))
    title, note, group = PAGES[name]
    with atomic_path(snakemake.output[name]) as tmp:
        tmp.write_text(table_page(df, title, note, group_by=group))
    log.info("%s: %d rows -> %s", name, df.height, snakemake.output[name])
