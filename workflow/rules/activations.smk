rule extract_activations:
    input:
        tokens=sl.TOKENS,
        model=model_files,
    output:
        directory(sl.ACTIVATIONS),
    wildcard_constraints:
        dataset=TEXT_DATASETS,
    params:
        settings=lambda w: extraction_settings(w.model),
        rerun_on_weights=lambda w: weights_fingerprint(w.model),
        runtime=runtime(device=config["device"], token_budget=lambda w: config["models"][w.model]["token_budget"]),
    threads: TORCH_THREADS
    resources:
        gpu=GPU,
        mem_mb=model_mem_mb("base"),
        runtime=model_runtime("base"),
    conda:
        ENV
    log:
        sl.log("extract_activations", "{model}/{dataset}"),
    benchmark:
        sl.benchmark("extract_activations", "{model}/{dataset}")
    script:
        "../scripts/extract_activations.py"
