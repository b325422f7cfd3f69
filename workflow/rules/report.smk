rule tables:
    input:
        sc.probe_targets(config),
    output:
        TABLES,
    params:
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        probes=sc.probe_targets(config),
    resources:
        runtime=15,
    conda:
        ENV
    log:
        "results/logs/tables.log",
    benchmark:
        "results/benchmarks/tables/tables.tsv"
    script:
        "../scripts/tables.py"
