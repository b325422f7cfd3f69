# k-sparse probes (saeprobe.ksparse): one job per feature store ranks each cell's features once
# per ranking on the train split and fits every k; ksparse_tables gathers them, compares SAE
# against hidden states at each k and the binarized all-feature probe against k-sparse probes.
rule ksparse:
    input:
        features=sl.POOLED,
        data=sl.DATA,
    output:
        directory(sl.KSPARSE),
    params:
        cells=unit_cells("ksparse"),
        rankings=config["ksparse"]["rankings"],
        ks=config["ksparse"]["ks"],
        probe=PROBE,
        bootstrap=config["bootstrap"],
        seed=config["seed"],
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    log:
        sl.log("ksparse", sl.UNIT),
    benchmark:
        sl.benchmark("ksparse", sl.UNIT)
    script:
        "../scripts/ksparse.py"


rule ksparse_tables:
    input:
        ksparse=PLAN.ksparse_inputs,
        grid=sl.path(sl.TABLE, name="grid", ext="parquet"),
    output:
        sl.tables("ksparse") + sl.tables("ksparse_comparisons") + sl.tables("binarize_vs_ksparse"),
    params:
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        files=PLAN.ksparse_inputs,
        # Architecture, width, k/sparsity columns (from the config alone).
        sae_attributes=sg.sae_attributes(config),
        bootstrap=config["bootstrap"],
        seed=config["seed"],
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    log:
        sl.log("ksparse_tables"),
    benchmark:
        sl.benchmark("ksparse_tables")
    script:
        "../scripts/ksparse_tables.py"
