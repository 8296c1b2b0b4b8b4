"""vae_dist.torch_bench trains the network vae-dist trains: a checkpoint that configs/mnist.yaml
writes loads strictly into torch_bench's model, the batch and learning rate are the config's, and
torch_bench's training loss of a batch with fixed noise (eps = 0) equals vae-dist's
(`vae-dist eval --mean-z`) to 1e-4 relative. Also: each DDP process takes its share of every
global batch, and the fused Adam is the one this torch has. Skipped, saying why, without numpy,
safetensors, torch, the binary or MNIST."""

import json
import os
import subprocess

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("safetensors")
torch = pytest.importorskip("torch")

from vae_dist import data, torch_bench  # noqa: E402
from vae_dist import torch as vt  # noqa: E402
from vae_dist.gemm_ceiling import MNIST_MODEL  # noqa: E402

ROWS = 100


def run(cmd, env):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = (p.stderr.strip() or p.stdout.strip() or "no output").splitlines()[-1]
    assert p.returncode == 0, f"{os.path.basename(cmd[0])} {cmd[1]} exited {p.returncode}: {last}"
    return p.stdout


@pytest.fixture(scope="module")
def mnist_run(vae_dist_bin, mnist_dir, repo, tmp_path_factory):
    """A checkpoint of configs/mnist.yaml after 5 steps: {"path", "bin", "data", "env"}."""
    out = str(tmp_path_factory.mktemp("torch-bench") / "run")
    env = dict(os.environ, VAE_DIST_DATA=mnist_dir, OPENBLAS_NUM_THREADS="1")
    run([vae_dist_bin, "train", "--config", os.path.join(repo, "configs", "mnist.yaml"), "--data", mnist_dir,
         "--out", out, "--steps", "5", "--eval-every", "0", "--checkpoint-every", "0", "--threads", "1",
         "--quiet", "--no-tensorboard"], env)
    return {"path": os.path.join(out, "final.safetensors"), "bin": vae_dist_bin, "data": mnist_dir, "env": env}


def config_value(config_text, section, key):
    """``section.key`` of a checkpoint's config YAML (flat two-level mappings only)."""
    current = None
    for line in config_text.splitlines():
        if line and not line[0].isspace():
            current = line.split(":", 1)[0].strip()
        elif current == section and line.strip().startswith(key + ":"):
            return line.split(":", 1)[1].split("#", 1)[0].strip()
    raise KeyError(f"{section}.{key}")


def bench_model():
    return torch_bench.build_model(MNIST_MODEL["input_size"], MNIST_MODEL["hidden"], MNIST_MODEL["decoder_hidden"],
                                   MNIST_MODEL["zdim"])


def test_torch_bench_defaults_are_configs_mnist_yaml(mnist_run):
    ours, theirs = bench_model().state_dict(), vt.load(mnist_run["path"]).state_dict()
    assert list(ours) == list(theirs) and all(ours[k].shape == theirs[k].shape for k in ours)
    from vae_dist import checkpoint

    config = checkpoint.read(mnist_run["path"])[1]["config"]
    a = torch_bench.parse_args([])
    assert int(config_value(config, "train", "batch")) == a.batch == MNIST_MODEL["batch"]
    assert float(config_value(config, "train", "lr")) == a.lr
    assert config_value(config, "data", "binarize") == "dynamic"


def test_training_loss_is_vae_dist_s(mnist_run):
    out = run([mnist_run["bin"], "eval", "--checkpoint", mnist_run["path"], "--data", mnist_run["data"],
               "--mean-z", "--json", "--threads", "1", "--limit", str(ROWS)], mnist_run["env"])
    swift_loss = -float(json.loads(out.strip().splitlines()[-1])["elbo"])
    model = bench_model()
    model.load_state_dict(vt.load(mnist_run["path"]).state_dict(), strict=True)
    path = os.path.join(mnist_run["data"], "mnist", "t10k-images-idx3-ubyte")
    x = torch.from_numpy(data.heldout(data.read_idx(path if os.path.exists(path) else path + ".gz"), limit=ROWS))
    with torch.no_grad():
        loss = float(torch_bench.step_loss(torch_bench.terms_module(model), x, torch.zeros(ROWS, 20), ROWS))
    assert abs(loss - swift_loss) <= 1e-4 * abs(swift_loss), f"PyTorch {loss!r}, vae-dist {swift_loss!r}"
    # The noise enters: another eps gives another loss.
    with torch.no_grad():
        noisy = float(torch_bench.step_loss(torch_bench.terms_module(model), x, torch.ones(ROWS, 20), ROWS))
    assert abs(noisy - swift_loss) > 1e-3 * abs(swift_loss)


def one_hot_images(n):
    """Row i has the single pixel i set to 255, so its binarisation (p = 1 or 0) names the row."""
    return torch.from_numpy(np.eye(n, dtype=np.uint8) * 255)


def rows_of(x):
    return x.argmax(1).tolist()


def test_ddp_ranks_split_every_global_batch_of_one_permutation_per_epoch():
    images = one_hot_images(12)
    whole, halves = torch_bench.Batches(images, 5, seed=7), [torch_bench.Batches(images, 5, 7, r, 2) for r in (0, 1)]
    seen = []
    for _ in range(4):  # two epochs of two batches of 5 (2 rows left over each epoch)
        batch = rows_of(whole.next())
        parts = [rows_of(h.next()) for h in halves]
        assert [len(p) for p in parts] == [2, 3] and parts[0] + parts[1] == batch
        seen.append(batch)
    assert len(set(seen[0] + seen[1])) == 10 and seen[:2] != seen[2:]


def test_dynamic_binarisation_draws_fresh_bits():
    images = torch.full((100, 784), 128, dtype=torch.uint8)
    b = torch_bench.Batches(images, 100, seed=1)
    x, y = b.next(), b.next()
    assert set(x.unique().tolist()) == {0.0, 1.0} and not torch.equal(x, y)
    assert abs(float(x.mean()) - 128 / 255) < 0.01


def test_adam_is_vae_dist_s():
    model = bench_model()
    default, impl = torch_bench.make_optimizer(model.parameters(), "default", 1e-3)
    assert impl == "default" and not default.defaults.get("fused")
    fused, impl = torch_bench.make_optimizer(model.parameters(), "fused", 1e-3)
    assert impl in ("fused", "foreach") and fused.defaults[impl]
    for opt in (default, fused):
        d = opt.defaults
        assert (d["lr"], d["betas"], d["eps"], d["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 0)
