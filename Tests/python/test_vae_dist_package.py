#!/usr/bin/env python3
"""End-to-end test of the Python package in python/ (vae_dist) against the vae-dist binary.

Usage: test_vae_dist_package.py VAE_DIST_BINARY DATA_DIR
  DATA_DIR holds mnist/ (the four IDX files, raw or .gz), as for vae-dist --data.

Standalone (no pytest). Exit 0 on success; on failure the last line is "FAIL: <reason>" and the
exit status is 1 (2 for bad usage). Prints "SKIP: <reason>" and exits 0 when numpy, safetensors
or torch is missing.

(a) trains two short runs: MNIST 784-500-500 / z=20 Bernoulli with dynamic binarisation, and a
    small Gaussian-likelihood run on unbinarised MNIST;
(b) vae_dist.data.heldout against vae-dist's Batcher.heldOut: bit for bit on all 10,000 test
    images through the originals `vae-dist reconstruct` draws, and through the held-out ELBO:
    `vae-dist eval --mean-z` must equal the float64 ELBO of vae_dist.torch's module on
    heldout(...) to 1e-6 relative, and must not with the seed changed;
(c) vae_dist.torch.load builds a module that loads strictly, with the checkpoint's tensors
    exactly, and refuses another model kind with a one-line ValueError;
(d) vae_dist.torch.save_init writes the tensors back exactly;
(e) weights saved by PyTorch (safetensors.torch.save_file of a fresh module) start a vae-dist
    run (`train --init`) whose held-out ELBO with z = mu equals PyTorch's for those weights.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "python"))

RELATIVE_TOLERANCE = 1e-6
TEST_IMAGES = "t10k-images-idx3-ubyte"

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


class Failure(Exception):
    pass


def check(condition, reason):
    if not condition:
        raise Failure(reason)


def one_line(s):
    return " ".join(str(s).split())


def run(cmd, env):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        lines = (p.stderr.strip() or p.stdout.strip() or "no output").splitlines()
        raise Failure(f"{os.path.basename(cmd[0])} {cmd[1]} exited {p.returncode}: {one_line(lines[-1])}")
    return p.stdout


def read_png_gray(path):
    """Pixels of an 8-bit greyscale, non-interlaced PNG whose scanlines all use filter 0 (what
    vae-dist writes)."""
    import numpy as np

    with open(path, "rb") as f:
        b = f.read()
    check(b[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG")
    pos, idat, width, height = 8, [], None, None
    while pos < len(b):
        (n,) = struct.unpack(">I", b[pos:pos + 4])
        kind, data = b[pos + 4:pos + 8], b[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[:8])
            check(data[8:] == b"\x08\x00\x00\x00\x00", f"{path}: expected an 8-bit greyscale PNG")
        elif kind == b"IDAT":
            idat.append(data)
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, width + 1)
    check(bool((raw[:, 0] == 0).all()), f"{path}: a scanline uses a PNG filter other than 0")
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


def main(argv):
    if len(argv) != 3:
        print("usage: test_vae_dist_package.py VAE_DIST_BINARY DATA_DIR", file=sys.stderr)
        return 2
    binary, data_dir = os.path.abspath(argv[1]), os.path.abspath(argv[2])
    try:
        import numpy as np
        import safetensors  # noqa: F401
        import torch
    except ImportError as e:
        print(f"SKIP: {e.name or e} is not installed (this test needs numpy, safetensors and torch)")
        return 0

    import safetensors.numpy
    import vae_dist
    from vae_dist import checkpoint, data
    from vae_dist import torch as vt

    check(os.access(binary, os.X_OK), f"{binary}: not an executable")
    images_path = os.path.join(data_dir, "mnist", TEST_IMAGES)
    if not os.path.exists(images_path):
        images_path += ".gz"
    check(os.path.exists(images_path), f"{data_dir}/mnist: no {TEST_IMAGES}[.gz]")
    env = dict(os.environ, VAE_DIST_DATA=data_dir)
    torch.set_num_threads(1)
    t_start = time.time()
    timings = []

    def timed(label, t0):
        timings.append(f"{label} {time.time() - t0:.1f}s")

    def ok(msg):
        print(f"ok: {msg}", flush=True)

    with tempfile.TemporaryDirectory(prefix="vae-dist-python-") as tmp:
        # (a) Short training runs.
        t0 = time.time()
        runs = {}
        for name, yaml in (("mnist", MNIST_CONFIG), ("gaussian", GAUSSIAN_CONFIG)):
            config = os.path.join(tmp, name + ".yaml")
            with open(config, "w") as f:
                f.write(yaml)
            out = os.path.join(tmp, name)
            run([binary, "train", "--config", config, "--data", data_dir, "--out", out, "--eval-every", "0",
                 "--checkpoint-every", "0", "--threads", "1", "--quiet"], env)
            runs[name] = os.path.join(out, "final.safetensors")
            check(os.path.isfile(runs[name]), f"{name} run: no {runs[name]}")
        ck = runs["mnist"]
        timed("train", t0)
        ok(f"(a) trained {', '.join(os.path.relpath(p, tmp) for p in runs.values())} with {os.path.basename(binary)}")

        # read_idx: raw and gzip give the same array.
        images = data.read_idx(images_path)
        check(images.shape == (10000, 28, 28) and images.dtype == np.uint8,
              f"read_idx({images_path}): shape {images.shape} dtype {images.dtype}, expected (10000, 28, 28) uint8")
        raw_copy = os.path.join(tmp, TEST_IMAGES)
        with open(images_path, "rb") as f:
            blob = f.read()
        with open(raw_copy, "wb") as f:
            f.write(zlib.decompress(blob, 31) if blob[:2] == b"\x1f\x8b" else blob)
        check(np.array_equal(data.read_idx(raw_copy), images), "read_idx: raw and gzip files differ")

        # (c) load: strict, exact tensors, names in vae-dist's order; other kinds refused.
        t0 = time.time()
        tensors, meta = checkpoint.read(ck)
        model_cfg = checkpoint.model_config(meta, ck)
        module = vt.load(ck)
        expected = [f"encoder.{i}" for i in range(len(model_cfg["hidden"]))] + ["encoder.mu", "encoder.logvar"]
        expected += [f"decoder.{i}" for i in range(len(model_cfg["decoder_hidden"]))] + ["decoder.out"]
        expected = [f"{layer}.{p}" for layer in expected for p in ("weight", "bias")]
        state = module.state_dict()
        check(list(state) == expected, f"load: state_dict keys {list(state)} != {expected}")
        model_part = checkpoint.model_tensors(tensors)
        check(sorted(model_part) == sorted(expected), f"load: checkpoint model tensors {sorted(model_part)}")
        check(len(tensors) == 3 * len(expected), f"checkpoint: expected model + adam.m + adam.v tensors, found {len(tensors)}")
        for k in expected:
            check(state[k].dtype == torch.float32 and np.array_equal(state[k].numpy(), model_part[k]),
                  f"load: {k} differs from the checkpoint")
        check(module.config() == {k: model_cfg[k] for k in module.config()}, "load: module config != metadata")
        other = os.path.join(tmp, "cvae.safetensors")
        flat_meta = dict(meta, model=json.dumps(meta["model"]), kind="cvae")
        safetensors.numpy.save_file(model_part, other, metadata=flat_meta)
        try:
            vt.load(other)
            raise Failure("load: a checkpoint of kind 'cvae' was accepted")
        except ValueError as e:
            msg = str(e)
            check("\n" not in msg and other in msg and "cvae" in msg,
                  f"load: the kind error should be one line naming the file and the kind: {msg!r}")
        timed("load", t0)
        ok(f"(c) load: {len(expected)} tensors loaded strictly and exactly; kind 'cvae' refused: {msg}")

        # (d) save_init round trip.
        init = os.path.join(tmp, "init.safetensors")
        vt.save_init(module, init)
        back, init_meta = checkpoint.read(init)
        check(sorted(back) == sorted(expected), f"save_init: tensors {sorted(back)} != {sorted(expected)}")
        for k in expected:
            check(back[k].dtype == np.float32 and back[k].shape == model_part[k].shape
                  and back[k].tobytes() == model_part[k].tobytes(), f"save_init: {k} does not round-trip exactly")
        fresh = vt.VAE.from_config(model_cfg)
        fresh.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in back.items()}, strict=True)
        check(all(torch.equal(fresh.state_dict()[k], state[k]) for k in expected), "save_init: reload differs")
        ok(f"(d) save_init: {len(back)} float32 tensors round-trip bit for bit (metadata {init_meta or 'none'})")

        # (b1) The held-out bits, all 10,000 images: vae-dist reconstruct draws them as 0/255.
        check(checkpoint.binarization(meta) == "dynamic", f"binarization: {checkpoint.binarization(meta)!r}")
        t0 = time.time()
        x = data.heldout(images, binarize="dynamic")
        timed("heldout(10000)", t0)
        check(x.shape == (10000, 784) and x.dtype == np.float32, f"heldout: shape {x.shape} dtype {x.dtype}")
        t0 = time.time()
        png_path = os.path.join(tmp, "reconstruct.png")
        run([binary, "reconstruct", "--checkpoint", ck, "--data", data_dir, "--n", "10000", "--out", png_path], env)
        originals, recons = reconstruct_tiles(read_png_gray(png_path), 10000)
        check(set(np.unique(originals)) <= {0, 255}, "reconstruct: originals are not binary")
        wrong = int(((originals == 255) != (x == 1)).sum())
        check(wrong == 0, f"heldout: {wrong} of {x.size} bits differ from vae-dist's held-out set")
        x_flipped = data.heldout(images, binarize="dynamic", seed=data.HELDOUT_SEED + 1)
        flipped_bits = int(((originals == 255) != (x_flipped == 1)).sum())
        check(flipped_bits > 0, "heldout: seed + 1 gives the same bits")
        # The reconstructions, from z = mu: the module's decoder within one grey level.
        m64 = module.double()
        with torch.no_grad():
            mu, _ = m64.encode(torch.from_numpy(x).double())
            grey = torch.round(torch.sigmoid(m64.decode(mu)) * 255).numpy()
        worst = float(np.abs(grey - recons).max())
        check(worst <= 1, f"decode: reconstructions differ from vae-dist's by up to {worst:.0f} grey levels")
        timed("reconstruct check", t0)
        ok(f"(b) heldout == vae-dist's held-out set bit for bit, 10000 images x 784 pixels "
           f"(seed + 1 flips {flipped_bits} bits); decode(mu) within {worst:.0f} grey level of vae-dist reconstruct")

        # (b2) The held-out ELBO with z = mu: vae-dist eval vs the module in float64.
        t0 = time.time()

        def swift_elbo(path, limit):
            cmd = [binary, "eval", "--checkpoint", path, "--data", data_dir, "--mean-z", "--json", "--threads", "1"]
            out = run(cmd + (["--limit", str(limit)] if limit else []), env)
            return float(json.loads(out.strip().splitlines()[-1])["elbo"])

        def python_elbo(mod, xs):
            with torch.no_grad():
                return float(mod.elbo(torch.from_numpy(xs).double(), eps=0).mean())

        for limit in (None, 100):
            n = limit or 10000
            swift = swift_elbo(ck, limit)
            ours = python_elbo(m64, x[:n])
            wrong_seed = python_elbo(m64, x_flipped[:n])
            r, r_wrong = relative(ours, swift), relative(wrong_seed, swift)
            check(r <= RELATIVE_TOLERANCE,
                  f"ELBO ({n} images, z = mu): vae-dist {swift!r}, python {ours!r}: relative difference {r:.2e} > {RELATIVE_TOLERANCE:g}")
            check(r_wrong > RELATIVE_TOLERANCE,
                  f"ELBO ({n} images): seed + 1 still agrees with vae-dist ({r_wrong:.2e}): the check is not sensitive")
            ok(f"(b) ELBO, {n} images, z = mu: vae-dist {swift:.6f}, python float64 {ours:.6f} (relative {r:.1e}); "
               f"with seed + 1: {wrong_seed:.6f} (relative {r_wrong:.1e})")

        # Gaussian likelihood on unbinarised pixels (binarize none: intensity * float32(1/255)).
        g_path = runs["gaussian"]
        _, g_meta = checkpoint.read(g_path)
        g_bin = checkpoint.binarization(g_meta)
        check(g_bin == "none", f"gaussian run: binarization {g_bin!r}, expected 'none'")
        g_module = vt.load(g_path).double()
        check(g_module.likelihood == "gaussian" and g_module.sigma == 0.5,
              f"gaussian run: module likelihood {g_module.likelihood} sigma {g_module.sigma}")
        xg = data.heldout(images, binarize=g_bin)
        check(np.array_equal(xg, images.reshape(10000, -1).astype(np.float32) * (np.float32(1) / np.float32(255))),
              "heldout(binarize='none') is not intensity * float32(1/255)")
        swift, ours = swift_elbo(g_path, None), python_elbo(g_module, xg)
        r = relative(ours, swift)
        check(r <= RELATIVE_TOLERANCE,
              f"Gaussian ELBO (z = mu): vae-dist {swift!r}, python {ours!r}: relative difference {r:.2e}")
        timed("eval checks", t0)
        ok(f"(b) Gaussian (sigma 0.5), binarize none, 10000 images: vae-dist {swift:.6f}, python {ours:.6f} (relative {r:.1e})")

        # (e) The other direction: weights written by PyTorch (a freshly initialised module, not
        # vae-dist's) start a vae-dist run. With lr 1e-30 one Adam step moves no float32 weight,
        # so the run's held-out ELBO with z = mu is PyTorch's for those weights.
        torch.manual_seed(0)
        torch_module = vt.VAE.from_config(model_cfg)
        torch_init = os.path.join(tmp, "torch-init.safetensors")
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in torch_module.state_dict().items()}, torch_init)
        run_dir = os.path.join(tmp, "from-torch")
        run([binary, "train", "--config", os.path.join(tmp, "mnist.yaml"), "--data", data_dir, "--out", run_dir,
             "--init", torch_init, "--steps", "1", "--lr", "1e-30", "--quiet", "--no-tensorboard", "--threads", "1"], env)
        started = vt.load(os.path.join(run_dir, "final.safetensors"))
        same = all(torch.equal(started.state_dict()[k], torch_module.state_dict()[k]) for k in expected)
        check(same, "--init: the run's weights differ from the PyTorch module's")
        swift = swift_elbo(os.path.join(run_dir, "final.safetensors"), 1000)
        ours = python_elbo(torch_module.double(), x[:1000])
        r = relative(ours, swift)
        check(r <= RELATIVE_TOLERANCE, f"--init from PyTorch: vae-dist ELBO {swift!r}, PyTorch {ours!r} ({r:.2e})")
        ok(f"(e) PyTorch-initialised weights start a vae-dist run: its ELBO (z = mu, 1000 images) {swift:.6f} "
           f"equals PyTorch's {ours:.6f} (relative {r:.1e})")

    print(f"PASS: vae_dist {vae_dist.__version__} against {binary} in {time.time() - t_start:.1f}s "
          f"({', '.join(timings)})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Failure as e:
        print(f"FAIL: {one_line(e)}")
        sys.exit(1)
    except Exception as e:  # an unexpected error: still one line, with where it happened
        frame = traceback.extract_tb(e.__traceback__)[-1]
        print(f"FAIL: {type(e).__name__} at {os.path.basename(frame.filename)}:{frame.lineno}: {one_line(e)}")
        sys.exit(1)
