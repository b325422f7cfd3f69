# Cross-lingual transfer matrices (saeprobe.transfer): one job per feature store computes every
# (pooling, binarization) cell of `transfer:` on it from the pooled files the grid uses too;
# transfer_table gathers them into the transfer table.


rule transfer:
    input:
        features=sl.POOLED,
        data=sl.DATA,
    output:
        directory(sl.TRANSFER),
    params:
        cells=unit_cells("transfer"),
        probe=PROBE,
        seed=config["seed"],
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    log:
        sl.log("transfer", sl.UNIT),
    benchmark:
        sl.benchmark("transfer", sl.UNIT)
    script:
        "../scripts/transfer.py"


rule transfer_table:
    input:
        PLAN.transfer_inputs,
    output:
        sl.tables("transfer"),
    params:
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        files=PLAN.transfer_inputs,
        # Architecture, width, k/sparsity columns (from the config alone).
        sae_attributes=sg.sae_attributes(config),
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    log:
        sl.log("transfer_table"),
    benchmark:
        sl.benchmark("transfer_table")
    script:
        "../scripts/transfer_table.py"
