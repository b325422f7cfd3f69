"""SAE entries: architectures, sweeps expanded into named SAEs, and per-SAE scope (datasets, stages, grid)."""

import copy

import pytest

from saeprobe import config as sc
from saeprobe import grid as sg
from saeprobe.errors import ConfigError

BASE = {
    "datasets": {"a": {"path": "a.parquet"}, "b": {"path": "b.parquet"}},
    "models": {"m": {"path": "model", "layers": [1]}},
    "saes": {"s": {"model": "m", "train": {"width": 64}}},
    "ksparse": {"datasets": ["a"]},
}


def with_sae(name, spec):
    cfg = copy.deepcopy(BASE)
    cfg["saes"][name] = spec
    return sc.validate(cfg)


def test_lists_expand_into_one_named_sae_each_and_scalars_keep_their_name():
    cfg = with_sae("bt", {"model": "m", "train": {"architecture": "batchtopk", "width": [64, 128], "k": [4, 8]}})
    assert list(cfg["saes"]) == ["s", "bt_w64_k4", "bt_w64_k8", "bt_w128_k4", "bt_w128_k8"]
    assert cfg["saes"]["bt_w128_k8"]["train"]["width"] == 128 and cfg["saes"]["bt_w128_k8"]["train"]["k"] == 8
    assert sc.validate(copy.deepcopy(cfg))["saes"].keys() == cfg["saes"].keys()  # idempotent
    jr = with_sae("jr", {"model": "m", "train": {"architecture": "jumprelu", "width": 64, "l0_coefficient": [0.5, 2]}})
    assert {"jr_w64_l0c0p5", "jr_w64_l0c2"} <= set(jr["saes"])


@pytest.mark.parametrize(("train", "message"), [
    ({"architecture": "topk", "l1_coefficient": [1, 2]}, "does not read l1_coefficient"),
    ({"architecture": "matryoshka_batchtopk", "width": 64}, "needs its nested widths"),
    ({"architecture": "matryoshka_batchtopk", "width": 64, "matryoshka_widths": [32, 16]}, "strictly increasing"),
    ({"architecture": "matryoshka_batchtopk", "width": 64, "matryoshka_widths": [16, 64]}, "below width"),
    ({"architecture": "topk", "width": 64, "matryoshka_widths": [16]}, "only for architecture matryoshka"),
    ({"architecture": "topk", "width": 64, "k": 2.5}, "whole number"),
    ({"architecture": "batchtopk", "width": 8, "k": 16}, "at most width"),
    ({"architecture": "lasso"}, "lasso"),
    ({"architecture": "jumprelu", "l0_coefficient": 0}, "l0_coefficient"),
])
def test_architecture_keys_are_checked(train, message):
    with pytest.raises(ConfigError, match=message):
        with_sae("x", {"model": "m", "train": train})


def test_a_generated_name_that_collides_is_an_error():
    cfg = copy.deepcopy(BASE)
    cfg["saes"]["x_w64_k4"] = {"model": "m", "train": {"width": 64, "k": 4}}
    cfg["saes"]["x"] = {"model": "m", "train": {"width": 64, "k": [4, 8]}}
    with pytest.raises(ConfigError, match="x_w64_k4"):
        sc.validate(cfg)


def test_an_sae_scoped_to_datasets_and_stages_is_probed_only_there():
    cfg = with_sae("arch", {"model": "m", "datasets": ["b"], "stages": ["grid"], "poolings": ["mean"], "binarize": [None],
                            "train": {"architecture": "batchtopk", "width": 64, "k": [4, 8]}})
    plan = sg.Plan(cfg)
    grid = [c for c in plan.stage_cells["grid"] if c.source.startswith("arch")]
    assert {(c.dataset, c.source, c.pooling, c.binarize) for c in grid} == {
        ("b", "arch_w64_k4", "mean", "raw"), ("b", "arch_w64_k8", "mean", "raw")}
    assert not [c for c in plan.stage_cells["ksparse"] if c.source.startswith("arch")]
    assert any(c.source == "s" for c in plan.stage_cells["ksparse"])  # the unscoped SAE still is
    assert sg.sae_train_datasets(cfg, "arch_w64_k4") == ["b"]  # trained where it is probed
    assert "results/sae_quality/arch_w64_k8/layer_1.json" in plan.sae_quality_inputs
    assert "results/tables/saes.parquet" in plan.final_output()
    assert {"sae_frontier", "sae_reconstruction"} <= set(plan.figures)


def test_train_params_hold_only_the_keys_the_architecture_reads():
    cfg = with_sae("jr", {"model": "m", "train": {"architecture": "jumprelu", "width": 64}})
    jr, topk = sg.train_settings(cfg, "jr"), sg.train_settings(cfg, "s")
    assert "l0_coefficient" in jr and "k" not in jr and "l1_coefficient" not in jr
    assert topk["k"] == 32 and "l0_coefficient" not in topk
    # changing what no stage reads (stages) leaves the encode params alone
    other = with_sae("jr", {"model": "m", "stages": ["grid"], "train": {"architecture": "jumprelu", "width": 64}})
    assert sg.encode_settings(other, "jr") == sg.encode_settings(cfg, "jr")


def test_quality_can_be_switched_off():
    cfg = copy.deepcopy(BASE)
    cfg["sae_quality"] = {"enabled": False}
    plan = sg.Plan(sc.validate(cfg))
    assert not plan.sae_quality_inputs and "sae_frontier" not in plan.figures
    assert not any("saes." in f for f in plan.final_output())


def test_sae_attributes_name_every_swept_sae_with_its_architecture_width_and_sparsity():
    cfg = copy.deepcopy(BASE)
    cfg["saes"]["bt"] = {"model": "m", "train": {"architecture": "batchtopk", "width": [64, 128], "k": [4, 8]}}
    cfg["saes"]["jr"] = {"model": "m", "train": {"architecture": "jumprelu", "width": 64, "l0_coefficient": [0.5, 2]}}
    cfg["saes"]["scope"] = {"model": "m", "release": "gemma-scope-2b-pt-res", "sae_id": "layer_1/width_16k/average_l0_71"}
    cfg["saes"]["local"] = {"model": "m", "path": "saes/mine"}
    cfg = sc.validate(cfg)
    attrs = sg.sae_attributes(cfg)
    assert list(attrs) == list(cfg["saes"])
    assert {"bt_w64_k4", "bt_w128_k8", "jr_w64_l0c0p5", "jr_w64_l0c2"} <= set(attrs)
    assert attrs["bt_w128_k8"] == {"sae_architecture": "batchtopk", "sae_width": 128, "sae_k": 8.0, "sae_sparsity": 8.0}
    assert attrs["bt_w64_k4"] == {"sae_architecture": "batchtopk", "sae_width": 64, "sae_k": 4.0, "sae_sparsity": 4.0}
    assert attrs["jr_w64_l0c0p5"] == {"sae_architecture": "jumprelu", "sae_width": 64, "sae_k": None,
                                      "sae_sparsity": 0.5}
    assert attrs["s"]["sae_architecture"] == cfg["saes"]["s"]["train"]["architecture"]
    assert attrs["s"]["sae_width"] == 64
    # Released / local SAEs: nothing is loaded; only a Gemma Scope width_<N>k is read from the id.
    assert attrs["scope"] == {"sae_architecture": None, "sae_width": 16384, "sae_k": None, "sae_sparsity": None}
    assert attrs["local"] == dict.fromkeys(sg.SAE_ATTRIBUTES)
