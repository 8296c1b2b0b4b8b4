"""vae_dist.torch_objectives (the PyTorch side of TorchObjectiveTests): with β = 1 its summed
gradient is the shared fixture's mean-loss gradient times the batch; free bits' λ splits the
dimensions in half; the IWAE noise and bound have their shapes."""


import numpy as np
import pytest

torch = pytest.importorskip("torch")
from vae_dist import torch_objectives as to  # noqa: E402

@pytest.fixture(scope="module")
def fixture(torch_step_fixture):
    return torch_step_fixture


def test_beta_one_is_the_fixtures_gradient_times_the_batch(fixture):
    grads, extra = to.objectives(fixture, 1.0, 5, 7)
    for name, g in grads["beta"].items():
        want = fixture[f"grad.{name}"].astype(np.float64) * 16
        assert np.linalg.norm(g - want) <= 1e-5 * np.linalg.norm(want), name
    lam, means = extra["free_bits.lambda"][0], extra["free_bits.mean_kl"]
    assert (means > lam).sum() == 4
    assert extra["input.eps_iwae"].shape == (16, 40) and np.isfinite(extra["iwae.bound_sum"]).all()
    assert set(grads) == {"beta", "free_bits", "iwae", "iwae_dreg"}


def relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_dreg_keeps_the_decoders_gradient_and_changes_the_encoders(fixture):
    grads, _ = to.objectives(fixture, 1.0, 5, 7)
    for name, g in grads["iwae_dreg"].items():
        if name.startswith("encoder."):
            assert relative(g, grads["iwae"][name]) > 0.1, name
        else:
            assert relative(g, grads["iwae"][name]) < 1e-12, name


def test_dreg_with_one_sample_drops_the_score_term_and_nothing_else(fixture):
    """k = 1: w̃ = 1, and DReG is the pathwise gradient (Roeder et al.'s "sticking the landing").
    What it drops from the standard gradient is the score term: per row and dimension
    −ε/σ for μ and ½(1 − ε²) for log σ², zero in expectation; so encoder.logvar.bias moves by
    Σ_rows ½(1 − ε²) exactly, and the decoder not at all."""
    grads, extra = to.objectives(fixture, 1.0, 1, 7)
    eps = extra["input.eps_iwae"]  # [16, 8]
    diff = grads["iwae_dreg"]["encoder.logvar.bias"] - grads["iwae"]["encoder.logvar.bias"]
    assert relative(diff, 0.5 * (1 - eps * eps).sum(0)) < 1e-9
    for name, g in grads["iwae"].items():
        if not name.startswith("encoder."):
            assert relative(grads["iwae_dreg"][name], g) < 1e-12, name
