"""Every stage that loads an SAE checks it against what it will read (saeprobe.sae.load_sae):
the hook point it was trained on (issue 21 T4), finite weights (T5) and its input width (T6).

The workflow scripts (encode_sae, sae_quality, train_sae) are run in-process with a stand-in for
Snakemake's ``snakemake`` object, so the checks are tested through the stages' own entry points.
"""

from __future__ import annotations

import ast
import json
import logging
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
import zarr

from saeprobe import sae as sae_mod
from saeprobe.activations import hook_point
from saeprobe.errors import ConfigError, NonFiniteError
from saeprobe.job import Job
from saeprobe.sae import load_sae, train_sae
from tests.helpers import make_jumprelu, write_dense_store

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"


def _sae_folder(folder: Path, hook: str | None, d_in: int = 32, nan: bool = False) -> Path:
    """A JumpReLU SAE (d_in, 64) saved in SAELens format, recording ``hook`` as its metadata.hook_name."""
    sae = make_jumprelu(d_in, 64)
    if hook is not None:
        sae.cfg.metadata.hook_name = hook
    if nan:  # one encoder column and one decoder row
        with torch.no_grad():
            sae.W_enc[:, 5] = float("nan")
            sae.W_dec[7] = float("nan")
    sae.save_model(folder)
    return folder


def _load(folder: Path, layer: int, convention: str = "block_output", **kwargs):
    return load_sae({"path": str(folder), "model": "tiny"}, layer, "cpu", "mine", d_model=32,
                    layer_convention=convention, **kwargs)


# --------------------------------------------------------------------------- T4: hook point


@pytest.mark.parametrize(("hook", "fits"), [("blocks.3.hook_resid_post", "it fits layer 3"),
                                            ("blocks.1.hook_resid_pre", "it fits layer 0")])
def test_an_sae_for_another_hook_point_is_an_error_naming_both(tmp_path, hook, fits):
    folder = _sae_folder(tmp_path / "sae", hook)
    with pytest.raises(ConfigError) as err:
        _load(folder, 1)
    msg = str(err.value)
    for part in ("saes.mine", str(folder), hook, "blocks.1.hook_resid_post", "layer_convention: block_output", fits,
                 "saes.mine.hook_check: warn"):
        assert part in msg


def test_the_mosaic_convention_reads_the_input_of_the_block(tmp_path):
    """Layer L under mosaic = hidden_states[L] = blocks.L.hook_resid_pre = blocks.{L-1}.hook_resid_post."""
    for hook in ("blocks.1.hook_resid_pre", "blocks.0.hook_resid_post", "language_model.blocks.0.hook_resid_post"):
        _load(_sae_folder(tmp_path / hook, hook), 1, "mosaic")  # no error
    with pytest.raises(ConfigError, match=r"reads blocks\.1\.hook_resid_pre = blocks\.0\.hook_resid_post "
                                          r"\(layer_convention: mosaic\); it fits layer 2"):
        _load(_sae_folder(tmp_path / "post", "blocks.1.hook_resid_post"), 1, "mosaic")
    _load(_sae_folder(tmp_path / "post1", "blocks.1.hook_resid_post"), 1, "block_output")  # no error


def test_a_hook_outside_the_residual_stream_is_a_mismatch(tmp_path):
    with pytest.raises(ConfigError, match="'blocks.1.hook_mlp_out'.*not a residual-stream SAE"):
        _load(_sae_folder(tmp_path / "mlp", "blocks.1.hook_mlp_out"), 1)


def test_hook_check_warn_uses_the_sae_and_says_so(tmp_path, caplog):
    folder = _sae_folder(tmp_path / "sae", "blocks.3.hook_resid_post")
    with caplog.at_level(logging.WARNING, logger="saeprobe"):
        sae = _load(folder, 1, hook_check="warn")
    assert sae.cfg.d_sae == 64
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("blocks.3.hook_resid_post" in m and "hook_check: warn" in m for m in warned)


def test_an_sae_without_a_hook_name_is_used_and_logged(tmp_path, caplog):
    folder = _sae_folder(tmp_path / "sae", None)
    assert "hook_name" not in json.loads((folder / "cfg.json").read_text()).get("metadata", {})
    with caplog.at_level(logging.INFO, logger="saeprobe"):
        _load(folder, 1)
    assert any("records no hook name" in r.getMessage() for r in caplog.records)


def test_gemma_scope_releases_pass(monkeypatch):
    """What SAELens' own Gemma Scope loader records (blocks.L.hook_resid_post) passes at layer L."""
    from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.loading.pretrained_sae_loaders import get_gemma_2_config_from_hf, handle_config_defaulting
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, sae_id = "gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical"
    entry = get_pretrained_saes_directory()[release]
    cfg = get_gemma_2_config_from_hf(entry.repo_id, entry.saes_map[sae_id], "cpu", cfg_overrides={"d_in": 32, "d_sae": 64})
    sae = JumpReLUSAE(JumpReLUSAEConfig.from_dict(handle_config_defaulting(cfg)))
    with torch.no_grad():
        sae.W_enc.normal_()
    assert sae.cfg.metadata.hook_name == "blocks.12.hook_resid_post"
    monkeypatch.setattr(SAE, "from_pretrained", classmethod(lambda cls, *a, **k: sae))
    spec = {"release": release, "sae_id": "layer_{layer}/width_16k/canonical", "model": "gemma"}
    assert load_sae(spec, 12, "cpu", "gs", d_model=32, layer_convention="block_output") is sae
    assert load_sae(spec, 13, "cpu", "gs", d_model=32, layer_convention="mosaic") is sae
    with pytest.raises(ConfigError, match=f"the SAE 'layer_5/width_16k/canonical' of release '{release}' was trained "
                                          "on 'blocks.12.hook_resid_post'"):
        load_sae(spec, 5, "cpu", "gs", d_model=32, layer_convention="block_output")  # the layer-12 SAE given for layer 5


@pytest.mark.parametrize("convention", ["block_output", "mosaic"])
def test_a_trained_sae_records_its_hook_and_passes(tmp_path, convention):
    x = torch.randn(600, 16)
    spec = {"architecture": "topk", "width": 32, "k": 4, "training_tokens": 1024, "batch_size": 128, "lr": 1e-3,
            "heldout_fraction": 0.1}
    train_sae(x, tmp_path / "sae", spec, seed=0, hook_name=sae_mod.resid_hook_name(2, convention))
    recorded = json.loads((tmp_path / "sae" / "cfg.json").read_text())["metadata"]["hook_name"]
    assert recorded == ("blocks.2.hook_resid_post" if convention == "block_output" else "blocks.2.hook_resid_pre")
    spec = {"train": spec, "model": "tiny"}
    load_sae(spec, 2, "cpu", "t", tmp_path / "sae", d_model=16, layer_convention=convention)  # no error
    with pytest.raises(ConfigError, match="trained on 'blocks.2.hook_resid_"):
        load_sae(spec, 1, "cpu", "t", tmp_path / "sae", d_model=16, layer_convention=convention)


# --------------------------------------------------------------------------- T5: finite weights


def test_non_finite_weights_name_the_folder_and_the_tensors(tmp_path):
    folder = _sae_folder(tmp_path / "sae", "blocks.1.hook_resid_post", nan=True)
    with pytest.raises(NonFiniteError) as err:
        _load(folder, 1)
    msg = str(err.value)
    assert str(folder) in msg and "saes.mine" in msg
    assert "W_enc (32 of 2,048 entries)" in msg and "W_dec (32 of 2,048 entries)" in msg
    assert "b_enc" not in msg and "threshold" not in msg


# --------------------------------------------------------------------------- the stages' own entry points


class _Files(list):
    """Snakemake's named input/output lists: positional and by name."""

    def __init__(self, *items, **named):
        super().__init__([*items, *named.values()])
        self.__dict__.update(named)


def _run_script(name: str, monkeypatch, **snake) -> dict:
    """Run ``workflow/scripts/<name>.py`` with a stand-in ``snakemake`` (the job's logging and device set-up
    replaced: it would take over this process's stderr)."""
    monkeypatch.setattr("saeprobe.job.setup",
                        lambda snakemake, dtype=None: Job(logging.getLogger("saeprobe"), 1, torch.device("cpu"), None))
    return runpy.run_path(str(SCRIPTS / f"{name}.py"), init_globals={"snakemake": SimpleNamespace(threads=1, **snake)})


def _store(path: Path, d_model: int, layer: int = 1, convention: str = "block_output", n_docs: int = 6) -> Path:
    rng = np.random.default_rng(0)
    docs = [rng.normal(size=(5, d_model)).astype(np.float32) for _ in range(n_docs)]
    write_dense_store(path, docs, [np.zeros(5, bool)] * n_docs, layer=layer)
    zarr.open_group(str(path), mode="a").attrs.update({"model": "tiny", "d_model": d_model, "layer_convention": convention,
                                                       "hook_point": hook_point(convention)})
    return path


def _data(path: Path, n_docs: int = 6) -> Path:
    pl.DataFrame({"doc_id": np.arange(n_docs), "label": np.arange(n_docs) % 2,
                  "split": ["train", "test"] * (n_docs // 2)}).write_parquet(path)
    return path


def _encode(tmp_path, monkeypatch, folder: Path, d_model: int = 32, hook_check: str = "error") -> Path:
    out = tmp_path / "codes.zarr"
    _run_script("encode_sae", monkeypatch, wildcards=SimpleNamespace(sae="mine", layer="1", model="tiny"),
                params=SimpleNamespace(sae={"model": "tiny", "path": str(folder), "encode_dtype": "float32"},
                                       hook_check=hook_check, runtime={"device": "cpu", "batch_size": 64}),
                input=_Files(activations=str(_store(tmp_path / "acts.zarr", d_model)), data=str(_data(tmp_path / "d.parquet")),
                             sae=str(folder)),
                output=_Files(str(out)), log=_Files(str(tmp_path / "log")))
    return out


def _quality(tmp_path, monkeypatch, folder: Path, d_model: int = 32) -> Path:
    out = tmp_path / "quality.json"
    _run_script("sae_quality", monkeypatch, wildcards=SimpleNamespace(sae="mine", layer="1"),
                params=SimpleNamespace(sae={"model": "tiny", "path": str(folder), "encode_dtype": "float32"},
                                       hook_check="error", model={"dtype": "float32", "kind": "text",
                                                                  "layer_convention": "block_output"},
                                       settings={"max_tokens": 100, "dense_threshold": 0.1, "loss_tokens": 0},
                                       seed=0, datasets=["d"], loss_datasets=[], runtime={"device": "cpu", "token_budget": 64}),
                input=_Files(sae=str(folder), activations=[str(_store(tmp_path / "acts.zarr", d_model))],
                             data=[str(_data(tmp_path / "d.parquet"))], tokens=[], loss_data=[]),
                output=_Files(str(out)), log=_Files(str(tmp_path / "log")))
    return out


def test_encode_sae_stops_on_an_sae_for_another_hook_point(tmp_path, monkeypatch):
    folder = _sae_folder(tmp_path / "sae", "blocks.3.hook_resid_post")
    with pytest.raises(ConfigError, match="trained on 'blocks.3.hook_resid_post', but layer 1 of model 'tiny' reads "
                                          "blocks.1.hook_resid_post"):
        _encode(tmp_path, monkeypatch, folder)
    assert not (tmp_path / "codes.zarr").exists()
    assert _encode(tmp_path, monkeypatch, folder, hook_check="warn").exists()  # downgraded: encoded


def test_sae_quality_stops_on_an_sae_for_another_hook_point(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="trained on 'blocks.1.hook_resid_pre'"):
        _quality(tmp_path, monkeypatch, _sae_folder(tmp_path / "sae", "blocks.1.hook_resid_pre"))


@pytest.mark.parametrize("stage", [_encode, _quality])
def test_every_stage_names_a_width_mismatch(tmp_path, monkeypatch, stage):
    """T6: a d_in 32 SAE on a d_model 64 model: the same one-line error in every stage that loads it."""
    folder = _sae_folder(tmp_path / "sae", "blocks.1.hook_resid_post", d_in=32)
    with pytest.raises(ConfigError, match=r"saes\.mine: the SAE in '.*sae' reads vectors of width d_in=32, but model "
                                          r"'tiny' has d_model=64 at layer 1"):
        stage(tmp_path, monkeypatch, folder, d_model=64)


@pytest.mark.parametrize("stage", [_encode, _quality])
def test_every_stage_names_non_finite_weights(tmp_path, monkeypatch, stage):
    folder = _sae_folder(tmp_path / "sae", "blocks.1.hook_resid_post", nan=True)
    with pytest.raises(NonFiniteError, match=r"the SAE in '.*sae' has NaN or infinite weights in W_dec \(32 of"):
        stage(tmp_path, monkeypatch, folder)


def test_the_stages_pass_a_good_sae(tmp_path, monkeypatch):
    folder = _sae_folder(tmp_path / "sae", "blocks.1.hook_resid_post")
    assert _encode(tmp_path, monkeypatch, folder).exists()
    report = json.loads(_quality(tmp_path, monkeypatch, folder).read_text())
    assert report["width"] == 64 and report["quality"]["n_tokens"] == 15  # 3 held-out documents x 5 tokens


def test_train_sae_script_records_the_hook_the_layer_reads(tmp_path, monkeypatch):
    _store(tmp_path / "acts.zarr", 16, layer=2, convention="mosaic", n_docs=40)
    out = tmp_path / "sae"
    train = {"architecture": "topk", "width": 32, "k": 4, "training_tokens": 256, "batch_size": 32, "lr": 1e-3,
             "heldout_fraction": 0.1, "max_buffer_tokens": 1000}
    _run_script("train_sae", monkeypatch, wildcards=SimpleNamespace(sae="mine", layer="2"),
                params=SimpleNamespace(train=train, seed=0, datasets=["d"], runtime={"device": "cpu"}),
                input=_Files(activations=[str(tmp_path / "acts.zarr")], data=[str(_data(tmp_path / "d.parquet", 40))]),
                output=_Files(str(out)), log=_Files(str(tmp_path / "log")))
    assert json.loads((out / "cfg.json").read_text())["metadata"]["hook_name"] == "blocks.2.hook_resid_pre"
    load_sae({"train": train, "model": "tiny"}, 2, "cpu", "mine", out, d_model=16, layer_convention="mosaic")


def test_every_script_that_loads_an_sae_passes_what_the_checks_need():
    """A future stage that loads an SAE without d_model / layer_convention would skip T4 and T6."""
    callers = []
    for script in sorted(SCRIPTS.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_sae":
                callers.append(script.name)
                assert {"d_model", "layer_convention", "hook_check"} <= {k.arg for k in node.keywords}, script.name
    assert {"encode_sae.py", "sae_quality.py"} <= set(callers)


def test_the_schema_offers_the_hook_checks_the_library_knows():
    from saeprobe.config import load_schema

    key = load_schema()["properties"]["saes"]["additionalProperties"]["properties"]["hook_check"]
    assert key["enum"] == list(sae_mod.HOOK_CHECKS) and key["default"] in sae_mod.HOOK_CHECKS


def test_the_paper_configs_gemma_scope_saes_pass_their_hook_check(caplog):
    """config/paper.yaml: Gemma Scope's layer_L SAEs (blocks.L.hook_resid_post, as SAELens' own loader
    records it) pass on the block-output models; the MOSAIC twins read hidden_states[L], one block
    earlier, on purpose, so they set hook_check: warn and are logged."""
    import yaml
    from sae_lens.loading.pretrained_sae_loaders import get_gemma_2_config_from_hf, handle_config_defaulting
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    from sae_lens.saes.sae import SAEMetadata

    from saeprobe.config import validate

    config = validate(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    directory = get_pretrained_saes_directory()
    checked = 0
    for name, spec in config["saes"].items():
        model = config["models"][spec["model"]]
        for layer in spec.get("layers") or model["layers"]:
            entry = directory[spec["release"]]
            cfg = get_gemma_2_config_from_hf(entry.repo_id, entry.saes_map[spec["sae_id"].format(layer=layer)], "cpu")
            hook = handle_config_defaulting(cfg)["metadata"]["hook_name"]
            sae = SimpleNamespace(cfg=SimpleNamespace(metadata=SAEMetadata(hook_name=hook)))
            caplog.clear()
            sae_mod.check_sae_hook(sae, layer, model["layer_convention"], name, spec["model"], on_mismatch=spec["hook_check"])
            warned = any(r.levelno == logging.WARNING for r in caplog.records)
            assert warned == (model["layer_convention"] == "mosaic"), (name, layer, hook)
            checked += 1
    assert checked >= 30
