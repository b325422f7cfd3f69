"""Shared fixtures: tiny randomly initialised models and SAEs, and paths to the real data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
STORIES = SHARED / "models" / "stories260K"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]


def _save_tiny(model_cls, cfg, folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = model_cls(cfg)
    model.save_pretrained(folder)
    # No Gemma tokenizer is reachable offline: reuse stories260K's 512-token SentencePiece
    # tokenizer (BOS=1), which matches the tiny models' vocab size.
    for name in TOKENIZER_FILES:
        shutil.copy(STORIES / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_gemma2(tmp_path_factory) -> Path:
    """A randomly initialised Gemma 2-architecture causal LM (3 blocks, d_model=32), saved to disk."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=256, sliding_window=16,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return _save_tiny(Gemma2ForCausalLM, cfg, tmp_path_factory.mktemp("tiny_gemma2"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return _save_tiny(LlamaForCausalLM, cfg, tmp_path_factory.mktemp("tiny_llama"))


def make_jumprelu(d_in: int, d_sae: int, seed: int = 0):
    """A JumpReLU SAE built from a config (no download), with small positive thresholds."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu"))
    with torch.no_grad():
        sae.W_enc.normal_(0, 1 / np.sqrt(d_in))
        sae.W_dec.copy_(sae.W_enc.T)
        sae.threshold.fill_(0.05)
    return sae


@pytest.fixture(scope="session")
def jumprelu_dir(tmp_path_factory) -> Path:
    """A JumpReLU SAE (d_in=32, d_sae=64) saved in SAELens format."""
    folder = tmp_path_factory.mktemp("jumprelu")
    make_jumprelu(32, 64).save_model(folder)
    return folder
