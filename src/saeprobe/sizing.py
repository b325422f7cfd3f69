"""Job sizes of the torch rules: host memory (``mem_mb``) and time limit (``runtime``) from the model's size.

A SLURM job is killed when it holds more host memory than it asked for, so the GPU rules'
``mem_mb`` comes from what the job holds, computed from the model's *config* (no weights read):
the parameter count (the architecture built on PyTorch's ``meta`` device, which allocates
nothing) times the bytes of the compute dtype.

What a job holds on the host (MB), with W = parameters × bytes of the compute dtype:

- **weights on an accelerator** (``device: cuda``): :data:`BASE_MB` (interpreter, torch, the
  CUDA context, tokens, writer buffers) + W. :func:`saeprobe.models.load_pretrained` hands the
  device to ``from_pretrained(device_map=...)``, which moves the checkpoint tensor by tensor, so
  the host never holds the whole model; the checkpoint's memory-mapped pages are page cache and
  the per-tensor dtype conversions are transient, both bounded by W (a float32 checkpoint read
  into bfloat16 converts one tensor at a time, the largest being Gemma 2's 256k × d embedding).
- **weights on the CPU** (``device: cpu``, or ``auto`` without CUDA): :data:`BASE_MB` + 2 W: the
  model plus one converted copy while loading.

Gemma 2 9B in bfloat16 (9.24 B parameters) asks for 4,096 + 17,628 = 21,724 MB on a GPU node;
Gemma 2 2B (2.61 B) 9,083 MB (tests/test_sizing.py builds both from their published shapes).

The time limit is a budget, not a prediction: :data:`RUNTIME_BASE_MIN` plus a number of minutes
per billion parameters (:data:`RUNTIME_MIN_PER_B`, ten times more on the CPU). A cluster profile's
``set-resources`` overrides both values per rule.

SAE jobs are sized from the SAE: ``2 × d_in × d_sae`` float32 weights (+ Adam's two moments and the
gradients when training), and the training buffer (``max_buffer_tokens × d_in`` float32).

A config that cannot be read offline (a hub model not in the local cache) is looked up in
``saeprobe/model_configs/<hub id>/config.json`` (the published architectures of the paper's
models); failing that, the job gets :data:`FALLBACK_MB` and a logged warning. A GGUF model is
sized from its converted folder, or, before ``convert_gguf`` has run, from its GGUF file's size
(:func:`model_parameters`; the conversion itself: :func:`gguf_mem_mb`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import torch

from saeprobe.config import with_defaults

log = logging.getLogger("saeprobe")

BASE_MB = 4096
FALLBACK_MB = 16000
RUNTIME_BASE_MIN = 60
RUNTIME_MIN_PER_B = {"gpu": 30, "cpu": 300}
RUNTIME_MAX_MIN = 24 * 60
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"  # <hub id>/config.json (package data)
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
GGUF_MIN_BITS = 4  # bits per weight assumed in a GGUF file when sizing its conversion (Q4 and up)
AUTO_CLASS = {"base": "AutoModel", "causal_lm": "AutoModelForCausalLM", "vision": "AutoModel"}


def on_gpu(device: str) -> bool:
    """Whether a job with the config's ``device`` setting keeps its weights on an accelerator
    (``cuda``, ``cuda:N``, ``mps``). ``auto`` counts as the CPU: it only picks CUDA where the job
    happens to see one, and the rules ask for no GPU for it (the Snakefile's ``GPU``)."""
    return device.startswith(("cuda", "mps"))


def parameter_count(cfg: Any, purpose: str = "base") -> int:
    """Number of parameters of the model ``cfg`` describes (tied weights counted once).

    Args:
        cfg: a ``transformers`` config; purpose: ``base``, ``causal_lm`` or ``vision``
            (:data:`saeprobe.models.PURPOSES`): which Auto class is built.
    The model is built on the ``meta`` device: no memory is allocated and nothing is read
    (Gemma 2 9B: 0.05 s).
    """
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, AUTO_CLASS[purpose]).from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def sizing_config(spec: dict[str, Any], name: str) -> Any | None:
    """The ``transformers`` config of ``models.<name>``, read without the network: the source
    folder or the local hub cache, else ``saeprobe/model_configs/<hub id>/config.json``; None
    when neither has it (a random model before it is built is sized from its preset's config)."""
    from transformers import AutoConfig

    from saeprobe.models import resolve_source

    if "random" in spec:
        from saeprobe import randinit

        random = with_defaults("models", spec)["random"]
        try:
            with torch.device("meta"):  # the preset's architecture, nothing allocated
                return randinit.build(random["preset"], random["overrides"], random["seed"]).config
        except Exception:  # noqa: BLE001 - an unknown preset is reported by the job itself
            return None
    try:
        return AutoConfig.from_pretrained(resolve_source(spec, name), revision=spec.get("revision"), local_files_only=True)
    except Exception:  # noqa: BLE001 - not local: try the shipped architecture
        pass
    return published_config(spec["hub"]) if "hub" in spec else None


def published_config(hub_id: str, **overrides: Any) -> Any | None:
    """The ``transformers`` config of ``MODEL_CONFIGS/<hub_id>/config.json`` with ``overrides``, or
    None when saeprobe ships no architecture for ``hub_id``."""
    from transformers import AutoConfig

    shipped = MODEL_CONFIGS / hub_id / "config.json"
    if not shipped.exists():
        return None
    fields = {k: v for k, v in json.loads(shipped.read_text()).items() if k not in ("architectures", "torch_dtype")}
    return AutoConfig.for_model(**{**fields, **overrides})


def _key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, default=str)


@functools.cache
def _config(spec_json: str, name: str) -> Any | None:
    return sizing_config(json.loads(spec_json), name)


@functools.cache
def _parameters(spec_json: str, name: str, purpose: str) -> int | None:
    cfg = _config(spec_json, name)
    return None if cfg is None else parameter_count(cfg, purpose)


def model_parameters(spec: dict[str, Any], name: str, purpose: str = "base") -> int | None:
    """:func:`parameter_count` of ``models.<name>`` (cached per spec: the DAG asks once per job),
    or None when its config is not readable offline (see :func:`sizing_config`). A GGUF model
    not converted yet (its jobs are planned before ``convert_gguf`` runs) is sized from its GGUF
    file: at most ``bytes × 8 /`` :data:`GGUF_MIN_BITS` parameters."""
    n = _parameters(_key(spec), name, purpose)
    if n is None and ("gguf" in spec or "gguf_package" in spec):
        size = _gguf_bytes(_key(spec))
        return None if size is None else int(size * 8 / GGUF_MIN_BITS)
    return n


def dtype_bytes(dtype: str, device: str) -> int:
    """Bytes per parameter of a compute dtype setting; ``auto`` is bfloat16's 2 on an accelerator
    and float32's 4 on the CPU (the larger of what :func:`saeprobe.models.pick_dtype` may choose)."""
    if dtype == "auto":
        return 2 if on_gpu(device) else 4
    return BYTES.get(dtype, 4)


def model_mem_mb(spec: dict[str, Any], name: str, device: str, purpose: str = "base") -> int:
    """Host memory (MB) of a job that runs ``models.<name>`` (see the module docstring).

    ``spec`` needs the source keys and ``dtype``. Returns :data:`FALLBACK_MB` (with a warning)
    when the model's config cannot be read offline.
    """
    spec = with_defaults("models", spec)
    n = model_parameters(spec, name, purpose)
    if n is None:
        log.warning("models.%s: no config readable offline to size its jobs: mem_mb %d", name, FALLBACK_MB)
        return FALLBACK_MB
    weights = n * dtype_bytes(spec["dtype"], device) / 2**20
    return int(math.ceil(BASE_MB + weights * (1 if on_gpu(device) else 2)))


def gguf_bytes(spec: dict[str, Any]) -> int | None:
    """Size in bytes of the GGUF file of a ``gguf`` / ``gguf_package`` entry, read without
    assembling it: the file's size, or the installed files of the package and of the
    distributions it requires (its chunks); None when it is not there (the job reports it)."""
    import os

    from saeprobe.fingerprint import distribution_files, required_distributions

    if "gguf" in spec:
        try:
            return os.path.getsize(spec["gguf"])
        except OSError:
            return None
    module = spec.get("gguf_package")
    if module is None:
        return None
    files = [f for name in [module, *required_distributions(module)] for f in (distribution_files(name) or [])]
    return sum(os.path.getsize(full) for _, full in files if os.path.isfile(full)) or None


@functools.cache
def _gguf_bytes(spec_json: str) -> int | None:
    return gguf_bytes(json.loads(spec_json))


def gguf_mem_mb(spec: dict[str, Any]) -> int:
    """Host memory (MB) of the ``convert_gguf`` job of a GGUF model: :data:`BASE_MB` + three
    float32 copies of the weights (the dequantized tensors, the model, the serialised file:
    peak RSS 3.3 GB for Gemma 3 270M's 268M parameters, measured), with the parameter count
    bounded by :data:`GGUF_MIN_BITS` bits per weight in the file (Q4_K_M averages ~7.5 on Gemma 3
    270M, whose 262k-token embedding is Q8_0). :data:`FALLBACK_MB` when the size is unknown."""
    size = _gguf_bytes(_key(spec))
    if size is None:
        return FALLBACK_MB
    parameters = size * 8 / GGUF_MIN_BITS
    return int(math.ceil(BASE_MB + 3 * 4 * parameters / 2**20))


def model_runtime_min(spec: dict[str, Any], name: str, device: str, purpose: str = "base") -> int:
    """Time limit (minutes) of a job that runs ``models.<name>``: a budget growing with its size."""
    n = model_parameters(spec, name, purpose)
    billions = 10.0 if n is None else n / 1e9
    per_b = RUNTIME_MIN_PER_B["gpu" if on_gpu(device) else "cpu"]
    return int(min(RUNTIME_MAX_MIN, math.ceil(RUNTIME_BASE_MIN + per_b * billions)))


def model_width(spec: dict[str, Any], name: str) -> int | None:
    """``hidden_size`` of ``models.<name>``'s language model, or None when its config is not readable offline."""
    cfg = _config(_key(spec), name)
    if cfg is None:
        return None
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(text.hidden_size)


def sae_width(spec: dict[str, Any]) -> int:
    """d_sae of a ``saes.<name>`` entry: ``train.width`` (the largest of a sweep), the ``width_<N>k``
    of a Gemma Scope-style ``sae_id`` (the power of two it rounds), else 131,072 (the widest SAE the
    paper uses)."""
    if "train" in spec:
        width = with_defaults("saes", spec)["train"]["width"]
        return int(max(width) if isinstance(width, list) else width)
    match = re.search(r"width_(\d+)([km]?)", str(spec.get("sae_id", spec.get("path", ""))))
    if match:  # Gemma Scope rounds powers of two to thousands: 16k = 16,384, 65k = 65,536, 1m = 2^20
        approx = int(match.group(1)) * {"": 1, "k": 1000, "m": 1000**2}[match.group(2)]
        return 1 << (approx - 1).bit_length()
    return 131072


def sae_mem_mb(sae_spec: dict[str, Any], d_in: int | None, device: str, *, train: bool = False) -> int:
    """Host memory (MB) of an SAE job: :data:`BASE_MB` + the training buffer (training) + the
    SAE's float32 weights ``2 × d_in × d_sae`` (× 4 with gradients and Adam's moments) when they
    live on the CPU. ``d_in`` None (model config not readable): Gemma 2 9B's 3,584."""
    d_in = d_in or 3584
    sae_spec = with_defaults("saes", sae_spec)
    sae_mb = 2 * d_in * sae_width(sae_spec) * 4 / 2**20 * (4 if train else 1)
    buffer_mb = sae_spec["train"]["max_buffer_tokens"] * d_in * 4 / 2**20 if train else 0.0
    return int(math.ceil(BASE_MB + buffer_mb + (0 if on_gpu(device) else sae_mb)))
