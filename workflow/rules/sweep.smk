# Probe data-regime sweeps (saeprobe.sweep): training-set size, class imbalance and label noise
# curves per feature store (every (pooling, binarization) cell of `sweep:` on it in one job) and
# of the TF-IDF baseline; sweep_table gathers them into the sweep table.
SWEEP_SETTINGS = {k: config["sweep"][k] for k in ("sizes", "repeats", "imbalance", "label_noise")}


rule sweep:
    input:
        features=sl.POOLED,
        data=sl.DATA,
    output:
        directory(sl.SWEEP),
    params:
        cells=unit_cells("sweep"),
        probe=PROBE,
        seed=config["seed"],
        **SWEEP_SETTINGS,
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    log:
        sl.log("sweep", sl.UNIT),
    benchmark:
        sl.benchmark("sweep", sl.UNIT)
    script:
        "../scripts/sweep.py"


rule sweep_tfidf:
    input:
        data=sl.DATA,
    output:
        sl.SWEEP_TFIDF,
    wildcard_constraints:
        dataset=TEXT_DATASETS,
    params:
        tfidf={k: v for k, v in config["tfidf"].items() if k != "enabled"},
        probe=PROBE,
        seed=config["seed"],
        **SWEEP_SETTINGS,
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    log:
        sl.log("sweep_tfidf", "{dataset}"),
    benchmark:
        sl.benchmark("sweep_tfidf", "{dataset}")
    script:
        "../scripts/sweep_tfidf.py"


rule sweep_table:
    input:
        PLAN.sweep_inputs,
    output:
        sl.tables("sweep"),
    params:
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        files=PLAN.sweep_inputs,
        # Architecture, width, k/sparsity columns (from the config alone).
        sae_attributes=sg.sae_attributes(config),
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    log:
        sl.log("sweep_table"),
    benchmark:
        sl.benchmark("sweep_table")
    script:
        "../scripts/sweep_table.py"
