rule tables:
    input:
        sc.probe_targets(config),
    output:
        TABLES,
    conda:
        ENV
    log:
        "results/logs/tables.log",
    script:
        "../scripts/tables.py"
