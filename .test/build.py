"""Rebuild the files of .test/ that the configurations read: data slices, a JumpReLU SAE and a tiny GGUF.

Run from the repository root, with the shared data at ../shared: ``python .test/build.py``.
Deterministic (the same bytes each time). The slices and the SAE are made by tests/helpers.py,
the same helpers the tests use, so a test that builds them in Python gets the same files.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import polars as pl  # noqa: E402

from tests.helpers import (  # noqa: E402
    DATA,
    jailbreak_slice,
    multilingual_slice,
    per_label_slice,
    save_jumprelu,
    write_tiny_gguf,
)


def main() -> int:
    trec = pl.read_parquet(DATA / "trec.parquet").select("text", "label", "split")
    slices = {
        # 60 train + 30 test prompts, 30 + 15 per label (benign, jailbreak).
        "jailbreak_classification.parquet": jailbreak_slice(60, 30),
        # 90 train + 30 test questions, 15 + 5 per coarse class (6 classes).
        "trec.parquet": per_label_slice(trec, {"train": 90, "test": 30}, 6),
        # en, de, fr: 42 train + 18 test tweets each, 14 + 6 per label (negative, neutral, positive).
        "tweet_sentiment_multilingual.parquet": multilingual_slice(("en", "de", "fr"), 42, 18).select(
            "text", "label", "split", "lang"),
    }
    for name, frame in slices.items():
        frame.write_parquet(HERE / "data" / name)
        print(f".test/data/{name}: {frame.height} rows, {(HERE / 'data' / name).stat().st_size} bytes")
    # A JumpReLU SAE for the tiny-gemma2 and tiny-llama presets (d_model 32), SAELens format.
    sae = HERE / "saes" / "jumprelu_d32"
    shutil.rmtree(sae, ignore_errors=True)
    save_jumprelu(sae, d_in=32, d_sae=64, seed=0)
    print(f".test/saes/jumprelu_d32: {sorted(p.name for p in sae.iterdir())}")
    # A tiny random Gemma 3 as a GGUF file (Q8_0/Q5_0 blocks), for the convert_gguf stage.
    gguf = write_tiny_gguf(HERE / "models" / "tiny_gemma3.gguf", seed=0)
    print(f".test/models/tiny_gemma3.gguf: {gguf.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
