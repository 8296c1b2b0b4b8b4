"""vae_dist.torch_objectives (the PyTorch side of TorchObjectiveTests): with β = 1 its summed
gradient is the shared fixture's mean-loss gradient times the batch; free bits' λ splits the
dimensions in half; the IWAE noise and bound have their shapes."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from vae_dist import torch_objectives as to  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures", "torch-vae-step.safetensors")


@pytest.fixture(scope="module")
def fixture():
    path = os.environ.get("VAE_DIST_FIXTURES", FIXTURE)
    if os.path.isdir(path):
        path = os.path.join(path, "torch-vae-step.safetensors")
    if not os.path.exists(path):
        pytest.skip(f"no PyTorch fixture at {path}")
    return to.load(path)


def test_beta_one_is_the_fixtures_gradient_times_the_batch(fixture):
    grads, extra = to.objectives(fixture, 1.0, 5, 7)
    for name, g in grads["beta"].items():
        want = fixture[f"grad.{name}"].astype(np.float64) * 16
        assert np.linalg.norm(g - want) <= 1e-5 * np.linalg.norm(want), name
    lam, means = extra["free_bits.lambda"][0], extra["free_bits.mean_kl"]
    assert (means > lam).sum() == 4
    assert extra["input.eps_iwae"].shape == (16, 40) and np.isfinite(extra["iwae.bound_sum"]).all()
    assert set(grads) == {"beta", "free_bits", "iwae"}
