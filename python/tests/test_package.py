"""The Python package (vae_dist) against the vae-dist binary, end to end.

Two short runs are trained (MNIST 784-500-500 / z=20 Bernoulli with dynamic binarisation, and a
small Gaussian-likelihood run on unbinarised MNIST); then:
- vae_dist.data.heldout equals vae-dist's held-out set bit for bit on all 10,000 test images
  (through the originals `vae-dist reconstruct` draws) and through the held-out ELBO:
  `vae-dist eval --mean-z` equals the float64 ELBO of vae_dist.torch's module on heldout(...)
  to 1e-6 relative, and does not with the seed changed;
- vae_dist.torch.load builds a module that loads strictly, with the checkpoint's tensors
  exactly, and refuses another model kind with a one-line ValueError;
- vae_dist.torch.save_init writes the tensors back exactly;
- weights saved by PyTorch start a vae-dist run (`train --init`) whose held-out ELBO with z = mu
  equals PyTorch's for those weights.
Skipped, saying why, without numpy, safetensors, torch, the binary or MNIST.
"""

import json
import os
import struct
import subprocess
import zlib

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("safetensors")
torch = pytest.importorskip("torch")

from vae_dist import checkpoint, data  # noqa: E402
from vae_dist import torch as vt  # noqa: E402

RELATIVE_TOLERANCE = 1e-6
TEST_IMAGES = "t10k-images-idx3-ubyte"

CONV_CONFIG = """\
name: python-interop-conv
model:
  encoder: [conv 8 k4 s2 p1, conv 16 k4 s2 p1 elu, flatten, dense 64 tanh]
  decoder: [dense 64 leaky_relu, dense 784, reshape 16x7x7, deconv 8 k4 s2 p1 softplus, deconv 1 k3 s2 p1 op1]
  zdim: 8
  likelihood: bernoulli
data:
  dataset: mnist
  binarize: dynamic
  train_limit: 2000
train:
  batch: 50
  steps: 40
  lr: 0.001
  seed: 1
"""

MNIST_CONFIG = """\
name: python-interop
model:
  hidden: [500, 500]
  zdim: 20
  likelihood: bernoulli
data:
  dataset: mnist
  binarize: dynamic
train:
  batch: 100
  steps: 100
  lr: 0.001
  seed: 1
"""

GAUSSIAN_CONFIG = """\
name: python-interop-gaussian
model:
  hidden: [64]
  zdim: 4
  likelihood: gaussian
  sigma: 0.5
data:
  dataset: mnist
train:
  batch: 100
  steps: 50
  lr: 0.001
  seed: 2
"""



def read_png_gray(path):
    """Pixels of an 8-bit greyscale, non-interlaced PNG whose scanlines all use filter 0 (what
    vae-dist writes)."""
    import numpy as np

    with open(path, "rb") as f:
        b = f.read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    pos, idat, width, height = 8, [], None, None
    while pos < len(b):
        (n,) = struct.unpack(">I", b[pos:pos + 4])
        kind, data = b[pos + 4:pos + 8], b[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[:8])
            assert data[8:] == b"\x08\x00\x00\x00\x00", f"{path}: expected an 8-bit greyscale PNG"
        elif kind == b"IDAT":
            idat.append(data)
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, width + 1)
    assert bool((raw[:, 0] == 0).all()), f"{path}: a scanline uses a PNG filter other than 0"
    return raw[:, 1:]


def reconstruct_tiles(png, count, side=28, columns=8, padding=2):
    """Splits `vae-dist reconstruct`'s grid into (originals, reconstructions), [count, side*side]
    grey levels each: rows of `columns` originals alternate with their reconstructions."""
    import numpy as np

    originals = np.zeros((count, side * side), dtype=np.uint8)
    recons = np.zeros_like(originals)
    step = side + padding
    for i in range(count):
        group, col = divmod(i, columns)
        top, left = padding + 2 * group * step, padding + col * step
        originals[i] = png[top:top + side, left:left + side].reshape(-1)
        recons[i] = png[top + step:top + step + side, left:left + side].reshape(-1)
    return originals, recons


def relative(a, b):
    return abs(a - b) / abs(b)


def run(cmd, env):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = (p.stderr.strip() or p.stdout.strip() or "no output").splitlines()[-1]
    assert p.returncode == 0, f"{os.path.basename(cmd[0])} {cmd[1]} exited {p.returncode}: {last}"
    return p.stdout


def relative(a, b):
    return abs(a - b) / abs(b)


@pytest.fixture(scope="module")
def trained(vae_dist_bin, mnist_dir, tmp_path_factory):
    """The short runs: {"tmp", "bin", "data", "env", "mnist", "gaussian", "conv"} (checkpoint paths)."""
    torch.set_num_threads(1)
    tmp = str(tmp_path_factory.mktemp("vae-dist-python"))
    env = dict(os.environ, VAE_DIST_DATA=mnist_dir, OPENBLAS_NUM_THREADS="1")
    runs = {"tmp": tmp, "bin": vae_dist_bin, "data": mnist_dir, "env": env}
    for name, yaml in (("mnist", MNIST_CONFIG), ("gaussian", GAUSSIAN_CONFIG), ("conv", CONV_CONFIG)):
        config = os.path.join(tmp, name + ".yaml")
        with open(config, "w") as f:
            f.write(yaml)
        out = os.path.join(tmp, name)
        run([vae_dist_bin, "train", "--config", config, "--data", mnist_dir, "--out", out, "--eval-every", "0",
             "--checkpoint-every", "0", "--threads", "1", "--quiet"], env)
        runs[name] = os.path.join(out, "final.safetensors")
        assert os.path.isfile(runs[name]), f"{name} run: no {runs[name]}"
    return runs


@pytest.fixture(scope="module")
def images_path(mnist_dir):
    path = os.path.join(mnist_dir, "mnist", TEST_IMAGES)
    return path if os.path.exists(path) else path + ".gz"


@pytest.fixture(scope="module")
def images(images_path):
    return data.read_idx(images_path)


@pytest.fixture(scope="module")
def heldout(images):
    return data.heldout(images, binarize="dynamic")


def expected_names(model_cfg):
    layers = [f"encoder.{i}" for i in range(len(model_cfg["hidden"]))] + ["encoder.mu", "encoder.logvar"]
    layers += [f"decoder.{i}" for i in range(len(model_cfg["decoder_hidden"]))] + ["decoder.out"]
    return [f"{layer}.{p}" for layer in layers for p in ("weight", "bias")]


def swift_elbo(trained, path, limit):
    cmd = [trained["bin"], "eval", "--checkpoint", path, "--data", trained["data"], "--mean-z", "--json",
           "--threads", "1"]
    out = run(cmd + (["--limit", str(limit)] if limit else []), trained["env"])
    return float(json.loads(out.strip().splitlines()[-1])["elbo"])


def python_elbo(module, xs):
    with torch.no_grad():
        return float(module.elbo(torch.from_numpy(xs).double(), eps=0).mean())


def test_read_idx_raw_and_gzip_agree(images, images_path, tmp_path):
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    with open(images_path, "rb") as f:
        blob = f.read()
    raw = tmp_path / TEST_IMAGES
    raw.write_bytes(zlib.decompress(blob, 31) if blob[:2] == b"\x1f\x8b" else blob)
    assert np.array_equal(data.read_idx(str(raw)), images)


def test_load_is_strict_and_exact(trained):
    ck = trained["mnist"]
    tensors, meta = checkpoint.read(ck)
    model_cfg = checkpoint.model_config(meta, ck)
    module = vt.load(ck)
    assert module.config() == {k: model_cfg[k] for k in module.config()}
    state = module.state_dict()
    expected = expected_names(model_cfg)
    assert list(state) == expected, "state_dict keys in vae-dist's order"
    model_part = checkpoint.model_tensors(tensors)
    assert sorted(model_part) == sorted(expected)
    assert len(tensors) == 3 * len(expected), "model + adam.m + adam.v tensors"
    for k in expected:
        assert state[k].dtype == torch.float32 and np.array_equal(state[k].numpy(), model_part[k]), k


def test_load_refuses_another_kind_in_one_line(trained):
    import safetensors.numpy

    tensors, meta = checkpoint.read(trained["mnist"])
    other = os.path.join(trained["tmp"], "cvae.safetensors")
    flat_meta = dict(meta, model=json.dumps(meta["model"]), kind="cvae")
    safetensors.numpy.save_file(checkpoint.model_tensors(tensors), other, metadata=flat_meta)
    with pytest.raises(ValueError) as e:
        vt.load(other)
    msg = str(e.value)
    assert "\n" not in msg and other in msg and "cvae" in msg


def test_save_init_round_trips_bit_for_bit(trained, tmp_path):
    ck = trained["mnist"]
    tensors, meta = checkpoint.read(ck)
    model_cfg = checkpoint.model_config(meta, ck)
    module, expected = vt.load(ck), expected_names(model_cfg)
    init = str(tmp_path / "init.safetensors")
    vt.save_init(module, init)
    back, _ = checkpoint.read(init)
    assert sorted(back) == sorted(expected)
    model_part = checkpoint.model_tensors(tensors)
    for k in expected:
        assert back[k].dtype == np.float32 and back[k].tobytes() == model_part[k].tobytes(), k
    fresh = vt.VAE.from_config(model_cfg)
    fresh.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in back.items()}, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], module.state_dict()[k]) for k in expected)


def test_heldout_is_vae_dists_held_out_set(trained, images, heldout):
    ck = trained["mnist"]
    _, meta = checkpoint.read(ck)
    assert checkpoint.binarization(meta) == "dynamic"
    assert heldout.shape == (10000, 784) and heldout.dtype == np.float32
    png_path = os.path.join(trained["tmp"], "reconstruct.png")
    run([trained["bin"], "reconstruct", "--checkpoint", ck, "--data", trained["data"], "--n", "10000", "--out",
         png_path], trained["env"])
    originals, recons = reconstruct_tiles(read_png_gray(png_path), 10000)
    assert set(np.unique(originals)) <= {0, 255}
    assert int(((originals == 255) != (heldout == 1)).sum()) == 0, "bits differ from vae-dist's held-out set"
    flipped = data.heldout(images, binarize="dynamic", seed=data.HELDOUT_SEED + 1)
    assert int(((originals == 255) != (flipped == 1)).sum()) > 0, "seed + 1 gives the same bits"
    # The reconstructions, from z = mu: the module's decoder within one grey level.
    m64 = vt.load(ck).double()
    with torch.no_grad():
        mu, _ = m64.encode(torch.from_numpy(heldout).double())
        grey = torch.round(torch.sigmoid(m64.decode(mu)) * 255).numpy()
    assert float(np.abs(grey - recons).max()) <= 1


@pytest.mark.parametrize("limit", [None, 100])
def test_eval_elbo_equals_the_modules(trained, images, heldout, limit):
    n = limit or 10000
    m64 = vt.load(trained["mnist"]).double()
    swift = swift_elbo(trained, trained["mnist"], limit)
    ours = python_elbo(m64, heldout[:n])
    assert relative(ours, swift) <= RELATIVE_TOLERANCE, f"vae-dist {swift!r}, python {ours!r}"
    flipped = data.heldout(images, binarize="dynamic", seed=data.HELDOUT_SEED + 1, limit=n)
    assert relative(python_elbo(m64, flipped), swift) > RELATIVE_TOLERANCE, "the check is not sensitive"


def test_conv_checkpoint_loads_strictly_and_its_elbo_equals_the_modules(trained, heldout):
    """A convolutional VAE (conv, deconv, reshape, flatten, four activations) trained by
    vae-dist: vae_dist.torch builds nn.Conv2d / nn.ConvTranspose2d from its metadata, loads its
    tensors strictly, and gives vae-dist's held-out ELBO on the first 200 images."""
    m64 = vt.load(trained["conv"]).double()
    names = [n for n, _ in m64.state_dict().items()]
    assert "encoder.0.weight" in names and "decoder.out.weight" in names
    assert isinstance(m64.encoder["0"], torch.nn.Conv2d) and isinstance(m64.decoder["out"], torch.nn.ConvTranspose2d)
    swift = swift_elbo(trained, trained["conv"], 200)
    ours = python_elbo(m64, heldout[:200])
    assert relative(ours, swift) <= RELATIVE_TOLERANCE, f"vae-dist {swift!r}, python {ours!r}"


def test_gaussian_elbo_on_unbinarised_pixels(trained, images):
    g_path = trained["gaussian"]
    _, g_meta = checkpoint.read(g_path)
    assert checkpoint.binarization(g_meta) == "none"
    g_module = vt.load(g_path).double()
    assert g_module.likelihood == "gaussian" and g_module.sigma == 0.5
    xg = data.heldout(images, binarize="none")
    assert np.array_equal(xg, images.reshape(10000, -1).astype(np.float32) * (np.float32(1) / np.float32(255)))
    swift, ours = swift_elbo(trained, g_path, None), python_elbo(g_module, xg)
    assert relative(ours, swift) <= RELATIVE_TOLERANCE, f"vae-dist {swift!r}, python {ours!r}"


def test_pytorch_weights_start_a_vae_dist_run(trained, heldout):
    """With lr 1e-30 one Adam step moves no float32 weight, so the run's held-out ELBO with
    z = mu is PyTorch's for the weights it started from."""
    from safetensors.torch import save_file

    _, meta = checkpoint.read(trained["mnist"])
    model_cfg = checkpoint.model_config(meta, trained["mnist"])
    torch.manual_seed(0)
    torch_module = vt.VAE.from_config(model_cfg)
    torch_init = os.path.join(trained["tmp"], "torch-init.safetensors")
    save_file({k: v.contiguous() for k, v in torch_module.state_dict().items()}, torch_init)
    run_dir = os.path.join(trained["tmp"], "from-torch")
    run([trained["bin"], "train", "--config", os.path.join(trained["tmp"], "mnist.yaml"), "--data", trained["data"],
         "--out", run_dir, "--init", torch_init, "--steps", "1", "--lr", "1e-30", "--quiet", "--no-tensorboard",
         "--threads", "1"], trained["env"])
    started = vt.load(os.path.join(run_dir, "final.safetensors"))
    for k in expected_names(model_cfg):
        assert torch.equal(started.state_dict()[k], torch_module.state_dict()[k]), k
    swift = swift_elbo(trained, os.path.join(run_dir, "final.safetensors"), 1000)
    ours = python_elbo(torch_module.double(), heldout[:1000])
    assert relative(ours, swift) <= RELATIVE_TOLERANCE, f"vae-dist {swift!r}, PyTorch {ours!r}"


COLOUR_CONFIG = """\
name: colour-conv
model:
  encoder: [conv 8 k4 s2 p1, conv 16 k4 s2 p1 elu, flatten, dense 32 tanh]
  decoder: [dense 256, reshape 16x4x4, deconv 8 k4 s2 p1 softplus, deconv 3 k4 s2 p1]
  zdim: 6
  likelihood: gaussian
  sigma: 0.2
data:
  train: colour-train.npy
  test: colour-test.npy
train:
  batch: 32
  steps: 30
  lr: 0.001
  seed: 2
"""


def colour_patches(n, seed=0):
    """n 16×16 RGB patches, uint8 [n, 16, 16, 3], cut from scikit-learn's two sample photographs
    (real images that ship inside its wheel)."""
    sklearn = pytest.importorskip("sklearn.datasets")
    photos = sklearn.load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((n, 16, 16, 3), dtype=np.uint8)
    for i in range(n):
        p = photos[i % len(photos)]
        r, c = rng.integers(0, p.shape[0] - 16), rng.integers(0, p.shape[1] - 16)
        out[i] = p[r:r + 16, c:c + 16]
    return out


def test_colour_conv_reads_and_writes_channels_last_rows_as_pytorch_does(vae_dist_bin, tmp_path):
    """Colour images stay [H, W, C] rows, as the .npy holds them: the first conv reads and the
    last deconv writes them so. The PyTorch twin (NCHW inside, permuted at both ends) gives
    vae-dist's held-out ELBO; the same module fed the rows as if they were NCHW does not."""
    patches = colour_patches(240)
    np.save(tmp_path / "colour-train.npy", patches[:200])
    np.save(tmp_path / "colour-test.npy", patches[200:])
    (tmp_path / "colour.yaml").write_text(COLOUR_CONFIG)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    run([vae_dist_bin, "train", "--config", str(tmp_path / "colour.yaml"), "--out", str(tmp_path / "run"), "--quiet"], env)
    path = str(tmp_path / "run" / "final.safetensors")
    out = run([vae_dist_bin, "eval", "--checkpoint", path, "--mean-z", "--json", "--threads", "1"], env)
    swift = float(json.loads(out.strip().splitlines()[-1])["elbo"])
    module = vt.load(path).double()
    assert module.config()["input_shape"] == [3, 16, 16]
    rows = patches[200:].reshape(40, -1).astype(np.float64) / 255
    ours = python_elbo(module, rows)
    assert relative(ours, swift) <= 1e-5, f"vae-dist {swift!r}, python {ours!r}"
    as_nchw = patches[200:].transpose(0, 3, 1, 2).reshape(40, -1).astype(np.float64) / 255
    assert relative(python_elbo(module, as_nchw), swift) > 1e-3, "the check is not sensitive to the layout"
