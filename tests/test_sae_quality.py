"""SAE quality: dense fraction, the spliced downstream loss (SAEBench core), the saes table."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from saeprobe.sae_quality import SAES_SCHEMA, firing_fractions, reconstruction, sae_table, spliced_loss
from tests.helpers import make_jumprelu


class Identity(torch.nn.Module):
    """An "SAE" whose reconstruction is exact."""

    def encode(self, x):
        return x

    def decode(self, c):
        return c


class Zero(Identity):
    """An "SAE" that reconstructs every vector as 0 (the zero-ablation itself)."""

    def decode(self, c):
        return torch.zeros_like(c)


class Scaled(Identity):
    def decode(self, c):
        return 0.5 * c


@pytest.fixture(scope="module")
def lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def docs(n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(1, 64, size=int(rng.integers(5, 20)))
        out.append((ids, np.eye(1, len(ids), 0, dtype=bool)[0]))  # first token special (BOS)
    return out


@pytest.mark.parametrize("convention", ["block_output", "mosaic"])
def test_an_identity_sae_recovers_all_of_the_loss(lm, convention):
    out = spliced_loss(lm, Identity(), docs(), 1, convention, max_tokens=1000, token_budget=40)
    assert out["loss_recovered"] == pytest.approx(1.0, abs=1e-6)
    assert out["kl_div"] == pytest.approx(0.0, abs=1e-6)
    assert out["ce_spliced"] == pytest.approx(out["ce_clean"], rel=1e-6)
    assert out["ce_zero"] != pytest.approx(out["ce_clean"])
    assert out["n_loss_tokens"] == sum(len(i) - 1 for i, _ in docs())


def test_a_zero_sae_recovers_none_and_a_partial_one_lies_between(lm):
    zero = spliced_loss(lm, Zero(), docs(), 1, max_tokens=1000)
    assert zero["loss_recovered"] == pytest.approx(0.0, abs=1e-6) and zero["kl_div"] > 0
    half = spliced_loss(lm, Scaled(), docs(), 1, max_tokens=1000)
    assert half["ce_spliced"] != pytest.approx(half["ce_clean"]) and half["kl_div"] > 0
    # batching (token budget) does not change the result
    other = spliced_loss(lm, Scaled(), docs(), 1, max_tokens=1000, token_budget=20)
    assert other["ce_spliced"] == pytest.approx(half["ce_spliced"], rel=1e-5)


def test_the_token_budget_limits_the_documents(lm):
    out = spliced_loss(lm, Identity(), docs(), 1, max_tokens=10)
    assert out["n_loss_docs"] < 6 and out["n_loss_tokens"] >= 10


def test_dense_fraction_counts_latents_firing_on_many_tokens():
    sae = make_jumprelu(8, 16)
    x = torch.randn(500, 8)
    freq = firing_fractions(sae, x, batch_size=64)
    with torch.inference_mode():
        direct = (sae.encode(x) != 0).double().mean(0).numpy()
    np.testing.assert_allclose(freq, direct)
    q = reconstruction(sae, x, dense_threshold=0.1)
    assert q["dense_fraction"] == pytest.approx(float((direct > 0.1).mean()))
    assert q["dead_fraction"] == pytest.approx(float((direct == 0).mean()))


def test_sae_table_joins_quality_and_cv_best_probes(tmp_path):
    q = {"sae": "s", "model": "m", "layer": 1, "architecture": "batchtopk", "width": 64, "k": 8.0, "sparsity_key": "k",
         "sparsity": 8.0, "saved_l0_over_k": 1.1, "quality": {"l0": 8.8, "explained_variance": 0.7, "loss_recovered": None}}
    (tmp_path / "q.json").write_text(json.dumps(q))
    grid = pl.DataFrame({"family": ["sae", "sae", "sae", "hidden"], "probe": ["logreg"] * 4, "source": ["s", "s", "s", "hidden"],
                         "layer": [1, 1, 1, 1], "dataset": ["d", "d", "e", "d"], "pooling": ["mean", "top20", "mean", "mean"],
                         "binarize": [None, 1.0, None, None], "cv_macro_f1": [0.6, 0.8, 0.5, 0.9],
                         "test_macro_f1": [0.9, 0.7, 0.4, 0.95], "test_macro_f1_lo": [0.8, 0.6, 0.3, 0.9],
                         "test_macro_f1_hi": [0.95, 0.8, 0.5, 0.99], "n_features": [64] * 4, "cv_macro_f1_se": [0.01] * 4})
    ks = pl.DataFrame({"family": ["sae", "sae"], "source": ["s", "s"], "layer": [1, 1], "dataset": ["d", "d"],
                       "ranking": ["mean_diff", "mean_diff"], "k": [5, 10], "cv_macro_f1": [0.7, 0.6],
                       "test_macro_f1": [0.65, 0.75], "test_macro_f1_lo": [0.55, 0.7], "test_macro_f1_hi": [0.72, 0.8],
                       "n_features": [5, 10], "cv_macro_f1_se": [0.01] * 2})
    t = sae_table([tmp_path / "q.json"], grid, ks)
    assert t.schema == pl.Schema(SAES_SCHEMA) and t.height == 2
    d = t.filter(pl.col("dataset") == "d").row(0, named=True)
    assert d["grid_test_macro_f1"] == 0.7 and d["grid_pooling"] == "top20"  # chosen on CV, not test
    assert d["ksparse_k"] == 5 and d["ksparse_test_macro_f1"] == 0.65
    # The intervals are the chosen probes' own (the CV-best row's, not another pooling's or k's).
    assert (d["grid_test_macro_f1_lo"], d["grid_test_macro_f1_hi"]) == (0.6, 0.8)
    assert (d["ksparse_test_macro_f1_lo"], d["ksparse_test_macro_f1_hi"]) == (0.55, 0.72)
    assert d["architecture"] == "batchtopk" and d["l0"] == 8.8 and d["loss_recovered"] is None
    e = t.filter(pl.col("dataset") == "e").row(0, named=True)
    assert e["ksparse_k"] is None and e["ksparse_test_macro_f1_lo"] is None
    assert (e["grid_test_macro_f1_lo"], e["grid_test_macro_f1_hi"]) == (0.3, 0.5)


def test_frontier_figures_draw_one_line_per_architecture_and_width():
    from saeprobe import figures

    rows = []
    for arch in ("topk", "batchtopk"):
        for k, l0 in ((16, 16.0), (32, 31.0)):
            rows.append({"sae": f"{arch}_w1024_k{k}", "sparsity_key": "k", "sparsity": k,  # one sweep entry per arch
                         "model": "m", "layer": 4, "architecture": arch, "width": 1024, "k": k,
                         "l0": l0 + (arch == "batchtopk"), "explained_variance": 0.5 + k / 100, "dataset": "d",
                         "grid_test_macro_f1": 0.7 + k / 1000, "ksparse_test_macro_f1": 0.6 if arch == "topk" else None})
    df = pl.DataFrame([{c: r.get(c) for c in SAES_SCHEMA} for r in rows], schema=SAES_SCHEMA, orient="row")
    fig = figures.make("sae_frontier", {"saes": df})
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3  # two all-feature lines, one k-sparse line (batchtopk has none)
    assert sorted(lines[0].get_xdata()) == list(lines[0].get_xdata())  # through the SAEs in L0 order
    rec = figures.make("sae_reconstruction", {"saes": df})
    assert len([a for a in rec.axes if a.get_visible() and a.get_lines()]) == 1  # no loss panel without loss values
    empty = figures.make("sae_frontier", {"saes": df.clear()})
    assert "no SAE probes" in " ".join(t.get_text() for a in empty.axes for t in a.texts)
