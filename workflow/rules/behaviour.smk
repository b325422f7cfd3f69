# Cross-model behaviour probing: score a causal LM on multiple-choice data (score_behaviour); each
# behaviour entry then is a dataset (label = correct/incorrect) probed by the usual grid, and
# behaviour_table gathers scorer accuracy, majority rates and the best probe per feature family.

BEHAVIOUR = list(config["behaviour"])
BEHAVIOUR_NAMES = name_regex(BEHAVIOUR)


rule score_behaviour:
    input:
        mc=lambda w: config["behaviour"][w.name].get("path", []),
        model=lambda w: built_model_folder(scorer_of(w.name)),
    output:
        sl.BEHAVIOUR,
    wildcard_constraints:
        name=BEHAVIOUR_NAMES,
    params:
        settings=lambda w: scoring_settings(w.name),
        rerun_on_weights=lambda w: weights_fingerprint(scorer_of(w.name)),
        runtime=runtime(
            device=config["device"],
            token_budget=lambda w: config["models"][scorer_of(w.name)]["token_budget"],
            batch_size=lambda w: config["behaviour"][w.name]["batch_size"],
        ),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=model_mem_mb("causal_lm", lambda w: scorer_of(w.name)),
        runtime=model_runtime("causal_lm", lambda w: scorer_of(w.name)),
    conda:
        ENV
    log:
        sl.log("score_behaviour", "{name}"),
    benchmark:
        sl.benchmark("score_behaviour", "{name}")
    script:
        "../scripts/score_behaviour.py"


rule behaviour_table:
    input:
        probes=behaviour_probes(),
        scored=expand(sl.BEHAVIOUR, name=BEHAVIOUR),
        data=expand(sl.DATA, dataset=BEHAVIOUR),
    output:
        sl.tables("behaviour"),
    params:
        # The input list as a param, read by no script: Snakemake's input trigger misses added inputs,
        # the params trigger does not.
        rerun_on_probes=behaviour_probes(),
        names=BEHAVIOUR,
    conda:
        ENV
    log:
        sl.log("behaviour_table"),
    benchmark:
        sl.benchmark("behaviour_table")
    script:
        "../scripts/behaviour_table.py"
