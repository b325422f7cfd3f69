"""A STAND-IN for the Hugging Face hub: a local Hugging Face cache holding tiny random models, a few
rows of each dataset and stand-in SAEs, under the exact repository ids that config/paper.yaml and
config/gemma-scope-2.yaml name. Nothing in it is the hub's content: every weight is random (or zero),
the texts are a handful of rows, and every number a run computes from it says nothing about Gemma,
Gemma Scope or the paper. It exists so that the hub path — ``from_pretrained`` on hub ids,
``load_dataset`` on dataset ids, ``SAE.from_pretrained`` on SAELens releases — runs end to end with
``HF_HUB_OFFLINE=1`` and no network.

The cache layout is huggingface_hub's (``HF_HUB_CACHE``; what ``hf_hub_download`` and
``snapshot_download`` read offline)::

    <cache>/models--google--gemma-2-2b/refs/main                       40-hex commit id
    <cache>/models--google--gemma-2-2b/snapshots/<commit>/<file>       relative symlink to ../../blobs/<sha256>
    <cache>/models--google--gemma-2-2b/blobs/<sha256>                  the file's bytes
    <cache>/datasets--<org>--<name>/...                                the same for dataset repositories
    <cache>/datasets--<org>--<name>/refs/refs/convert/parquet          another revision (the Parquet export branch)

Commit ids are made up (SHA-1 of the repository id and revision). What each repository mimics:

Models (``save_pretrained`` of random models of the real architecture classes, bfloat16 weights in
``model-0000N-of-0000M.safetensors`` shards with ``model.safetensors.index.json``, as the real
multi-file checkpoints; the tokenizer is stories260K's 512-token SentencePiece model, as in
tests/conftest.py, since no Gemma tokenizer is reachable offline):

- ``google/gemma-2-2b``, ``google/gemma-2-9b``, ``google/gemma-2-9b-it``: ``Gemma2ForCausalLM`` with
  the real residual widths (2,304; 3,584) — the Gemma Scope SAEs' loader fixes their input width by
  repository (see below) — and as many blocks as the deepest layer config/paper.yaml names needs
  (20 for layer 19, 32 for layer 31; the real models have 26 and 42), but one 16-wide attention head
  and a 16-wide MLP per block, and a 512-token vocabulary.
- ``google/paligemma2-3b-pt-224``: ``PaliGemmaForConditionalGeneration`` (saeprobe.randinit's
  ``tiny-paligemma`` preset) with a Gemma 2 language model of the real width (d_model 2,304; 20
  blocks, for layer 19), a 2-block SigLIP tower on 224x224 images in 14x14 patches (256 image tokens, as
  the real 224 model) and a ``PaliGemmaProcessor``.
- ``google/gemma-3-270m``: ``Gemma3ForCausalLM`` (``Gemma3TextConfig``, model_type ``gemma3_text``,
  as the real model) with its 18 blocks and d_model 640, tiny heads and MLP, a 512-token vocabulary.

Datasets (the files and columns each repository serves; the rows are stand-ins, jailbreak prompts
and tweets are real rows of ../shared/data's copies of the same sources):

- ``Anthropic/election_questions``: CSV files at the root, no ``configs`` in its README:
  ``harmlessness_eval.csv`` and ``persuasion_targeting_eval.csv`` (``question``, ``label`` =
  Harmless/Harmful) — ``datasets`` puts both in split ``test`` ("eval" in their names) — and
  ``eu_accuracy_questions.csv`` (unlabelled questions; no split keyword, so not loaded).
- ``AIM-Harvard/reject_prompts``: one CSV at the root named ``sae_features - Sheet2.csv`` (``text``,
  ``label``), loaded as split ``train``.
- ``jackhhao/jailbreak-classification``: CSVs (``prompt``, ``type`` = benign/jailbreak) under
  ``balanced/`` and ``default/``; the README's ``configs`` maps train/test to the two balanced files.
- ``textdetox/multilingual_toxicity_dataset``: Parquet ``data/<lang>-00000-of-00001.parquet``
  (``text``, ``toxic`` int64), one split per language through the README's ``configs``.
- ``cardiffnlp/tweet_sentiment_multilingual``: ``main`` holds a dataset loading script (a stand-in
  file here), ``data/<language>/{train,validation,test}.jsonl`` and a README whose ``configs`` is the
  old list of names — ``datasets`` 4 and later refuse it ("Dataset scripts are no longer supported").
  The Hub's Parquet export, revision ``refs/convert/parquet``, holds ``<language>/<split>/0000.parquet``
  (``text``, ``label`` as ClassLabel negative/neutral/positive) for the 8 languages and ``all``.
- ``uoft-cs/cifar100``: Parquet ``cifar100/{train,test}-00000-of-00001.parquet`` with ``img``
  (Image), ``fine_label`` and ``coarse_label`` (ClassLabel), config ``cifar100`` in the README.

SAEs (SAELens' registry, ``pretrained_saes.yaml``, maps each release and id to a repository and
folder; the files are in the format its loader reads):

- Gemma Scope (``gemma-scope-2b-pt-res-canonical`` -> google/gemma-scope-2b-pt-res, and the 9B pt/it
  releases; loader ``gemma_2``): ``<folder>/params.npz`` with ``W_enc`` (d_in, d_sae), ``W_dec``,
  ``b_enc``, ``b_dec``, ``threshold``. That loader takes d_in from the repository id (2,304 or 3,584)
  and d_sae from ``width_<W>`` in the folder, so these stand-ins have the real shapes (16k = 16,384
  latents): 64 random latents, the rest zero and never firing, written to a compressed npz.
- Gemma Scope 2 (``gemma-scope-2-270m-pt-res`` -> google/gemma-scope-2-270m-pt; loader ``gemma_3``):
  ``resid_post/layer_<L>_width_<W>_l0_<size>/config.json`` (the real keys: ``width``, ``model_name``,
  ``architecture`` jump_relu, ``l0``, ``hf_hook_point_in``/``out``, ``type``) and ``params.safetensors``
  (float32 ``w_enc`` (d_in, d_sae), ``w_dec``, ``b_enc``, ``b_dec``, ``threshold``). That loader reads
  the shapes from the file, so the stand-ins are narrow: :data:`GS2_WIDTHS` latents, not 16k/65k.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from tests.helpers import DATA, STORIES

# The stand-in width of each Gemma Scope 2 width name (the gemma_3 loader reads the shapes from the file).
GS2_WIDTHS = {"16k": 64, "65k": 128}
GEMMA_SCOPE_ACTIVE = 64  # Gemma Scope stand-ins: latents with random weights; the others are zero
TWEET_LANGUAGES = ("arabic", "english", "french", "german", "hindi", "italian", "portuguese", "spanish")
TWEET_LABELS = ("negative", "neutral", "positive")
TOXICITY_LANGUAGES = ("en", "ru", "uk", "de", "es", "am", "zh", "ar", "hi")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
CIFAR100_COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals trees "
    "vehicles_1 vehicles_2"
).split()

Files = dict[str, "bytes | Path"]


# --------------------------------------------------------------------------- the cache layout


def commit_id(repo_type: str, repo_id: str, revision: str = "main") -> str:
    """A made-up, stable 40-hex commit id for a stand-in repository revision."""
    return hashlib.sha1(f"saeprobe stand-in {repo_type}:{repo_id}@{revision}".encode()).hexdigest()


def repo_folder(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    return Path(cache) / "--".join([f"{repo_type}s", *repo_id.split("/")])


def put_repo(cache: Path, repo_id: str, files: Files, repo_type: str = "model", revision: str = "main") -> Path:
    """Write ``files`` (path in the repository -> bytes or a local file) as one revision of a repository in
    huggingface_hub's cache layout: blobs named by content hash, the snapshot's files relative symlinks to
    them, ``refs/<revision>`` the commit. Returns the snapshot folder."""
    root = repo_folder(cache, repo_id, repo_type)
    commit = commit_id(repo_type, repo_id, revision)
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref = root / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return snapshot


def folder_files(folder: Path) -> Files:
    """Every file under ``folder``, keyed by its path relative to it."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- models


def _tiny_sizes() -> dict[str, Any]:
    """One 16-wide head and a 16-wide MLP per block; stories260K's vocabulary and special-token ids."""
    return {"vocab_size": 512, "intermediate_size": 16, "num_attention_heads": 1, "num_key_value_heads": 1,
            "head_dim": 16, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def _saved(model: Any, staging: Path, tokenizer: bool = True) -> Files:
    import torch

    staging.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(staging, max_shard_size="16MB")
    if tokenizer:
        for name in TOKENIZER_FILES:
            shutil.copy(STORIES / name, staging / name)
    return folder_files(staging)


def gemma2(hidden: int, blocks: int, seed: int) -> Any:
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    cfg = Gemma2Config(hidden_size=hidden, num_hidden_layers=blocks, max_position_embeddings=8192,
                       sliding_window=4096, **_tiny_sizes())
    return Gemma2ForCausalLM(cfg)


def gemma3(seed: int) -> Any:
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(hidden_size=640, num_hidden_layers=18, max_position_embeddings=32768,
                           sliding_window=512, **_tiny_sizes())
    return Gemma3ForCausalLM(cfg)


def paligemma2(staging: Path, seed: int) -> Files:
    from saeprobe import randinit

    text = {"hidden_size": 2304, "num_hidden_layers": 20, "max_position_embeddings": 8192, "sliding_window": 4096,
            **{k: v for k, v in _tiny_sizes().items() if k not in ("vocab_size",)}}
    model = randinit.build("tiny-paligemma", {"text_config": text, "vision_config": {
        "image_size": 224, "patch_size": 14, "hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 1}}, seed=seed)
    import torch

    staging.mkdir(parents=True, exist_ok=True)
    randinit.save(model.to(torch.bfloat16), staging, tokenizer=STORIES)
    return folder_files(staging)


MODELS = {  # hub id -> builder of its stand-in (seeded)
    "google/gemma-2-2b": (lambda: gemma2(2304, 20, 0)),
    "google/gemma-2-9b": (lambda: gemma2(3584, 32, 1)),
    "google/gemma-2-9b-it": (lambda: gemma2(3584, 32, 2)),
    "google/gemma-3-270m": (lambda: gemma3(3)),
}
VISION_MODELS = {"google/paligemma2-3b-pt-224": 4}


def build_models(cache: Path, staging: Path, repos: Iterable[str] | None = None) -> dict[str, Path]:
    """Write the stand-in models (all of :data:`MODELS` and :data:`VISION_MODELS`, or ``repos``)."""
    out = {}
    for repo in repos or [*MODELS, *VISION_MODELS]:
        where = staging / repo.replace("/", "--")
        files = paligemma2(where, VISION_MODELS[repo]) if repo in VISION_MODELS else _saved(MODELS[repo](), where)
        out[repo] = put_repo(cache, repo, files)
    return out


# --------------------------------------------------------------------------- datasets


def _csv(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_csv(buf)
    return buf.getvalue()


def _parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def _hf_parquet(columns: dict[str, list[Any]], features: Any) -> bytes:
    """Parquet written by ``datasets`` (its schema metadata carries the features, e.g. ClassLabel names)."""
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "part.parquet"
        datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
        return path.read_bytes()


def _readme(meta: dict[str, Any], body: str = "") -> bytes:
    return ("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body).encode()


def _short(frame: pl.DataFrame, column: str = "text", max_chars: int = 240) -> pl.DataFrame:
    return frame.filter(pl.col(column).str.len_chars() <= max_chars)


def election_questions(n: int = 8) -> Files:
    topics = ["voter registration", "mail-in ballots", "polling hours", "campaign finance", "recounts",
              "election observers", "voter ID rules", "early voting", "ballot design", "turnout"]
    rows = lambda kind, harmful: pl.DataFrame({  # noqa: E731
        "question": [f"[stand-in {kind}] {'How could someone disrupt' if harmful else 'How does'} {t} work"
                     f"{' to stop people voting' if harmful else ' in my state'}?" for t in (topics * 2)[:n]],
        "label": ["Harmful" if harmful else "Harmless"] * n})
    return {
        "README.md": _readme({"license": "cc-by-nc-sa-4.0", "language": ["en"], "size_categories": ["1K<n<10K"]},
                             "# Election Evaluations Dataset (saeprobe test stand-in)\n"),
        "harmlessness_eval.csv": _csv(pl.concat([rows("harmlessness", False), rows("harmlessness", True)])),
        "persuasion_targeting_eval.csv": _csv(pl.concat([rows("persuasion", False), rows("persuasion", True)])),
        "eu_accuracy_questions.csv": _csv(pl.DataFrame({"question": ["[stand-in] When is the EU election?"]})),
    }


def reject_prompts(n: int = 16) -> Files:
    asks = ["a poem about spring", "a recipe for bread", "directions to the museum", "a summary of a novel"]
    bad = ["instructions to pick a lock", "a way to cheat on a test", "a fake doctor's note", "a phishing email"]
    frame = pl.DataFrame({
        "text": [f"[stand-in] Please write {a}." for a in (asks * n)[:n]]
        + [f"[stand-in] Please write {b}." for b in (bad * n)[:n]],
        "label": [0] * n + [1] * n})
    return {"README.md": _readme({"license": "apache-2.0", "language": ["en"]}),
            "sae_features - Sheet2.csv": _csv(frame)}


def jailbreak_classification(n_train: int = 8, n_test: int = 12) -> Files:
    src = _short(pl.read_parquet(DATA / "jailbreak_classification.parquet"), max_chars=300)

    def take(split: str, n: int) -> pl.DataFrame:
        part = src.filter(pl.col("split") == split).group_by("label", maintain_order=True).head(n)
        return part.select(pl.col("text").alias("prompt"), pl.col("label").alias("type"))

    train, test = take("train", n_train), take("test", n_test)
    readme = _readme({
        "license": "apache-2.0", "task_categories": ["text-classification"], "language": ["en"],
        "tags": ["jailbreak", "security", "moderation"], "pretty_name": "Jailbreak Classification",
        "size_categories": ["10K<n<100K"],
        "configs": [{"config_name": "default", "data_files": [
            {"split": "train", "path": "balanced/jailbreak_dataset_train_balanced.csv"},
            {"split": "test", "path": "balanced/jailbreak_dataset_test_balanced.csv"}]}],
    }, "# Jailbreak Classification (saeprobe test stand-in)\n")
    return {"README.md": readme,
            "balanced/jailbreak_dataset_train_balanced.csv": _csv(train),
            "balanced/jailbreak_dataset_test_balanced.csv": _csv(test),
            "balanced/jailbreak_dataset_full_balanced.csv": _csv(pl.concat([train, test])),
            "default/jailbreak_dataset_train.csv": _csv(train),
            "default/jailbreak_dataset_test.csv": _csv(test),
            "default/jailbreak_dataset_full.csv": _csv(pl.concat([train, test]))}


def multilingual_toxicity(n: int = 8) -> Files:
    files: Files = {}
    for lang in TOXICITY_LANGUAGES:
        frame = pl.DataFrame({
            "text": [f"[stand-in {lang}] a kind remark number {i}" for i in range(n)]
            + [f"[stand-in {lang}] a rude insult number {i}" for i in range(n)],
            "toxic": [0] * n + [1] * n})
        files[f"data/{lang}-00000-of-00001.parquet"] = _parquet(frame)
    files["README.md"] = _readme({
        "language": list(TOXICITY_LANGUAGES), "license": "openrail++", "size_categories": ["10K<n<100K"],
        "task_categories": ["text-classification"],
        "dataset_info": {"features": [{"name": "text", "dtype": "string"}, {"name": "toxic", "dtype": "int64"}],
                         "splits": [{"name": lang, "num_bytes": len(files[f"data/{lang}-00000-of-00001.parquet"]),
                                     "num_examples": 2 * n} for lang in TOXICITY_LANGUAGES]},
        "configs": [{"config_name": "default",
                     "data_files": [{"split": lang, "path": f"data/{lang}-*"} for lang in TOXICITY_LANGUAGES]}],
    })
    return files


def _tweets(per_class: dict[str, int]) -> dict[str, dict[str, pl.DataFrame]]:
    """Real rows of ../shared/data's copy of the same benchmark: language -> split -> (text, label)."""
    src = pl.read_parquet(DATA / "tweet_sentiment_multilingual.parquet")
    out: dict[str, dict[str, pl.DataFrame]] = {}
    for language in TWEET_LANGUAGES:
        out[language] = {}
        for split, n in per_class.items():
            part = src.filter((pl.col("language") == language) & (pl.col("split") == split))
            part = _short(part, max_chars=200).sort("text").group_by("label", maintain_order=True).head(n)
            out[language][split] = part.sort("label").select("text", "label")
    return out


def tweet_sentiment_multilingual(per_class: dict[str, int] | None = None) -> tuple[Files, Files]:
    """(main, refs/convert/parquet) of cardiffnlp/tweet_sentiment_multilingual."""
    import datasets

    tweets = _tweets(per_class or {"train": 5, "validation": 1, "test": 3})
    main: Files = {
        "README.md": _readme({
            "language": ["en", "ar", "fr", "de", "hi", "it", "pt", "es"], "multilinguality": ["multilingual"],
            "size_categories": ["10K<n<100K"], "task_categories": ["text-classification"],
            "task_ids": ["sentiment-classification"], "pretty_name": "Tweet Sentiment Multilingual",
            "configs": [*TWEET_LANGUAGES, "all"]}),
        "tweet_sentiment_multilingual.py": (b"# saeprobe test stand-in for the repository's dataset loading script "
                                            b"(datasets >= 4 refuses any *.py loading script)\n"),
    }
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(TWEET_LABELS))})
    export: Files = {}
    for language, splits in tweets.items():
        for split, frame in splits.items():
            lines = [json.dumps({"text": t, "label": int(y)}, ensure_ascii=False) for t, y in frame.iter_rows()]
            main[f"data/{language}/{split}.jsonl"] = ("\n".join(lines) + "\n").encode()
            export[f"{language}/{split}/0000.parquet"] = _hf_parquet(frame.to_dict(as_series=False), features)
    for split in ("train", "validation", "test"):
        both = pl.concat([tweets[lang][split] for lang in TWEET_LANGUAGES])
        export[f"all/{split}/0000.parquet"] = _hf_parquet(both.to_dict(as_series=False), features)
    return main, export


def cifar100(per_class: int = 4, classes: int = 3) -> Files:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=CIFAR100_FINE),
                                  "coarse_label": datasets.ClassLabel(names=CIFAR100_COARSE)})
    files: Files = {}
    for split, n in (("train", per_class), ("test", max(1, per_class // 2))):
        imgs, fine, coarse = [], [], []
        for label in range(classes):
            for _ in range(n):
                pixels = (rng.random((32, 32, 3)) * 80 + 60 * label).clip(0, 255).astype(np.uint8)
                imgs.append(Image.fromarray(pixels))
                fine.append(label)
                coarse.append(label % len(CIFAR100_COARSE))
        files[f"cifar100/{split}-00000-of-00001.parquet"] = _hf_parquet(
            {"img": imgs, "fine_label": fine, "coarse_label": coarse}, features)
    files["README.md"] = _readme({
        "annotations_creators": ["crowdsourced"], "language": ["en"], "license": ["unknown"],
        "pretty_name": "Cifar100", "task_categories": ["image-classification"],
        "configs": [{"config_name": "cifar100", "data_files": [
            {"split": "train", "path": "cifar100/train-*"}, {"split": "test", "path": "cifar100/test-*"}],
            "default": True}]})
    return files


def build_datasets(cache: Path) -> dict[str, Path]:
    """Write every hub dataset config/paper.yaml names (config/gemma-scope-2.yaml names only local files)."""
    main, export = tweet_sentiment_multilingual()
    out = {
        "Anthropic/election_questions": put_repo(cache, "Anthropic/election_questions", election_questions(), "dataset"),
        "AIM-Harvard/reject_prompts": put_repo(cache, "AIM-Harvard/reject_prompts", reject_prompts(), "dataset"),
        "jackhhao/jailbreak-classification": put_repo(cache, "jackhhao/jailbreak-classification",
                                                      jailbreak_classification(), "dataset"),
        "textdetox/multilingual_toxicity_dataset": put_repo(cache, "textdetox/multilingual_toxicity_dataset",
                                                            multilingual_toxicity(), "dataset"),
        "cardiffnlp/tweet_sentiment_multilingual": put_repo(cache, "cardiffnlp/tweet_sentiment_multilingual", main,
                                                            "dataset"),
        "uoft-cs/cifar100": put_repo(cache, "uoft-cs/cifar100", cifar100(), "dataset"),
    }
    put_repo(cache, "cardiffnlp/tweet_sentiment_multilingual", export, "dataset", revision="refs/convert/parquet")
    return out


# --------------------------------------------------------------------------- SAEs


def saelens_directory() -> dict[str, Any]:
    """SAELens' pretrained-SAE registry (the installed ``pretrained_saes.yaml``), parsed without importing sae_lens."""
    from saeprobe.fingerprint import saelens_directory_file

    path = saelens_directory_file()
    assert path is not None and path.exists(), "sae_lens' pretrained_saes.yaml not found"
    with path.open() as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def sae_location(directory: dict[str, Any], release: str, sae_id: str) -> tuple[str, str, str]:
    """(repo_id, folder, loader) of ``sae_id`` in ``release``, as SAELens maps them."""
    entry = directory[release]
    folder = next(s["path"] for s in entry["saes"] if s["id"] == sae_id)
    return entry["repo_id"], folder, entry["conversion_func"]


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def gemma_scope_npz(d_in: int, d_sae: int, seed: int, active: int = GEMMA_SCOPE_ACTIVE) -> bytes:
    """A Gemma Scope ``params.npz`` (float32 W_enc (d_in, d_sae), W_dec (d_sae, d_in), b_enc, b_dec,
    threshold) in which latents ``active`` and up have zero weights and never fire. Streamed into a
    deflated zip row by row, so the full zero matrices never exist in memory."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((d_in, active)) / np.sqrt(d_in)).astype(np.float32)
    threshold = np.full(d_sae, 1e6, np.float32)  # zero latents: pre-activation 0 < threshold, never fire
    threshold[:active] = 0.5
    buf = io.BytesIO()
    zero_row = np.zeros(d_sae - active, np.float32).tobytes()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("W_enc.npy", "w", force_zip64=True) as fh:
            fh.write(_npy_header((d_in, d_sae)))
            for row in w:
                fh.write(row.tobytes() + zero_row)
        with zf.open("W_dec.npy", "w", force_zip64=True) as fh:
            fh.write(_npy_header((d_sae, d_in)))
            fh.write(np.ascontiguousarray(w.T).tobytes())
            zeros = np.zeros((1024, d_in), np.float32).tobytes()
            left = d_sae - active
            while left > 0:
                k = min(left, 1024)
                fh.write(zeros[: k * d_in * 4])
                left -= k
        for name, arr in (("b_enc", np.zeros(d_sae, np.float32)), ("b_dec", np.zeros(d_in, np.float32)),
                          ("threshold", threshold)):
            with zf.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, arr)
    return buf.getvalue()


def gemma_scope_2_files(layer: int, d_in: int, d_sae: int, l0: int, seed: int) -> dict[str, bytes]:
    """A Gemma Scope 2 ``config.json`` and ``params.safetensors`` (float32, lower-case keys)."""
    import torch
    from safetensors.torch import save

    gen = torch.Generator().manual_seed(seed)
    w_enc = torch.randn(d_in, d_sae, generator=gen) / d_in**0.5
    tensors = {"w_enc": w_enc, "w_dec": w_enc.T.contiguous(), "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(d_in),
               "threshold": torch.full((d_sae,), 0.5)}
    config = {"width": d_sae, "model_name": "google/gemma-3-270m-pt", "architecture": "jump_relu", "l0": l0,
              "affine_connection": False, "hf_hook_point_in": f"model.layers.{layer}.output",
              "hf_hook_point_out": f"model.layers.{layer}.output", "type": "sae"}
    return {"config.json": json.dumps(config).encode(), "params.safetensors": save(tensors)}


MODEL_WIDTH = {"gemma-2-2b": 2304, "gemma-2-9b": 3584, "gemma-2-9b-it": 3584, "google/gemma-3-270m": 640}
WIDTHS = {"16k": 16384, "32k": 32768, "65k": 65536, "131k": 131072}


def build_saes(cache: Path, saes: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Write the stand-in of each (release, sae_id) into its release's repository (one commit per repository).

    Returns (release, sae_id) -> the folder written."""
    import re

    directory = saelens_directory()
    repos: dict[str, Files] = {}
    written: dict[tuple[str, str], str] = {}
    npz_cache: dict[tuple[int, int], bytes] = {}
    for release, sae_id in saes:
        repo, folder, loader = sae_location(directory, release, sae_id)
        d_in = MODEL_WIDTH[directory[release]["model"]]
        width = re.search(r"width_(\d+[km])", folder).group(1)
        layer = int(re.search(r"layer_(\d+)", folder).group(1))
        files = repos.setdefault(repo, {})
        if loader == "gemma_2":
            key = (d_in, WIDTHS[width])
            if key not in npz_cache:
                npz_cache[key] = gemma_scope_npz(d_in, WIDTHS[width], seed=len(npz_cache))
            files[f"{folder}/params.npz"] = npz_cache[key]
        elif loader == "gemma_3":
            l0 = next(s.get("l0", 0) for s in directory[release]["saes"] if s["id"] == sae_id)
            for name, data in gemma_scope_2_files(layer, d_in, GS2_WIDTHS[width], l0, seed=layer).items():
                files[f"{folder}/{name}"] = data
        else:
            raise ValueError(f"no stand-in for SAELens loader {loader!r} ({release})")
        written[(release, sae_id)] = folder
    for repo, files in repos.items():
        put_repo(cache, repo, files)
    return written


def build(cache: Path, saes: Iterable[tuple[str, str]], models: Iterable[str] | None = None) -> None:
    """The whole stand-in hub in ``cache`` (an ``HF_HUB_CACHE`` folder): models, datasets and ``saes``."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        build_models(cache, Path(staging), models)
    build_datasets(cache)
    build_saes(cache, saes)
