# Cross-lingual transfer matrices and probe training-set size sweeps (saeprobe.transfer).
# Each transfer/sweep job reads one pooled feature file (the same ones the probe grid uses)
# and the prepared dataset; the tables rules gather them into results/tables/.

TRANSFER = sc.transfer_targets(config)
SWEEPS = sc.sweep_targets(config)
TRANSFER_TABLES = expand("results/tables/transfer.{ext}", ext=["parquet", "csv", "md"])
SWEEP_TABLES = expand("results/tables/sweep.{ext}", ext=["parquet", "csv", "md"])
SWEEP_SETTINGS = {k: config["sweep"][k] for k in ("sizes", "repeats")}

if TRANSFER:
    TARGETS += TRANSFER_TABLES
if SWEEPS:
    TARGETS += SWEEP_TABLES


rule transfer:
    input:
        features="results/pooled/{model}/{dataset}/{source}/layer_{layer}/{pooling}.npz",
        data="results/data/{dataset}.parquet",
    output:
        "results/transfer/{model}/{dataset}/{source}/layer_{layer}/{pooling}__{binarize}.parquet",
    params:
        probe=config["probe"],
        seed=config["seed"],
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    log:
        "results/logs/transfer/{model}/{dataset}/{source}/layer_{layer}/{pooling}__{binarize}.log",
    benchmark:
        "results/benchmarks/transfer/{model}/{dataset}/{source}/layer_{layer}/{pooling}__{binarize}.tsv"
    script:
        "../scripts/transfer.py"


rule sweep:
    input:
        features="results/pooled/{model}/{dataset}/{source}/layer_{layer}/{pooling}.npz",
        data="results/data/{dataset}.parquet",
    output:
        "results/sweeps/{model}/{dataset}/{source}/layer_{layer}/{pooling}__{binarize}.parquet",
    params:
        probe=config["probe"],
        seed=config["seed"],
        **SWEEP_SETTINGS,
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    log:
        "results/logs/sweep/{model}/{dataset}/{source}/layer_{layer}/{pooling}__{binarize}.log",
    benchmark:
        "results/benchmarks/sweep/{model}/{dataset}/{source}/layer_{layer}/{pooling}__{binarize}.tsv"
    script:
        "../scripts/sweep.py"


rule sweep_tfidf:
    input:
        data="results/data/{dataset}.parquet",
    output:
        "results/sweeps/tfidf/{dataset}.parquet",
    wildcard_constraints:
        dataset=TEXT_DATASETS,
    params:
        tfidf={k: v for k, v in config["tfidf"].items() if k != "enabled"},
        probe=config["probe"],
        seed=config["seed"],
        **SWEEP_SETTINGS,
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    log:
        "results/logs/sweep/tfidf/{dataset}.log",
    benchmark:
        "results/benchmarks/sweep/tfidf/{dataset}.tsv"
    script:
        "../scripts/sweep.py"


rule transfer_table:
    input:
        TRANSFER,
    output:
        TRANSFER_TABLES,
    params:
        kind="transfer",
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        files=TRANSFER,
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    log:
        "results/logs/transfer_table.log",
    benchmark:
        "results/benchmarks/transfer_table/transfer.tsv"
    script:
        "../scripts/transfer_tables.py"


rule sweep_table:
    input:
        SWEEPS,
    output:
        SWEEP_TABLES,
    params:
        kind="sweep",
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        files=SWEEPS,
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    log:
        "results/logs/sweep_table.log",
    benchmark:
        "results/benchmarks/sweep_table/sweep.tsv"
    script:
        "../scripts/transfer_tables.py"
