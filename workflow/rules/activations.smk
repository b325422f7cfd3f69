# Settings that decide where and how fast a job runs, never what it writes (device, batch sizes),
# reach the scripts as the `runtime` param, built by runtime() below (also used by sae.smk,
# vision.smk and behaviour.smk, included after this file). Its params function takes `threads`,
# which makes it a *derived* param for Snakemake (>= 8.23.2, snakemake/snakemake#3154): it is left
# out of the params rerun trigger, so changing the device or a batch size reruns nothing. (An
# ordinary param would rerun every torch job of the run on a device change.)


def runtime(**settings):
    """A params function giving `settings` (values or functions of the wildcards) as one dict."""

    def params(wildcards, threads):  # `threads`: see above; the scripts read snakemake.threads
        return {k: v(wildcards) if callable(v) else v for k, v in settings.items()}

    return params


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
        mem_mb=8000,
        runtime=360,
    conda:
        ENV
    log:
        sl.log("extract_activations", "{model}/{dataset}"),
    benchmark:
        sl.benchmark("extract_activations", "{model}/{dataset}")
    script:
        "../scripts/extract_activations.py"
