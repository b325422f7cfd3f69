"""Helpers shared by the tests (one copy each): the snakemake CLI, config files, the `.test/`
configurations, small slices of the shared data, tiny models and SAEs built in Python, stores.

Import what a test needs, e.g. ``from tests.helpers import DATA, planned, snakemake, write_config``.
Nothing here is a fixture or starts with ``test_`` (pytest would collect it in the importing module).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
STORIES = SHARED / "models" / "stories260K"
SNAKEFILE = ROOT / "Snakefile"
TEST_DIR = ROOT / ".test"  # the configurations run from files: .test/config/*.yaml, their data in .test/data
TEST_CONFIGS = TEST_DIR / "config"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# --------------------------------------------------------------------------- the snakemake CLI


def snakemake_cmd(workdir: Path, *args: str, configfile: str | Path | None = None, cores: int = 2) -> list[str]:
    """The command line the tests run: this interpreter's snakemake on the repository's Snakefile,
    in ``workdir``, with ``configfile`` (default ``workdir/config.yaml``, see :func:`write_config`)."""
    config = Path(configfile) if configfile is not None else Path(workdir) / "config.yaml"
    return [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
            "--configfile", str(config), "--cores", str(cores), "--show-failed-logs", *args]


def snakemake(workdir: Path, *args: str, check: bool = True, configfile: str | Path | None = None,
              timeout: float = 900) -> subprocess.CompletedProcess:
    """Run :func:`snakemake_cmd`; with ``check``, a failure raises with the tail of its output."""
    proc = subprocess.run(snakemake_cmd(workdir, *args, configfile=configfile), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_counts(stdout: str) -> dict[str, int]:
    """Rule -> job count of snakemake's ``Job stats:`` table ({} when there is nothing to be done)."""
    if "Job stats:" not in stdout:
        assert "Nothing to be done" in stdout, stdout[-2000:]
        return {}
    jobs = {}
    for line in stdout.split("Job stats:")[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def planned(workdir: Path, *targets: str, configfile: str | Path | None = None) -> dict[str, int]:
    """Rule -> job count that a dry run plans for ``targets`` (default: ``rule all``); {} when up to date."""
    return job_counts(snakemake(workdir, "-n", *targets, configfile=configfile).stdout)


def list_rules(workdir: Path, configfile: str | Path | None = None) -> list[str]:
    """Every rule of the workflow (``snakemake --list-rules``; the list does not depend on the config)."""
    proc = snakemake(workdir, "--list-rules", configfile=configfile, timeout=300)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


# --------------------------------------------------------------------------- config files


def write_config(workdir: Path, cfg: dict[str, Any], name: str = "config.yaml") -> Path:
    """Write ``cfg`` as ``workdir/name`` (key order kept) and return its path."""
    path = Path(workdir) / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def config_files() -> list[Path]:
    """Every ``.test/config/*.yaml``, sorted."""
    return sorted(TEST_CONFIGS.glob("*.yaml"))


def load_test_config(name: str) -> dict[str, Any]:
    """The ``.test/config/<name>.yaml`` configuration as a dict (not validated: pass a copy to
    saeprobe.config.validate, which fills it in place)."""
    return yaml.safe_load((TEST_CONFIGS / f"{name}.yaml").read_text())


def config_workdir(base: Path) -> Path:
    """A working directory under ``base`` in which the `.test/` configurations' relative paths resolve
    as they do from the repository root: ``.test/...`` (a link to the repository's) and
    ``../shared/...`` (a link to the shared data and models). Results stay under ``base``."""
    base = Path(base)
    workdir = base / "repo"
    workdir.mkdir(parents=True, exist_ok=True)
    for link, target in ((workdir / ".test", TEST_DIR), (base / "shared", SHARED)):
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    return workdir


# --------------------------------------------------------------------------- data


def per_label_slice(frame: pl.DataFrame, sizes: dict[str, int], n_labels: int) -> pl.DataFrame:
    """For each split and its size n: the first ``n // n_labels`` rows of each label (file order)."""
    return pl.concat([frame.filter(pl.col("split") == split).group_by("label", maintain_order=True).head(n // n_labels)
                      for split, n in sizes.items()])


def jailbreak_slice(n_train: int = 60, n_test: int = 30) -> pl.DataFrame:
    """A balanced slice of jailbreak_classification (60 train + 30 test = .test/data's file)."""
    src = pl.read_parquet(DATA / "jailbreak_classification.parquet")
    return per_label_slice(src, {"train": n_train, "test": n_test}, 2)


def multilingual_slice(langs: tuple[str, ...] = ("en", "de", "fr"), n_train: int = 42, n_test: int = 18) -> pl.DataFrame:
    """Per language, a label-balanced slice of tweet_sentiment_multilingual (the defaults = .test/data's file)."""
    src = pl.read_parquet(DATA / "tweet_sentiment_multilingual.parquet")
    return pl.concat([per_label_slice(src.filter(pl.col("lang") == lang), {"train": n_train, "test": n_test}, 3)
                      for lang in langs])


def write_parquet(folder: Path, frame: pl.DataFrame, name: str = "d.parquet") -> str:
    """Write ``frame`` as ``folder/name``; returns the path as a string (what a dataset spec takes)."""
    path = Path(folder) / name
    frame.write_parquet(path)
    return str(path)


def alternating_frame(n: int = 20, **extra: Any) -> pl.DataFrame:
    """``n`` texts ``text number i`` with labels 0, 1, 0, 1, ... (plus ``extra`` columns)."""
    return pl.DataFrame({"text": [f"text number {i}" for i in range(n)], "label": [i % 2 for i in range(n)], **extra})


def random_label_frame(n: int = 200, classes: tuple[str, ...] = ("a", "b", "c"), seed: int = 0) -> pl.DataFrame:
    """``n`` texts ``text i`` with labels drawn (seeded) from ``classes``."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"text": [f"text {i}" for i in range(n)], "label": rng.choice(list(classes), n).tolist()})


# --------------------------------------------------------------------------- tiny models and SAEs


def save_tiny(preset: str, folder: Path, seed: int = 0, tokenizer: Path = STORIES, **overrides: Any) -> Path:
    """A randomly initialised model of ``preset`` (saeprobe.randinit: tiny-gemma2, tiny-llama,
    tiny-paligemma) saved in ``folder`` with stories260K's 512-token tokenizer: the same files the
    workflow's ``init_random_model`` writes for ``random: {preset, seed, overrides}``."""
    from saeprobe import randinit

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return randinit.save(randinit.build(preset, overrides, seed=seed), folder, tokenizer)


def make_jumprelu(d_in: int, d_sae: int, seed: int = 0, threshold: float = 0.05):
    """A JumpReLU SAE built from a config (no download): encoder N(0, 1/sqrt(d_in)), decoder its
    transpose, every threshold ``threshold``."""
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu"))
    with torch.no_grad():
        sae.W_enc.normal_(0, 1 / np.sqrt(d_in))
        sae.W_dec.copy_(sae.W_enc.T)
        sae.threshold.fill_(threshold)
    return sae


def save_jumprelu(folder: Path, d_in: int = 32, d_sae: int = 64, seed: int = 0) -> Path:
    """:func:`make_jumprelu` saved in SAELens format (cfg.json + weights) in ``folder``."""
    make_jumprelu(d_in, d_sae, seed).save_model(Path(folder))
    return Path(folder)


GGUF_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # Gemma's ids 0-4
GGUF_PIECES = ["\u2581"] + list("abcdefghijklmnopqrstuvwxyz") + [".", ",", "?", ":", "\n"] + [
    "\u2581t", "he", "\u2581the", "\u2581a", "in", "an", "\u2581is", "er", "on", "at"]


def write_tiny_gguf(path: Path, seed: int = 0, arch: str = "gemma3", blocks: int = 2, d: int = 64, heads: int = 2,
                    head_dim: int = 32, ffn: int = 128) -> Path:
    """A tiny random GGUF of ``arch`` (default Gemma 3) in llama.cpp's tensor names and metadata keys, as
    Gemma 3 270M's file has them: Q8_0 and Q5_0 weight blocks, F32 norms, the vocabulary of
    :data:`GGUF_SPECIALS` + :data:`GGUF_PIECES` (SentencePiece-style, no byte fallback: other characters
    are ``<unk>``). Deterministic in ``seed`` (the same bytes each time); ~86 KB. Needs the ``gguf`` package."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import TokenType

    rng = np.random.default_rng(seed)
    tokens = GGUF_SPECIALS + GGUF_PIECES
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny {arch} test")
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_block_count(blocks)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(1)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_sliding_window(16)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(GGUF_SPECIALS) + [-float(i) for i in range(len(GGUF_PIECES))])
    w.add_token_types([TokenType.CONTROL] * len(GGUF_SPECIALS) + [TokenType.NORMAL] * len(GGUF_PIECES))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)

    def tensor(name: str, shape: tuple[int, ...], qtype: Q | None = None, scale: float = 0.1) -> None:
        values = (rng.standard_normal(shape) * scale).astype(np.float32)
        if qtype is None:
            w.add_tensor(name, values)
        else:
            w.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)

    tensor("token_embd.weight", (len(tokens), d), Q.Q8_0, 1.0)
    tensor("output_norm.weight", (d,))
    for b in range(blocks):
        p = f"blk.{b}."
        tensor(p + "attn_q.weight", (heads * head_dim, d), Q.Q8_0)
        tensor(p + "attn_k.weight", (head_dim, d), Q.Q5_0)
        tensor(p + "attn_v.weight", (head_dim, d), Q.Q8_0)
        tensor(p + "attn_output.weight", (d, heads * head_dim), Q.Q8_0)
        tensor(p + "attn_q_norm.weight", (head_dim,))
        tensor(p + "attn_k_norm.weight", (head_dim,))
        for norm in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            tensor(p + norm + ".weight", (d,))
        tensor(p + "ffn_gate.weight", (ffn, d), Q.Q8_0)
        tensor(p + "ffn_up.weight", (ffn, d), Q.Q8_0)
        tensor(p + "ffn_down.weight", (d, ffn), Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# --------------------------------------------------------------------------- stores


def write_dense_store(path: Path, docs: list[np.ndarray], special: list[np.ndarray], layer: int = 0,
                      doc_order: list[int] | None = None, dtype: Any = np.float32, chunk: int = 8,
                      compressor: Any = None):
    """Write a dense activation store (as extraction does) from per-document arrays, stored in
    ``doc_order``; returns it opened as a :class:`saeprobe.store.ActivationStore`."""
    import zarr

    from saeprobe.store import ActivationStore, AppendWriter, create_array, write_index

    order = list(doc_order if doc_order is not None else range(len(docs)))
    group = zarr.open_group(str(path), mode="w")
    extra = () if compressor is None else (compressor,)
    w = AppendWriter(create_array(group, f"layer_{layer}", (docs[0].shape[1],), dtype, chunk, *extra))
    s = AppendWriter(create_array(group, "special", (), bool, chunk))
    for d in order:
        w.write(np.asarray(docs[d], dtype=dtype))
        s.write(special[d])
    w.close(), s.close()
    write_index(group, np.concatenate([[0], np.cumsum([len(docs[d]) for d in order])]), np.array(order))
    return ActivationStore(path)
