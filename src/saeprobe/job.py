"""What every torch job of the workflow sets up first, and the provenance its stores record.

:func:`setup` is the first call of the GPU scripts (extract_activations,
extract_image_activations, train_sae, encode_sae, score_behaviour): the job's log file and the
one-line report of a :class:`~saeprobe.errors.SaeprobeError` (:func:`saeprobe.io.setup_logging`),
torch's thread count from the rule's ``threads``, the device and the compute dtype.

The device comes from the rule's ``runtime`` param (``params.runtime["device"]``): settings that
decide where and how fast a job runs, not what it writes, which the rules pass so that changing
them reruns nothing (see the ``runtime()`` helper in ``workflow/rules/activations.smk``).

:func:`provenance` is the one record of how an activation store was made, written to its
Zarr attributes by both extraction scripts (text and images), with the same keys.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from typing import Any

import torch

from saeprobe.models import pick_device, pick_dtype, source_record



@dataclass(frozen=True)
class Job:
    """A set-up job: its logger, torch threads, device and (when asked for) compute dtype."""

    log: logging.Logger
    threads: int
    device: torch.device
    dtype: torch.dtype | None = None


def setup(snakemake: Any, *, dtype: str | None = None) -> Job:
    """Set up a torch job from Snakemake's ``snakemake`` object.

    Reads ``snakemake.log[0]`` (the log file), ``snakemake.threads`` (``torch.set_num_threads``)
    and ``snakemake.params.runtime["device"]`` (:func:`saeprobe.models.pick_device`).

    Args:
        dtype: a compute dtype setting (``auto``, ``float32``, ...), resolved for the device with
            :func:`saeprobe.models.pick_dtype`; None: the job computes in no model dtype.
    Raises:
        ConfigError: the device is not available (e.g. ``cuda`` on a machine without one).
    """
    from saeprobe.io import setup_logging

    logger = setup_logging(snakemake.log[0])  # first: what follows fails with a one-line message
    threads = int(snakemake.threads)
    torch.set_num_threads(threads)
    device = pick_device(snakemake.params.runtime["device"])
    resolved = pick_dtype(dtype, device) if dtype is not None else None
    logger.info("device %s%s, %d torch threads", device, f", compute dtype {dtype_name(resolved)}" if resolved else "",
                threads)
    return Job(logger, threads, device, resolved)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


def versions() -> dict[str, str]:
    """Versions of saeprobe, torch, transformers, zarr and Python."""
    import transformers
    import zarr

    import saeprobe

    return {"saeprobe": saeprobe.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "zarr": zarr.__version__, "python": platform.python_version()}


def provenance(name: str, spec: dict[str, Any], model: torch.nn.Module, lm_config: Any, *, device: torch.device,
               dtype: torch.dtype, hook_point: str, positions: str, max_length: int, tokenizer: dict[str, Any],
               stats: dict[str, Any], image: dict[str, Any] | None = None) -> dict[str, Any]:
    """The attributes an activation store records of how it was made (the same keys for text and images).

    Args:
        name: the ``models.<name>`` key; spec: its settings (source keys, ``layers``,
            ``layer_convention``, ``store_dtype``).
        model: the loaded model (its class is recorded); lm_config: the config of the language
            model whose residual stream is stored (``hidden_size``, ``_attn_implementation``).
        hook_point: :func:`saeprobe.activations.hook_point`; positions: which token positions
            the store holds.
        max_length: longest sequence fed to the model (the tokenizer's cut for text, the
            processor's sequence length for images).
        tokenizer: ``{"class", "fingerprint"}`` of the tokenizer.
        stats: what the extraction returned: ``n_docs``, ``n_tokens``, ``max_abs`` ({layer: float}).
        image: for image stores, the image inputs (image_seq_length, image_token_id, prompts,
            image_processor); None for text.
    Returns:
        JSON-serialisable dict: model, model_class, source, layers, layer_convention, hook_point,
        positions, compute_dtype, store_dtype, device, attn_implementation, d_model, max_length,
        tokenizer, image, n_docs, n_tokens, max_abs_activation, versions. Nothing in it depends
        on time or host, so two runs of the same job record the same bytes.
    """
    return {
        "model": name, "model_class": type(model).__name__, "source": source_record(spec),
        "layers": list(spec["layers"]), "layer_convention": spec["layer_convention"], "hook_point": hook_point,
        "positions": positions, "compute_dtype": dtype_name(dtype), "store_dtype": spec["store_dtype"],
        "device": str(device), "attn_implementation": getattr(lm_config, "_attn_implementation", None),
        "d_model": int(lm_config.hidden_size), "max_length": int(max_length), "tokenizer": tokenizer, "image": image,
        "n_docs": stats["n_docs"], "n_tokens": stats["n_tokens"],
        "max_abs_activation": {str(k): v for k, v in stats["max_abs"].items()}, "versions": versions(),
    }
