"""``configs/mnist.yaml`` trained in PyTorch, and the held-out ELBO computed as vae-dist computes it:
the PyTorch side of ``scripts/time-to-quality``.

Training is ``vae_dist.torch_bench``'s (the same functions, not a copy): vae-dist's 784-500-500-20
Bernoulli VAE, batch 100, Adam lr 1e-3 (betas 0.9/0.999, eps 1e-8), dynamically binarised MNIST
(a fresh Bernoulli draw of every pixel each time an image is used, torch's RNG), a new
permutation every epoch with the remainder dropped, so 10 epochs are 6,000 steps. By default in
PyTorch's best 2-core configuration as ``scripts/bench --vs-pytorch`` measured it: one process,
2 intra-op threads, fused Adam and ``torch.set_flush_denormal(True)`` (DistributedDataParallel over
gloo with 2 processes of 1 thread was 1.7x slower there).

The held-out ELBO (``heldout_elbo``) is the estimator of ``vae-dist eval`` and of a training run's
``test_elbo`` (``Estimator.elbo`` in Sources/VAE/Estimators.swift, called by ``TrainingRun.evaluate``):
the mean over the 10,000 MNIST test images of log p(x|z) - KL(q(z|x) || N(0, I)), with the KL in
closed form, z = mu + exp(logvar / 2) * eps and one eps per image (``--samples`` S averages S). The
test images are binarised once with vae-dist's fixed held-out seed (``vae_dist.data.heldout``, the
same bits), and eps is the draw vae-dist makes for that image and sample
(``vae_dist.data.eval_noise``), so on the same weights the two evaluations differ only by float
rounding. Per-image terms are float32, summed in float64, as vae-dist does.

Prints one JSON line: the steps, training seconds, the held-out ELBO and its terms, and the settings.
With ``--checkpoint FILE`` it trains nothing and evaluates that vae-dist checkpoint instead.
"""

import argparse
import os
import sys
import time

from .gemm_ceiling import MNIST_MODEL, positive

#: Held-out images per forward pass of the evaluation (any size gives the same sums up to rounding).
EVAL_CHUNK = 500


class TorchTrainError(Exception):
    """A setting or input the run cannot use; the message is one line."""


def heldout_images(data_dir, limit=None):
    """The held-out MNIST images as vae-dist evaluates them: float32 ``[N, 784]`` 0/1 torch tensor."""
    import torch

    from . import data, torch_bench

    try:
        path = torch_bench.images_path(data_dir, torch_bench.TEST_IMAGES)
    except torch_bench.TorchBenchError as e:
        raise TorchTrainError(str(e)) from None
    return torch.from_numpy(data.heldout(data.read_idx(path), "dynamic", limit))


def heldout_elbo(vae, x, samples=1):
    """``(elbo, recon, kl)``: vae-dist's held-out estimator (see the module's docstring) of the
    ``vae_dist.torch.VAE`` ``vae`` on the rows ``x``, in nats per image; ``recon`` is -log p(x|z)."""
    import torch

    from .data import eval_noise

    recon = kl = 0.0
    with torch.no_grad():
        for start in range(0, x.shape[0], EVAL_CHUNK):
            rows = x[start:start + EVAL_CHUNK]
            for s in range(samples):
                eps = torch.from_numpy(eval_noise(start, rows.shape[0], vae.zdim, s))
                r, k = vae.elbo_terms(rows, eps)
                recon -= float(r.double().sum())
                kl += float(k.double().sum())
    count = x.shape[0] * samples
    return -(recon + kl) / count, recon / count, kl / count


def train(a):
    """Trains ``a.steps`` steps as the module's docstring says; returns ``(vae, seconds, adam_impl,
    flushing)``; the seconds cover the steps alone (not reading the data or building the model)."""
    import torch

    from . import torch_bench

    flushing = torch_bench.set_threads(a)
    torch.manual_seed(a.seed)
    vae = torch_bench.build_model(MNIST_MODEL["input_size"], MNIST_MODEL["hidden"], MNIST_MODEL["decoder_hidden"],
                                  MNIST_MODEL["zdim"])
    model = torch_bench.terms_module(vae)
    optimizer, impl = torch_bench.make_optimizer(model.parameters(), a.adam, a.lr)
    batches = torch_bench.Batches(torch_bench.load_images(a.data), a.batch, a.seed)
    start = time.perf_counter()
    for _ in range(a.steps):
        torch_bench.train_step(model, optimizer, batches, vae.zdim)
    return vae.eval(), time.perf_counter() - start, impl, flushing


def train_and_evaluate(a):
    import torch

    x = heldout_images(a.data, a.limit)
    vae, seconds, impl, flushing = train(a)
    elbo, recon, kl = heldout_elbo(vae, x, a.samples)
    return {"framework": "pytorch", "torch": torch.__version__, "threads": a.threads, "adam": a.adam,
            "adam_impl": impl, "flush_denormal": flushing, "batch": a.batch, "epochs": a.epochs, "steps": a.steps,
            "samples": a.steps * a.batch, "train_seconds": seconds, "samples_per_sec": a.steps * a.batch / seconds,
            "test_elbo": elbo, "test_recon": recon, "test_kl": kl, "eval_images": int(x.shape[0]),
            "eval_samples": a.samples}


def evaluate_checkpoint(a):
    from . import torch as vt

    try:
        vae = vt.load(a.checkpoint)
    except (OSError, ValueError, RuntimeError) as e:
        raise TorchTrainError(f"--checkpoint {a.checkpoint}: {str(e).strip().splitlines()[0]}") from None
    if vae.input_size != MNIST_MODEL["input_size"] or vae.likelihood != "bernoulli":
        raise TorchTrainError(f"--checkpoint {a.checkpoint}: expected a Bernoulli model of 784 pixels (MNIST), "
                              f"got {vae.likelihood} with {vae.input_size} inputs")
    x = heldout_images(a.data, a.limit)
    elbo, recon, kl = heldout_elbo(vae, x, a.samples)
    return {"framework": "pytorch", "checkpoint": a.checkpoint, "test_elbo": elbo, "test_recon": recon,
            "test_kl": kl, "eval_images": int(x.shape[0]), "eval_samples": a.samples}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m vae_dist.torch_train",
        description="Train configs/mnist.yaml's model (784-500-500-20 Bernoulli VAE, batch 100, Adam lr 1e-3, "
                    "dynamically binarised MNIST, 10 epochs = 6,000 steps) in PyTorch, by default in its best "
                    "2-core setting (2 threads, fused Adam, flush-denormal), then print the held-out ELBO over "
                    "the 10,000 test images computed as `vae-dist eval` computes it (the same test-set bits and "
                    "noise), as one JSON line. With --checkpoint, evaluate a vae-dist checkpoint instead.")
    p.add_argument("--data", default=os.environ.get("VAE_DIST_DATA", "data"),
                   help="directory holding mnist/ (default: $VAE_DIST_DATA, else ./data)")
    p.add_argument("--epochs", type=positive, default=10, help="passes over the 60,000 training images (default 10)")
    p.add_argument("--steps", type=positive, help="optimizer steps instead of --epochs")
    p.add_argument("--threads", type=positive, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--adam", choices=["default", "fused"], default="fused",
                   help="torch.optim.Adam as constructed by default, or fused=True (default fused)")
    p.add_argument("--no-flush-denormal", dest="flush_denormal", action="store_false",
                   help="leave subnormal floats on (default: torch.set_flush_denormal(True), as vae-dist)")
    p.add_argument("--batch", type=positive, default=MNIST_MODEL["batch"], help="batch (default 100)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=1, help="torch's seed (default 1)")
    p.add_argument("--samples", type=positive, default=1, help="eps draws per test image, averaged (default 1)")
    p.add_argument("--limit", type=positive, help="evaluate only the first N test images (default all 10,000)")
    p.add_argument("--checkpoint", help="evaluate this vae-dist checkpoint instead of training")
    a = p.parse_args(argv)
    if not a.lr > 0:
        p.error(f"--lr: expected a number > 0, got {a.lr}")
    a.steps = a.steps or a.epochs * (60000 // a.batch)
    return a


def main(argv=None):
    from .torch_bench import run_tool

    a = parse_args(argv)
    return run_tool(
        "torch_train", "scripts/time-to-quality", (TorchTrainError, ValueError, OSError),
        lambda: evaluate_checkpoint(a) if a.checkpoint else train_and_evaluate(a))


if __name__ == "__main__":
    sys.exit(main())
