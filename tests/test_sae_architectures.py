"""Every SAE architecture saeprobe trains: SAELens training class -> SAELens folder -> reload -> quality."""

import json

import pytest
import torch

from saeprobe.sae import ARCHITECTURES, K_ARCHITECTURES, THRESHOLD_SAVED, batches, measure, train_sae

D_IN, LATENT, WIDTH, K = 16, 24, 32, 4


def synthetic(n: int, seed: int) -> torch.Tensor:
    """Sparse non-negative combinations of a fixed basis of 24 directions, plus a little noise."""
    torch.manual_seed(0)
    basis = torch.randn(LATENT, D_IN)
    g = torch.Generator().manual_seed(seed)
    codes = torch.relu(torch.randn(n, LATENT, generator=g)) * (torch.rand(n, LATENT, generator=g) < 0.15)
    return codes @ basis + 0.01 * torch.randn(n, D_IN, generator=g)


SPEC = {"width": WIDTH, "k": K, "training_tokens": 60000, "batch_size": 256, "lr": 3e-3, "heldout_fraction": 0.1,
        "matryoshka_widths": [8], "l0_coefficient": 1.0, "l1_coefficient": 1.0, "jumprelu_init_threshold": 0.01,
        "jumprelu_bandwidth": 0.05}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_trains_saves_and_reloads(tmp_path, arch):
    from sae_lens import SAE

    log = train_sae(synthetic(6000, seed=1), tmp_path / arch, {**SPEC, "architecture": arch}, seed=0)
    cfg = json.loads((tmp_path / arch / "cfg.json").read_text())
    assert cfg["d_sae"] == WIDTH and cfg["d_in"] == D_IN
    sae = SAE.load_from_disk(str(tmp_path / arch), device="cpu")
    # BatchTopK and Matryoshka are saved as JumpReLU SAEs with one global threshold.
    assert cfg["architecture"] == ("jumprelu" if arch in THRESHOLD_SAVED else arch) == log["saved_architecture"]
    fresh = measure(sae, synthetic(2000, seed=2))  # vectors the SAE never saw
    assert fresh["explained_variance"] > 0.6, fresh
    assert 0 < fresh["l0"] < WIDTH / 2, fresh
    if arch == "topk":
        assert fresh["l0"] <= K
    elif arch in K_ARCHITECTURES:  # k is an average over a batch; the saved threshold only approximates it
        assert 0.5 * K <= fresh["l0"] <= 2 * K
        assert log["saved_l0_over_k"] == pytest.approx(log["heldout"]["l0"] / K)
    assert log["architecture"] == arch and log["k"] == (K if arch in K_ARCHITECTURES else None)
    assert log["steps"] == 60000 // 256 and log["loss_curve"][0][1] > log["final_loss"]


def test_a_stronger_sparsity_penalty_lowers_l0(tmp_path):
    x = synthetic(6000, seed=1)
    l0 = [train_sae(x, tmp_path / str(c), {**SPEC, "architecture": "standard", "l1_coefficient": c}, seed=0)["heldout"]["l0"]
          for c in (0.3, 5.0)]
    assert l0[1] < l0[0]


def test_batches_have_exactly_the_batch_size_and_cover_the_buffer():
    x = torch.arange(10.0).unsqueeze(1)
    it = batches(x, 4, seed=0)
    epoch = [next(it) for _ in range(2)]  # 10 rows: two full batches per epoch, the short one dropped
    assert all(b.shape == (4, 1) for b in epoch)
    assert len(set(torch.cat(epoch).squeeze(1).tolist())) == 8
    with pytest.raises(ValueError, match="cannot fill a batch"):
        next(batches(x, 11, seed=0))


@pytest.mark.parametrize("arch", THRESHOLD_SAVED)
def test_a_short_run_saves_a_threshold_that_keeps_about_k(tmp_path, arch):
    """40 steps: at SAELens' threshold rate (0.01 per step) the saved threshold would still be 67 %
    its zero start (0.99^40) and fire far more than k latents; the rate saeprobe sets forgets it."""
    from saeprobe.sae import training_sae

    spec = {**SPEC, "architecture": arch, "training_tokens": 40 * 256}
    assert training_sae(spec, D_IN, "cpu", steps=40).cfg.topk_threshold_lr > 0.01
    assert training_sae(spec, D_IN, "cpu", steps=100_000).cfg.topk_threshold_lr == 0.01  # long runs: SAELens' rate
    log = train_sae(synthetic(12000, seed=1), tmp_path / arch, spec, seed=0)
    assert log["steps"] == 40 and 0.5 <= log["saved_l0_over_k"] <= 2.0, log["heldout"]
