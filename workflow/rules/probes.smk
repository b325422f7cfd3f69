# One fit_probe job per feature store: every (pooling, binarization) cell of the grid on it, one
# result JSON and one coefficient file per cell in the unit's folder (saeprobe.layout.PROBES).
rule fit_probe:
    input:
        features=sl.POOLED,
        data=sl.DATA,
        splits=split_seed_file,
    output:
        directory(sl.PROBES),
    params:
        cells=unit_cells("grid"),
        probe=PROBE,
        split_seeds=config["probe"]["split_seeds"],
        bootstrap=config["bootstrap"],
        seed=config["seed"],
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    log:
        sl.log("fit_probe", sl.UNIT),
    benchmark:
        sl.benchmark("fit_probe", sl.UNIT)
    script:
        "../scripts/fit_probe.py"


rule fit_tfidf:
    input:
        sl.DATA,
    output:
        result=sl.TFIDF,
        predictions=sl.TFIDF_PREDICTIONS,
    params:
        tfidf=config["tfidf"],
        probe=PROBE,
        bootstrap=config["bootstrap"],
        seed=config["seed"],
    resources:
        runtime=60,
    conda:
        ENV
    log:
        sl.log("fit_tfidf", "{dataset}"),
    benchmark:
        sl.benchmark("fit_tfidf", "{dataset}")
    script:
        "../scripts/fit_tfidf.py"


rule tables:
    input:
        results=PLAN.probe_inputs() + PLAN.baseline_inputs,
        # Read through each result's predictions_of() path (the unit folders hold their own).
        tfidf_predictions=PLAN.tfidf_predictions,
    output:
        sl.tables("grid") + sl.tables("best") + sl.tables("best_on_test") + sl.tables("comparisons"),
    params:
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        probes=PLAN.probe_inputs() + PLAN.baseline_inputs,
        # Architecture, width, k/sparsity columns (from the config alone).
        sae_attributes=sg.sae_attributes(config),
        bootstrap=config["bootstrap"],
        seed=config["seed"],
    resources:
        runtime=15,
    conda:
        ENV
    log:
        sl.log("tables"),
    benchmark:
        sl.benchmark("tables")
    script:
        "../scripts/tables.py"


rule summary:
    input:
        unpack(PLAN.summary_inputs),
    output:
        sl.tables("summary"),
    params:
        # The SAE − k-sparse paired comparisons are computed here (read from the stored predictions).
        bootstrap=config["bootstrap"],
        seed=config["seed"],
    resources:
        runtime=15,
    conda:
        ENV
    log:
        sl.log("summary"),
    benchmark:
        sl.benchmark("summary")
    script:
        "../scripts/summary.py"


rule grid_splits:
    input:
        PLAN.folders("grid", sl.PROBES),
    output:
        sl.tables("grid_splits"),
    params:
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        probes=PLAN.folders("grid", sl.PROBES),
    resources:
        runtime=15,
    conda:
        ENV
    log:
        sl.log("grid_splits"),
    benchmark:
        sl.benchmark("grid_splits")
    script:
        "../scripts/grid_splits.py"
