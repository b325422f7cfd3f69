import re

import saeprobe.grid as sg
import saeprobe.layout as sl
import saeprobe.sizing as sz
from saeprobe.fingerprint import folder_fingerprint, model_fingerprint, sae_fingerprint

# Helpers shared by the rules: the plan of the run (its cells by unit, its targets: saeprobe.grid),
# which settings change which stage's output (used as params:, so that editing one setting
# reruns exactly the stages it touches), and input functions. Paths: saeprobe.layout only.

PLAN = sg.Plan(config)


def get_final_output():
    """Every file `rule all` builds: one function of the config (saeprobe.grid.Plan.final_output)."""
    return PLAN.final_output()


# The probe's solver and selection settings, as every fit function takes them (probe.split_seeds
# only decides which extra splits fit_probe fits: changing it reruns nothing else).
PROBE = {k: v for k, v in config["probe"].items() if k != "split_seeds"}

# Software environment of every rule (used with --software-deployment-method conda).
ENV = "../../environment.yml"

# Threads of the torch rules (forward pass, SAE training/encoding): every core given with
# --cores; on a cluster, where --cores is not set (workflow.cores would raise), 8 — a profile's
# set-threads or --max-threads changes it.
TORCH_THREADS = workflow.resource_settings.cores or 8

def name_regex(names):
    """Wildcard constraint matching exactly these names (nothing when the list is empty)."""
    return "(" + "|".join(re.escape(n) for n in names) + ")" if names else "(?!)"


TEXT_DATASETS = name_regex(sg.datasets_of_kind(config, "text"))
IMAGE_DATASETS = name_regex(sg.datasets_of_kind(config, "image"))
RANDOM_MODELS = name_regex([m for m, spec in config["models"].items() if "random" in spec])
GGUF_MODELS = name_regex([m for m, spec in config["models"].items()
                          if any(sl.BUILT_MODELS.get(key) == "convert_gguf" for key in spec)])


# Dataset keys that choose which probes run on a dataset, not what the prepared file holds.
GRID_KEYS = ("models", "grid", "poolings", "binarize", "hidden_poolings")


def dataset_settings(dataset):
    """Settings that change a prepared dataset (so editing the probe grid does not re-prepare it)."""
    return {k: v for k, v in config["datasets"][dataset].items() if k not in GRID_KEYS}


def model_of(sae):
    return config["saes"][sae]["model"]


def model_source(model):
    """Settings that decide which weights/tokenizer are used (the schema's source keys and revision)."""
    spec = config["models"][model]
    return {k: spec[k] for k in (*sc.model_sources(), "revision") if k in spec}


# rerun_on_* params: digest/version/commit of weights a rule reads outside its inputs, so new weights rerun it.
def weights_fingerprint(model):
    """Fingerprint of the weights and tokenizer of models.<model> (None for random models: their folder is an input)."""
    return model_fingerprint(config["models"][model])


def sae_weights_fingerprint(sae, layer):
    """Fingerprint of saes.<sae>'s weights at ``layer`` (None for trained SAEs: their folder is an input)."""
    return sae_fingerprint(config["saes"][sae], int(layer))


def random_tokenizer_fingerprint(model):
    """Fingerprint of the tokenizer folder a random model copies (None without one)."""
    tokenizer = config["models"][model]["random"].get("tokenizer")
    return folder_fingerprint(tokenizer) if tokenizer else None


# Settings that decide where and how fast a job runs, never what it writes (device, batch sizes),
# reach the scripts as the `runtime` param, built by runtime() below (used by activations.smk,
# sae.smk, vision.smk and behaviour.smk). Its params function takes `threads`,
# which makes it a *derived* param for Snakemake (>= 8.23.2, snakemake/snakemake#3154): it is left
# out of the params rerun trigger, so changing the device or a batch size reruns nothing. (An
# ordinary param would rerun every torch job of the run on a device change.)


def runtime(**settings):
    """A params function giving `settings` (values or functions of the wildcards) as one dict."""

    def params(wildcards, threads):  # `threads`: see above; the scripts read snakemake.threads
        return {k: v(wildcards) if callable(v) else v for k, v in settings.items()}

    return params


# Host memory and time limits of the torch rules, from the model's size (saeprobe.sizing: parameter
# count from its config, no weights read). `model` picks the job's model from its wildcards.
def model_mem_mb(purpose, model=lambda w: w.model):
    return lambda w: sz.model_mem_mb(config["models"][model(w)], model(w), config["device"], purpose)


def model_runtime(purpose, model=lambda w: w.model):
    return lambda w: sz.model_runtime_min(config["models"][model(w)], model(w), config["device"], purpose)


def gguf_mem_mb(wildcards):
    """Host memory of a GGUF conversion, from the GGUF file's size (saeprobe.sizing.gguf_mem_mb)."""
    return sz.gguf_mem_mb(config["models"][wildcards.model])


def sae_mem_mb(train):
    """Host memory of an SAE job (training buffer and, on the CPU, the weights: saeprobe.sizing)."""

    def mem_mb(w):
        model = model_of(w.sae)
        return sz.sae_mem_mb(config["saes"][w.sae], sz.model_width(config["models"][model], model), config["device"],
                             train=train)

    return mem_mb


def built_model_folder(model):
    """The folder models.<model> is loaded from when the workflow builds it (random init or GGUF
    conversion: saeprobe.layout.built_model), else nothing: every stage that loads the model
    takes it as an input, so a rebuilt folder reruns them."""
    return sl.built_model(model, config["models"][model]) or []


def model_files(wildcards):
    """built_model_folder of the job's model."""
    return built_model_folder(wildcards.model)


def gguf_file(wildcards):
    """The GGUF file of a `gguf:` model (an input of its conversion), else nothing (a package's)."""
    return config["models"][wildcards.model].get("gguf", [])


def extraction_settings(model):
    """Settings that change the stored activations (not batch size, not device)."""
    spec = config["models"][model]
    keep = ("layers", "layer_convention", "dtype", "store_dtype", "attn_implementation")
    return {**model_source(model), **{k: spec[k] for k in keep}}


def sae_inputs(wildcards):
    spec = config["saes"][wildcards.sae]
    if "train" in spec:
        return sl.path(sl.SAE, sae=wildcards.sae, layer=wildcards.layer)
    if "path" in spec:
        return spec["path"].format(layer=wildcards.layer)
    return []


def quality_inputs(wildcards):
    """An SAE's quality job reads its folder, and the activations, prepared data and (text) tokens of
    the datasets whose held-out documents it is measured on (saeprobe.grid.sae_quality_datasets)."""
    model = model_of(wildcards.sae)
    datasets = sg.sae_quality_datasets(config, wildcards.sae)
    loss = sg.sae_loss_datasets(config, wildcards.sae)
    return {
        "sae": sae_inputs(wildcards),
        "activations": [sl.path(sl.ACTIVATIONS, model=model, dataset=d) for d in datasets],
        "data": [sl.path(sl.DATA, dataset=d) for d in datasets],
        "tokens": [sl.path(sl.TOKENS, model=model, dataset=d) for d in loss],
        "loss_data": [sl.path(sl.DATA, dataset=d) for d in loss],
        "model": built_model_folder(model),
    }


def pooled_source(wildcards):
    """The store a pool job reads: the activations (hidden-state source) or the SAE's codes."""
    if wildcards.source == sg.HIDDEN:
        return sl.path(sl.ACTIVATIONS, model=wildcards.model, dataset=wildcards.dataset)
    return sl.path(sl.CODES, model=wildcards.model, dataset=wildcards.dataset, sae=wildcards.source,
                   layer=wildcards.layer)


def split_seed_file(wildcards):
    """The re-drawn splits of the job's dataset (probe.split_seeds; text datasets only), else nothing."""
    if config["probe"]["split_seeds"] and sg.dataset_kind(config, wildcards.dataset) == "text":
        return sl.path(sl.SPLITS, dataset=wildcards.dataset)
    return []


def unit_cells(stage):
    """Input function: the [pooling, binarize] cells of `stage` on the job's unit (saeprobe.grid.Plan)."""
    return lambda w: PLAN.cell_names(stage, sg.unit_of(w))


# --- behaviour probing (workflow/rules/behaviour.smk)
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
    """Probe unit folders and TF-IDF results of the behaviour datasets."""
    return PLAN.probe_inputs(list(config["behaviour"]))
