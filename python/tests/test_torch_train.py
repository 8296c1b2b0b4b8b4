"""vae_dist.torch_train: its held-out ELBO is vae-dist's estimator (the same number as `vae-dist
eval` on the same checkpoint, to float rounding: an independent PyTorch reference for the
evaluation), its noise is vae-dist's eval noise, its defaults are configs/mnist.yaml's, a short
training run trains, and bad arguments give one-line errors. With --model iwae-mnist: the IWAE
loss and gradient are torch_objectives' (the reference of vae-dist's TorchObjectiveTests), the
lr decay is vae-dist's, the settings are configs/iwae-mnist.yaml's, and --out writes a checkpoint
that vae-dist eval reads with the same ELBO. Skipped, saying why, without numpy,
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


# --- configs/iwae-mnist.yaml trained as an IWAE (--model iwae-mnist --objective iwae) ---

def test_the_iwae_loss_is_torch_objectives_bound_and_gradient(torch_step_fixture):
    """torch_objectives' IWAE bound and gradient are the reference vae-dist's own is checked
    against (TorchObjectiveTests, 1e-4); torch_train's loss, written apart, must give the same
    numbers on the same weights, images and noise, times 1/B (its loss is a mean over rows)."""
    from vae_dist import torch_objectives
    grads, extra = torch_objectives.objectives(torch_step_fixture, 1.0, 5, 7)
    model = vt.VAE(784, [64, 32], [32, 64], 8).double()
    model.load_state_dict({n: torch.from_numpy(torch_step_fixture[n].astype(np.float64)) for n, _ in model.named_parameters()})
    x = torch.from_numpy(torch_step_fixture["input.x"].astype(np.float64))
    eps = torch.from_numpy(extra["input.eps_iwae"]).reshape(16, 5, 8)
    loss = torch_train.iwae_loss(model, x, eps)
    assert float(loss.detach()) * 16 == pytest.approx(-extra["iwae.bound_sum"][0], rel=1e-12)
    loss.backward()
    for name, p in model.named_parameters():
        want = grads["iwae"][name] / 16
        assert np.linalg.norm(p.grad.numpy() - want) <= 1e-10 * np.linalg.norm(want), name
    # The ELBO's gradient on the first sample's noise is another one: the check can fail.
    model.zero_grad()
    recon, kl = model.elbo_terms(x, eps[:, 0, :])
    ((kl - recon).sum() / 16).backward()
    g, want = model.encoder["0"].weight.grad.numpy(), grads["iwae"]["encoder.0.weight"] / 16
    assert np.linalg.norm(g - want) > 0.01 * np.linalg.norm(want)


def test_the_iwae_schedule_is_vae_dists():
    assert [torch_train.iwae_stage(e) for e in (0, 1, 3, 4, 12, 13, 39, 40)] == [0, 1, 1, 2, 2, 3, 3, 4]
    # vae-dist's metrics.jsonl lr (float32) of configs/iwae-mnist.yaml at steps 0, 1,200 and 6,000.
    lrs = [torch_train.step_lr(1e-3, "iwae", s, 600) for s in (0, 599, 600, 1199, 2399, 2400, 5999)]
    assert lrs == [0.0010000000474974513] * 2 + [0.0007196856895461679] * 3 + [0.0005179474828764796] * 2
    assert torch_train.step_lr(1e-3, "constant", 5999, 600) == 1e-3


def test_the_iwae_mnist_model_is_the_configs(repo):
    with open(os.path.join(repo, "configs", "iwae-mnist.yaml")) as f:
        text = f.read()
    m = torch_train.MODELS["iwae-mnist"]
    for line in (f"encoder: [{', '.join(m['model']['encoder'])}]", f"decoder: [{', '.join(m['model']['decoder'])}]",
                 f"zdim: {m['model']['zdim']}", "adam_eps: 0.0001", "lr_schedule: iwae", "batch: 100", "lr: 0.001",
                 "epochs: 10", "seed: 1", "binarize: dynamic", "likelihood: bernoulli"):
        assert "\n  " + line + "\n" in text, line
    a = torch_train.parse_args(["--model", "iwae-mnist", "--objective", "iwae", "--train-samples", "5"])
    assert (a.adam_eps, a.lr_schedule, a.batch, a.lr, a.steps, a.seed) == (1e-4, "iwae", 100, 1e-3, 6000, 1)
    names = [n for n, _ in torch_train.build_model("iwae-mnist").named_parameters()]
    assert names[:2] == ["encoder.0.weight", "encoder.0.bias"] and names[-1] == "decoder.out.bias"


def test_an_iwae_run_writes_a_checkpoint_vae_dist_evaluates(vae_dist_bin, mnist_dir, tmp_path):
    """The exported weights are the trained ones: vae-dist eval's ELBO on them is torch_train's
    (the same estimator, to float rounding), and the tanh network loads back."""
    out = str(tmp_path / "iwae.safetensors")
    r = torch_train_cli(["--model", "iwae-mnist", "--objective", "iwae", "--train-samples", "5", "--steps", "20",
                         "--threads", "1", "--limit", "200", "--out", out], mnist_dir)
    assert r.returncode == 0, r.stderr
    ours = json.loads(r.stdout)
    assert (ours["objective"], ours["train_samples"], ours["adam_eps"]) == ("iwae", 5, 1e-4)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    ev = run([vae_dist_bin, "eval", "--checkpoint", out, "--data", mnist_dir, "--json", "--threads", "1", "--limit", "200",
              "--iw", "20"], env)
    assert ev.returncode == 0, ev.stderr
    got = json.loads(ev.stdout.strip().splitlines()[-1])
    assert abs(got["elbo"] - ours["test_elbo"]) <= 1e-5 * abs(ours["test_elbo"]) and got["step"] == 20
    assert got["iw_bound"] > got["elbo"]
    assert vt.load(out).config()["encoder"] == ["dense 200 tanh", "dense 200 tanh"]


@pytest.mark.parametrize("args,message", [
    (["--objective", "iwae"], "--train-samples goes with --objective iwae"),
    (["--train-samples", "5"], "--train-samples goes with --objective iwae"),
    (["--adam-eps", "0"], "--adam-eps: expected a number > 0"),
    (["--model", "cifar"], "--model: invalid choice"),
])
def test_iwae_flags_that_do_not_go_together_are_refused(args, message, tmp_path):
    r = torch_train_cli(args, str(tmp_path))
    assert r.returncode == 2 and message in r.stderr
