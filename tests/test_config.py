"""Config validation: defaults filled in, unknown keys and wrong types named."""

import copy

import pytest
import yaml

from saeprobe import config as sc
from saeprobe import grid as sg
from saeprobe.errors import ConfigError
from tests.conftest import ROOT

MINIMAL = {
    "datasets": {"d": {"path": "x.parquet"}},
    "models": {"m": {"path": "model", "layers": [0, 1]}},
    "saes": {"s": {"model": "m", "train": {"width": 64}}},
}


def test_defaults_are_filled():
    cfg = sc.validate(copy.deepcopy(MINIMAL))
    assert cfg["seed"] == 42
    assert cfg["datasets"]["d"]["text_column"] == "text"
    assert cfg["models"]["m"]["layer_convention"] == "block_output"
    assert cfg["saes"]["s"]["train"]["k"] == 32 and cfg["saes"]["s"]["train"]["width"] == 64
    assert cfg["features"]["poolings"] == ["mean", "max", "sum", "last", "top20"]
    assert cfg["probe"]["cv_folds"] == 5


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda c: c.update(probes={}), "unknown key 'probes'"),
        (lambda c: c["models"]["m"].update(layer=[1]), "unknown key 'models.m.layer'"),
        (lambda c: c["models"]["m"].update(layers="two"), "'models.m.layers': 'two' is not of type 'array'"),
        (lambda c: c.update(probe={"cv_folds": "five"}), "'probe.cv_folds': 'five' is not of type 'integer'"),
        (lambda c: c["saes"]["s"].update(model="nope"), "'saes.s.model': unknown model 'nope'"),
        (lambda c: c["saes"]["s"].update(layers=[3]), "'saes.s.layers': layers [3] are not extracted"),
        (lambda c: c["datasets"]["d"].update(hub="x/y"), "'datasets.d' needs exactly one of: path | hub"),
        (lambda c: c.update(features={"poolings": ["median"]}), "'features.poolings.0'"),
    ],
)
def test_errors_name_the_key(patch, message):
    cfg = copy.deepcopy(MINIMAL)
    patch(cfg)
    with pytest.raises(ConfigError) as err:
        sc.validate(cfg)
    assert message in str(err.value)


def test_shipped_configs_are_valid():
    cfg = sc.validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    cells = sg.probe_cells(cfg)
    assert len({c.path for c in cells}) == len(cells)
    assert {c.binarize for c in cells} == {"raw", "gt1"}


def test_binarize_names_roundtrip():
    for t in (None, 0.0, 1.0, 0.25):
        assert sg.parse_binarize(sg.binarize_name(t)) == t


def test_architecture_config_covers_every_architecture():
    from saeprobe.sae import ARCHITECTURES

    cfg = sc.validate(yaml.safe_load((ROOT / "config" / "architectures.yaml").read_text()))
    assert {s["train"]["architecture"] for s in cfg["saes"].values()} == set(ARCHITECTURES)
    default = sc.validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    archs = {s["train"]["architecture"] for n, s in default["saes"].items() if s["model"] == "minilm" and "train" in s}
    assert len(archs) >= 3  # the default run compares at least three architectures (issue 14)
