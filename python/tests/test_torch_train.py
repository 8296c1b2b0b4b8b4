"""vae_dist.torch_train: its held-out ELBO is vae-dist's estimator (the same number as `vae-dist
eval` on the same checkpoint, to float rounding: an independent PyTorch reference for the
evaluation), its noise is vae-dist's eval noise, its defaults are configs/mnist.yaml's, a short
training run trains, and bad arguments give one-line errors. Skipped, saying why, without numpy,
safetensors, torch, the binary or MNIST."""

import json
import os
import subprocess
import sys

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("safetensors")
torch = pytest.importorskip("torch")

from vae_dist import data, torch_bench, torch_train  # noqa: E402
from vae_dist import torch as vt  # noqa: E402
from vae_dist.gemm_ceiling import MNIST_MODEL  # noqa: E402

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = 1000


def run(cmd, env=None):
    return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def torch_train_cli(args, data_dir):
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR, OMP_NUM_THREADS="1")
    return run([sys.executable, "-m", "vae_dist.torch_train", "--data", data_dir] + args, env)


@pytest.fixture(scope="module")
def checkpoint(vae_dist_bin, mnist_dir, repo, tmp_path_factory):
    """configs/mnist.yaml after 30 steps: {"path", "bin", "data", "env"}."""
    out = str(tmp_path_factory.mktemp("torch-train") / "run")
    env = dict(os.environ, VAE_DIST_DATA=mnist_dir, OPENBLAS_NUM_THREADS="1")
    r = run([vae_dist_bin, "train", "--config", os.path.join(repo, "configs", "mnist.yaml"), "--data", mnist_dir,
             "--out", out, "--steps", "30", "--eval-every", "0", "--checkpoint-every", "0", "--threads", "1",
             "--quiet", "--no-tensorboard"], env)
    assert r.returncode == 0, r.stderr
    return {"path": os.path.join(out, "final.safetensors"), "bin": vae_dist_bin, "data": mnist_dir, "env": env}


def vae_dist_eval(ck, *flags):
    r = run([ck["bin"], "eval", "--checkpoint", ck["path"], "--data", ck["data"], "--json", "--threads", "1",
             "--limit", str(IMAGES)] + list(flags), ck["env"])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_heldout_elbo_is_vae_dist_eval_s(checkpoint):
    vae = vt.load(checkpoint["path"])
    x = torch_train.heldout_images(checkpoint["data"], IMAGES)
    for samples in (1, 2):
        ours = vae_dist_eval(checkpoint, "--samples", str(samples))
        elbo, recon, kl = torch_train.heldout_elbo(vae, x, samples)
        for name, got, want in (("elbo", elbo, ours["elbo"]), ("recon", recon, ours["recon"]), ("kl", kl, ours["kl"])):
            assert abs(got - want) <= 1e-5 * abs(want), f"{name} with {samples} sample(s): PyTorch {got}, vae-dist {want}"
    # The noise is what makes them agree: the posterior mean alone (eps = 0) gives another number.
    with torch.no_grad():
        mean_z = float(vae.elbo(x, eps=torch.zeros(IMAGES, vae.zdim)).double().mean())
    assert abs(mean_z - elbo) > 0.1


def test_the_cli_evaluates_a_checkpoint_as_vae_dist_does(checkpoint):
    r = torch_train_cli(["--checkpoint", checkpoint["path"], "--limit", str(IMAGES)], checkpoint["data"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    want = vae_dist_eval(checkpoint)["elbo"]
    assert out["eval_images"] == IMAGES and abs(out["test_elbo"] - want) <= 1e-5 * abs(want)


def test_eval_noise_is_keyed_by_image_and_sample():
    a = data.eval_noise(0, 8, 20)
    assert a.dtype == np.float32 and a.shape == (8, 20)
    assert np.array_equal(data.eval_noise(5, 3, 20), a[5:8])  # a row depends on its image alone
    assert not np.array_equal(data.eval_noise(0, 8, 20, sample=1), a)
    # An odd width drops the pair's second value: the first 3 of a row of 4.
    assert np.array_equal(data.eval_noise(0, 8, 3), data.eval_noise(0, 8, 4)[:, :3])
    big = data.eval_noise(0, 5000, 20).astype(np.float64)
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02


def test_defaults_are_configs_mnist_yaml_and_the_best_2_core_setting():
    a = torch_train.parse_args([])
    assert (a.batch, a.lr, a.steps, a.seed) == (MNIST_MODEL["batch"], 1e-3, 6000, 1)
    assert (a.threads, a.adam, a.flush_denormal, a.samples, a.limit) == (2, "fused", True, 1, None)
    assert torch_train.parse_args(["--epochs", "3", "--batch", "200"]).steps == 900


def test_a_short_run_trains(mnist_dir):
    a = torch_train.parse_args(["--data", mnist_dir, "--steps", "20", "--threads", "1", "--limit", "300"])
    out = torch_train.train_and_evaluate(a)
    assert (out["steps"], out["samples"], out["eval_images"]) == (20, 2000, 300)
    torch.manual_seed(a.seed)
    untrained = torch_bench.build_model(784, [500, 500], [500, 500], 20).eval()
    before, _, _ = torch_train.heldout_elbo(untrained, torch_train.heldout_images(mnist_dir, 300))
    assert out["test_elbo"] > before + 100, (out["test_elbo"], before)
    assert out["test_elbo"] == pytest.approx(-(out["test_recon"] + out["test_kl"]))


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps: expected a positive integer"),
    (["--lr", "-1"], "--lr: expected a number > 0"),
    (["--adam", "sgd"], "--adam: invalid choice"),
])
def test_bad_flags_are_refused(args, message, tmp_path):
    r = torch_train_cli(args, str(tmp_path))
    assert r.returncode == 2 and message in r.stderr


def test_bad_inputs_are_one_line_errors(tmp_path, mnist_dir):
    r = torch_train_cli(["--checkpoint", str(tmp_path / "none.safetensors")], mnist_dir)
    assert r.returncode == 1 and r.stderr.startswith("torch_train: --checkpoint ") and r.stderr.count("\n") == 1
    r = torch_train_cli(["--steps", "1"], str(tmp_path))
    assert r.returncode == 1 and "no " + str(tmp_path / "mnist" / "t10k-images-idx3-ubyte") in r.stderr
