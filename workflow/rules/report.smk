rule tables:
    input:
        sc.probe_targets(config),
    output:
        TABLES,
    conda:
        ENV
    log:
        "results/logs/tables.log",
    benchmark:
        "results/benchmarks/tables/tables.tsv"
    script:
        "../scripts/tables.py"
