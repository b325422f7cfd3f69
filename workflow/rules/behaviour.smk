# Cross-model behaviour probing: score a causal LM on multiple-choice data (score_behaviour); each
# behaviour entry then is a dataset (label = correct/incorrect) probed by the usual grid, and
# behaviour_table gathers scorer accuracy, majority rates and the best probe per feature family.
from types import SimpleNamespace

BEHAVIOUR = list(config["behaviour"])
BEHAVIOUR_NAMES = name_regex(BEHAVIOUR)
BEHAVIOUR_TABLES = expand("results/tables/behaviour.{ext}", ext=["parquet", "csv", "md"])
# Settings of an entry that only concern the probes of its labels (or speed), not the scoring.
NOT_SCORING = ("models", "poolings", "binarize", "hidden_poolings", "test_fraction", "batch_size")


def scorer_of(name):
    return config["behaviour"][name]["model"]


def scoring_settings(name):
    """What changes the scores: the entry's source/prompt/columns and the scorer's weights and numerics."""
    spec = config["behaviour"][name]
    model = config["models"][scorer_of(name)]
    # Sorted, so that reordering keys in the config file does not look like a change.
    settings = {**model_source(scorer_of(name)), **{k: model[k] for k in ("max_length", "dtype", "attn_implementation")}}
    return {
        "entry": {k: spec[k] for k in sorted(spec) if k not in NOT_SCORING},
        "model": {k: settings[k] for k in sorted(settings)},
    }


def behaviour_probes():
    """Probe result JSONs of the behaviour datasets (feature grid, plus TF-IDF when enabled)."""
    paths = [c.path for c in sc.probe_cells(config) if c.dataset in config["behaviour"]]
    if config["tfidf"]["enabled"]:
        paths += [f"results/probes/tfidf/{name}.json" for name in BEHAVIOUR]
    return paths


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
