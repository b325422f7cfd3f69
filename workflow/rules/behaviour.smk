# Cross-model behaviour probing: score a causal LM on multiple-choice data (score_behaviour); each
# behaviour entry then is a dataset (label = correct/incorrect) probed by the usual grid, and
# behaviour_table gathers scorer accuracy, majority rates and the best probe per feature family.
from types import SimpleNamespace

BEHAVIOUR = list(config["behaviour"])
BEHAVIOUR_NAMES = name_regex(BEHAVIOUR)
BEHAVIOUR_TABLES = expand("results/tables/behaviour.{ext}", ext=["parquet", "csv", "md"])


rule score_behaviour:
    input:
        mc=lambda w: config["behaviour"][w.name].get("path", []),
        model=lambda w: model_files(SimpleNamespace(model=scorer_of(w.name))),
    output:
        "results/behaviour/{name}.parquet",
    wildcard_constraints:
        name=BEHAVIOUR_NAMES,
    params:
        settings=lambda w: scoring_settings(w.name),
        rerun_on_weights=lambda w: weights_fingerprint(scorer_of(w.name)),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=360,
    conda:
        ENV
    log:
        "results/logs/score_behaviour/{name}.log",
    benchmark:
        "results/benchmarks/score_behaviour/{name}.tsv"
    script:
        "../scripts/score_behaviour.py"


rule behaviour_table:
    input:
        probes=behaviour_probes(),
        scored=expand("results/behaviour/{name}.parquet", name=BEHAVIOUR),
        data=expand("results/data/{name}.parquet", name=BEHAVIOUR),
    output:
        BEHAVIOUR_TABLES,
    params:
        # The input list as a param: Snakemake's input trigger misses added inputs, the params trigger does not.
        probes=behaviour_probes(),
        names=BEHAVIOUR,
    conda:
        ENV
    log:
        "results/logs/behaviour_table.log",
    benchmark:
        "results/benchmarks/behaviour_table/behaviour_table.tsv"
    script:
        "../scripts/behaviour_table.py"


if BEHAVIOUR:
    TARGETS += BEHAVIOUR_TABLES
