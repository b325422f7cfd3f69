rule tables:
    input:
        sc.probe_targets(config),
    output:
        TABLES,
    log:
        "results/logs/tables.log",
    script:
        "../scripts/tables.py"
