"""Randomly initialised models built from a named architecture preset (no download).

Used where real weights cannot be had: tests, benchmarks of the exact Gemma 2 architecture,
and the offline vision path. Weights are drawn with a fixed seed, so the same preset, overrides
and seed give the same files. A tokenizer is copied from a local folder beside the weights
(Gemma's tokenizer is not reachable offline; stories260K's 512-token SentencePiece model fits
the tiny presets' vocabulary).

Presets (:data:`PRESETS`):

- ``tiny-gemma2``: Gemma 2 architecture, 3 blocks, d_model 32 (tests).
- ``tiny-llama``: Llama architecture, 4 blocks, d_model 32, grouped-query attention (tests).
- ``gemma-2-2b``: the exact ``google/gemma-2-2b`` architecture (26 blocks, d_model 2304,
  vocab 256000; Gemma Team 2024, Table 1) — 2.6B parameters, for throughput benchmarks.
- ``tiny-paligemma``: PaliGemma 2 architecture (SigLIP vision tower + linear projector + Gemma 2
  language model; Steiner et al. 2024), 32x32 images in 8x8 patches = 16 image tokens, a
  3-block d_model-32 language model. Its vocabulary (1665) is a 512-token tokenizer + the
  ``<image>`` token (id 512) + the 1152 ``<locNNNN>``/``<segNNN>`` tokens that
  ``PaliGemmaProcessor`` always adds. :func:`save` writes a ``PaliGemmaProcessor``
  (``SiglipImageProcessor`` + the tokenizer) beside the weights, so the folder loads offline
  with ``AutoProcessor`` / ``AutoModel``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from saeprobe.errors import ConfigError, one_line

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def _tiny_gemma2(overrides: dict[str, Any]) -> Any:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(**{
        "vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 256,
        "sliding_window": 16, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, **overrides,
    })
    return Gemma2ForCausalLM(cfg)


def _tiny_llama(overrides: dict[str, Any]) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{
        "vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, **overrides,
    })
    return LlamaForCausalLM(cfg)


def gemma_2_2b_config(**overrides: Any) -> Any:
    """``Gemma2Config`` of google/gemma-2-2b: the published architecture saeprobe ships
    (``saeprobe/model_configs/google/gemma-2-2b/config.json``), with pad/BOS/EOS ids and ``overrides``."""
    from saeprobe.sizing import published_config

    return published_config("google/gemma-2-2b", bos_token_id=2, eos_token_id=1, pad_token_id=0, **overrides)


def _gemma_2_2b(overrides: dict[str, Any]) -> Any:
    from transformers import Gemma2ForCausalLM

    return Gemma2ForCausalLM(gemma_2_2b_config(**overrides))


TINY_TEXT_VOCAB = 512  # stories260K's SentencePiece vocabulary
N_PALIGEMMA_EXTRA_TOKENS = 1024 + 128  # <loc0000>..<loc1023>, <seg000>..<seg127> (PaliGemmaProcessor adds them)


def _tiny_paligemma(overrides: dict[str, Any]) -> Any:
    """PaliGemma 2-style model; ``overrides`` may hold ``vision_config`` / ``text_config`` dicts
    (merged into the preset's) and top-level ``PaliGemmaConfig`` fields."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    vocab = TINY_TEXT_VOCAB + 1 + N_PALIGEMMA_EXTRA_TOKENS
    vision = {
        "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "vision_use_head": False,
        **overrides.pop("vision_config", {}),
    }
    text = {
        "model_type": "gemma2", "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
        "max_position_embeddings": 256, "sliding_window": 16, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, **overrides.pop("text_config", {}),
    }
    cfg = PaliGemmaConfig(**{
        "vision_config": vision, "text_config": text, "image_token_index": TINY_TEXT_VOCAB,
        "vocab_size": text["vocab_size"], "projection_dim": text["hidden_size"], "hidden_size": text["hidden_size"],
        **overrides,
    })
    return PaliGemmaForConditionalGeneration(cfg)


PRESETS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "tiny-gemma2": _tiny_gemma2,
    "tiny-llama": _tiny_llama,
    "gemma-2-2b": _gemma_2_2b,
    "tiny-paligemma": _tiny_paligemma,
}


def build(preset: str, overrides: dict[str, Any] | None = None, seed: int = 0) -> Any:
    """A randomly initialised ``transformers`` model of ``preset`` (weights seeded by ``seed``).

    Raises:
        ConfigError: unknown preset, or ``overrides`` that the preset's config class rejects
            (an unknown field of the wrong type, inconsistent sizes).
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown random-model preset '{preset}' (presets: {', '.join(sorted(PRESETS))})")
    torch.manual_seed(seed)
    try:
        return PRESETS[preset](dict(overrides or {}))
    except Exception as exc:  # noqa: BLE001 - config classes validate in many ways; the overrides are the user's
        if isinstance(exc, MemoryError):
            raise
        raise ConfigError(f"random model preset '{preset}': cannot build it with overrides {overrides}: "
                          f"{one_line(exc)}") from exc


def save(model: Any, folder: str | Path, tokenizer: str | Path | None = None) -> Path:
    """Save ``model`` in Hugging Face format, with the tokenizer files of folder ``tokenizer``.

    A PaliGemma model is saved with a ``PaliGemmaProcessor`` built from that tokenizer
    (:func:`paligemma_processor`) instead of the raw tokenizer files.

    Raises:
        ConfigError: ``tokenizer`` is given but holds none of the tokenizer files; a PaliGemma
            model without a tokenizer, or whose vocabulary does not fit the tokenizer.
    """
    folder = Path(folder)
    model.save_pretrained(folder)
    if getattr(model.config, "model_type", "") == "paligemma":
        if tokenizer is None:
            raise ConfigError("random PaliGemma model: set random.tokenizer (a folder with a tokenizer)")
        paligemma_processor(model.config, tokenizer).save_pretrained(folder)
        return folder
    if tokenizer is not None:
        found = [Path(tokenizer) / n for n in TOKENIZER_FILES if (Path(tokenizer) / n).exists()]
        if not found:
            raise ConfigError(f"random model tokenizer: no tokenizer files ({', '.join(TOKENIZER_FILES)}) in '{tokenizer}'")
        for path in found:
            shutil.copy(path, folder / path.name)
    return folder


def paligemma_processor(config: Any, tokenizer: str | Path) -> Any:
    """A ``PaliGemmaProcessor`` for a PaliGemma ``config``, with the tokenizer of folder ``tokenizer``.

    The image processor is SigLIP's (resize to ``image_size``², rescale 1/255, normalise with
    mean = std = 0.5) with ``image_seq_length`` = (image_size / patch_size)² image tokens; the
    processor adds ``<image>`` (and the location/segmentation tokens) to the tokenizer.

    Raises:
        ConfigError: the tokenizer cannot be loaded, its ``<image>`` id differs from the config's
            ``image_token_index``, or it has more tokens than the language model's vocabulary.
    """
    from transformers import AutoTokenizer, PaliGemmaProcessor, SiglipImageProcessorPil

    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer))
    except Exception as exc:
        raise ConfigError(f"random model tokenizer: could not load a tokenizer from '{tokenizer}': {one_line(exc)}") from exc
    vision = config.vision_config
    side = int(vision.image_size)
    image_processor = SiglipImageProcessorPil(
        size={"height": side, "width": side}, image_seq_length=(side // int(vision.patch_size)) ** 2
    )
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    vocab = int(config.text_config.vocab_size)
    if processor.image_token_id != config.image_token_index or len(processor.tokenizer) > vocab:
        raise ConfigError(
            f"random PaliGemma model: the tokenizer in '{tokenizer}' gives <image> id {processor.image_token_id} and "
            f"{len(processor.tokenizer)} tokens, but the model has image_token_index {config.image_token_index} and "
            f"vocab_size {vocab}; set random.overrides (image_token_index, text_config.vocab_size) to match"
        )
    return processor
