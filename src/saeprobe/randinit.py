"""Randomly initialised models built from a named architecture preset (no download).

Used where real weights cannot be had: tests, benchmarks of the exact Gemma 2 architecture,
and the offline vision path. Weights are drawn with a fixed seed, so the same preset, overrides
and seed give the same files. A tokenizer is copied from a local folder beside the weights
(Gemma's tokenizer is not reachable offline; stories260K's 512-token SentencePiece model fits
the tiny presets' vocabulary).

Presets (:data:`PRESETS`):

- ``tiny-gemma2``: Gemma 2 architecture, 3 blocks, d_model 32 (tests).
- ``gemma-2-2b``: the exact ``google/gemma-2-2b`` architecture (26 blocks, d_model 2304,
  vocab 256000; Gemma Team 2024, Table 1) — 2.6B parameters, for throughput benchmarks.
- ``tiny-paligemma``: PaliGemma architecture (SigLIP vision tower + Gemma language model).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from saeprobe.errors import ConfigError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def _tiny_gemma2(overrides: dict[str, Any]) -> Any:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(**{
        "vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 256,
        "sliding_window": 16, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, **overrides,
    })
    return Gemma2ForCausalLM(cfg)


def gemma_2_2b_config(**overrides: Any) -> Any:
    """``Gemma2Config`` of google/gemma-2-2b (values of its published config.json)."""
    from transformers import Gemma2Config

    return Gemma2Config(**{
        "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 8192,
        "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256, "sliding_window": 4096,
        "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, **overrides,
    })


def _gemma_2_2b(overrides: dict[str, Any]) -> Any:
    from transformers import Gemma2ForCausalLM

    return Gemma2ForCausalLM(gemma_2_2b_config(**overrides))


PRESETS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "tiny-gemma2": _tiny_gemma2,
    "gemma-2-2b": _gemma_2_2b,
}


def build(preset: str, overrides: dict[str, Any] | None = None, seed: int = 0) -> Any:
    """A randomly initialised ``transformers`` model of ``preset`` (weights seeded by ``seed``).

    Raises:
        ConfigError: unknown preset.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown random-model preset '{preset}' (presets: {', '.join(sorted(PRESETS))})")
    torch.manual_seed(seed)
    return PRESETS[preset](dict(overrides or {}))


def save(model: Any, folder: str | Path, tokenizer: str | Path | None = None) -> Path:
    """Save ``model`` in Hugging Face format, with the tokenizer files of folder ``tokenizer``.

    Raises:
        ConfigError: ``tokenizer`` is given but holds none of the tokenizer files.
    """
    folder = Path(folder)
    model.save_pretrained(folder)
    if tokenizer is not None:
        found = [Path(tokenizer) / n for n in TOKENIZER_FILES if (Path(tokenizer) / n).exists()]
        if not found:
            raise ConfigError(f"random model tokenizer: no tokenizer files ({', '.join(TOKENIZER_FILES)}) in '{tokenizer}'")
        for path in found:
            shutil.copy(path, folder / path.name)
    return folder
