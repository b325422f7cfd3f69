rule prepare_dataset:
    input:
        lambda w: config["datasets"][w.dataset].get("path", []),
    output:
        sl.DATA,
    wildcard_constraints:
        dataset=TEXT_DATASETS,
    params:
        spec=lambda w: dataset_settings(w.dataset),
        seed=config["seed"],
    resources:
        runtime=30,
    conda:
        ENV
    log:
        sl.log("prepare_dataset", "{dataset}"),
    benchmark:
        sl.benchmark("prepare_dataset", "{dataset}")
    script:
        "../scripts/prepare_dataset.py"


rule tokenize:
    input:
        data=sl.DATA,
        model=model_files,
    output:
        sl.TOKENS,
    wildcard_constraints:
        dataset=TEXT_DATASETS,
    params:
        source=lambda w: model_source(w.model),
        max_length=lambda w: config["models"][w.model]["max_length"],
        rerun_on_weights=lambda w: weights_fingerprint(w.model),
    resources:
        runtime=60,
    conda:
        ENV
    log:
        sl.log("tokenize", "{model}/{dataset}"),
    benchmark:
        sl.benchmark("tokenize", "{model}/{dataset}")
    script:
        "../scripts/tokenize.py"


rule init_random_model:
    output:
        directory(sl.MODEL),
    wildcard_constraints:
        model=RANDOM_MODELS,
    params:
        spec=lambda w: config["models"][w.model]["random"],
        rerun_on_tokenizer=lambda w: random_tokenizer_fingerprint(w.model),
    resources:
        runtime=30,
    conda:
        ENV
    log:
        sl.log("init_random_model", "{model}"),
    benchmark:
        sl.benchmark("init_random_model", "{model}")
    script:
        "../scripts/init_random_model.py"


# A gguf / gguf_package model: its GGUF dequantized once into a Hugging Face folder (saeprobe.gguf),
# which every later stage loads (built_model_folder is their input). Rerun when the GGUF's content
# changes (rerun_on_weights: the file's digest, or the package's and its chunk packages').
rule convert_gguf:
    input:
        gguf=gguf_file,
    output:
        directory(sl.MODEL),
    wildcard_constraints:
        model=GGUF_MODELS,
    params:
        source=lambda w: model_source(w.model),
        rerun_on_weights=lambda w: weights_fingerprint(w.model),
    resources:
        mem_mb=gguf_mem_mb,
        runtime=60,
    conda:
        ENV
    log:
        sl.log("convert_gguf", "{model}"),
    benchmark:
        sl.benchmark("convert_gguf", "{model}")
    script:
        "../scripts/convert_gguf.py"


# probe.split_seeds: the drawn split re-drawn with each seed into a side file, read only by
# fit_probe (the prepared dataset, and so every activation, stays as it is).
rule draw_splits:
    input:
        source=lambda w: config["datasets"][w.dataset].get("path", []),
        data=sl.DATA,
    output:
        sl.SPLITS,
    wildcard_constraints:
        dataset=TEXT_DATASETS,
    params:
        spec=lambda w: dataset_settings(w.dataset),
        split_seeds=config["probe"]["split_seeds"],
    resources:
        runtime=30,
    conda:
        ENV
    log:
        sl.log("draw_splits", "{dataset}"),
    benchmark:
        sl.benchmark("draw_splits", "{dataset}")
    script:
        "../scripts/draw_splits.py"
