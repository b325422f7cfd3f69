# One pool job per feature store (model, dataset, source, layer): reads the store once and writes
# every pooling a stage needs from it (grid, transfer, sweep), one file each.
rule pool:
    input:
        pooled_source,
    output:
        directory(sl.POOLED),
    params:
        poolings=lambda w: PLAN.poolings(sg.unit_of(w)),
        exclude_special=config["features"]["exclude_special_tokens"],
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    log:
        sl.log("pool", sl.UNIT),
    benchmark:
        sl.benchmark("pool", sl.UNIT)
    script:
        "../scripts/pool.py"
