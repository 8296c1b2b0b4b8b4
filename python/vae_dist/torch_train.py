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

With ``--model iwae-mnist``, ``configs/iwae-mnist.yaml`` instead: Burda et al.'s 784-200-200-50 tanh
network (``vae_dist.torch.VAE``'s layer lists, the same tensors as vae-dist's), Adam ε 1e-4 and the
IWAE paper's stepwise learning-rate decay, lr·10^(−i/7) in epochs [Σ_{j<i} 3^j, Σ_{j≤i} 3^j), set
before each step as vae-dist's ``LRSchedule`` does. ``--objective iwae --train-samples K`` trains
the importance-weighted bound: k noise draws per row, the k·B samples through the decoder as one
batch, loss −Σ_r log (1/k) Σ_i w_ri / B (``VAE.iwae_bound``), the gradient autograd's (Burda et
al.'s estimator, as vae-dist's ``ImportanceWeighted``). The initialisation has vae-dist's
distribution (PyTorch's default for ``nn.Linear``: U(±1/√fan_in) for weights and biases), not its
draws: torch's RNG, seeded by ``--seed``, keys initialisation, binarisation and noise.

``--out FILE`` writes the trained weights as a vae-dist checkpoint (``vae_dist.torch.save_checkpoint``),
so ``vae-dist eval --checkpoint FILE --iw 5000 --active-units`` measures them with vae-dist's own
estimators.

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

#: The configs this tool trains (``--model``): the network and the settings where they differ.
MODELS = {
    "mnist": {"model": {"input_size": 784, "hidden": MNIST_MODEL["hidden"], "decoder_hidden": MNIST_MODEL["decoder_hidden"],
                        "zdim": MNIST_MODEL["zdim"], "likelihood": "bernoulli"},
              "adam_eps": 1e-8, "lr_schedule": "constant"},
    "iwae-mnist": {"model": {"kind": "vae", "input_size": 784, "encoder": ["dense 200 tanh", "dense 200 tanh"],
                             "decoder": ["dense 200 tanh", "dense 200 tanh", "dense 784"], "zdim": 50,
                             "likelihood": "bernoulli"},
                   "adam_eps": 1e-4, "lr_schedule": "iwae"},
}


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


def iwae_stage(epoch):
    """The stage i of epoch ``epoch`` (from 0) in the IWAE schedule: stage i lasts 3^i epochs."""
    stage, end, length = 0, 1, 1
    while epoch >= end:
        stage, length = stage + 1, length * 3
        end += length
    return stage


def step_lr(base, schedule, step, steps_per_epoch):
    """The learning rate of step ``step`` (from 0), as vae-dist's ``LRSchedule.lr`` (no warm-up):
    ``base``, or with ``iwae`` base·10^(−i/7) in stage i, rounded to float32 as vae-dist holds it."""
    import numpy as np

    if schedule == "constant":
        return base
    return float(np.float32(base * 10 ** (-iwae_stage(step // steps_per_epoch) / 7)))


def iwae_loss(vae, x, eps):
    """The IWAE training loss of rows ``x`` with noise ``eps`` ``[B, k, zdim]``: the negative
    bound per row, averaged over the B rows (as the ELBO's loss is)."""
    return -vae.iwae_bound(x, eps).sum() / x.shape[0]


def iwae_step(vae, optimizer, batches, samples):
    import torch

    x = batches.next()
    loss = iwae_loss(vae, x, torch.randn(x.shape[0], samples, vae.zdim))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def build_model(name):
    """``--model name``'s network, float32 in train mode, initialised by torch's RNG."""
    from . import torch as vt

    return vt.VAE.from_config(MODELS[name]["model"]).train()


def train(a):
    """Trains ``a.steps`` steps as the module's docstring says; returns ``(vae, seconds, adam_impl,
    flushing)``; the seconds cover the steps alone (not reading the data or building the model)."""
    import torch

    from . import torch_bench

    flushing = torch_bench.set_threads(a)
    torch.manual_seed(a.seed)
    vae = build_model(a.model)
    model = torch_bench.terms_module(vae)
    optimizer, impl = torch_bench.make_optimizer(model.parameters(), a.adam, a.lr, a.adam_eps)
    batches = torch_bench.Batches(torch_bench.load_images(a.data), a.batch, a.seed)
    per_epoch = batches.images.shape[0] // a.batch
    start = time.perf_counter()
    for step in range(a.steps):
        for group in optimizer.param_groups:
            group["lr"] = step_lr(a.lr, a.lr_schedule, step, per_epoch)
        if a.objective == "iwae":
            iwae_step(vae, optimizer, batches, a.train_samples)
        else:
            torch_bench.train_step(model, optimizer, batches, vae.zdim)
    a.epochs_done = a.steps // per_epoch
    return vae.eval(), time.perf_counter() - start, impl, flushing


def config_yaml(a, vae):
    """The config of this run as vae-dist writes one into a checkpoint (its model, data and the
    training settings this tool used), with a comment saying PyTorch trained it."""
    def value(v):
        return "[" + ", ".join(str(x) for x in v) + "]" if isinstance(v, list) else str(v)

    train = {"batch": a.batch, "steps": a.steps, "lr": a.lr, "adam_eps": a.adam_eps, "lr_schedule": a.lr_schedule,
             "objective": a.objective, "seed": a.seed}
    if a.objective == "iwae":
        train["samples"] = a.train_samples
    lines = [f"# trained by PyTorch: python -m vae_dist.torch_train --model {a.model}", f"name: {a.model}", "model:"]
    lines += [f"  {k}: {value(v)}" for k, v in vae.config().items()]
    lines += ["data:", "  dataset: mnist", "  binarize: dynamic", "train:"] + [f"  {k}: {v}" for k, v in train.items()]
    return "\n".join(lines) + "\n"


def train_and_evaluate(a):
    import torch

    from . import torch as vt

    x = heldout_images(a.data, a.limit)
    vae, seconds, impl, flushing = train(a)
    elbo, recon, kl = heldout_elbo(vae, x, a.samples)
    if a.out:
        vt.save_checkpoint(vae, a.out, config_yaml(a, vae), a.steps, a.epochs_done, a.seed, a.batch,
                           f"pytorch {torch.__version__}")
    return {"framework": "pytorch", "torch": torch.__version__, "model": a.model, "objective": a.objective,
            "train_samples": a.train_samples, "lr_schedule": a.lr_schedule, "adam_eps": a.adam_eps, "seed": a.seed,
            "threads": a.threads, "adam": a.adam,
            "adam_impl": impl, "flush_denormal": flushing, "batch": a.batch, "epochs": a.epochs, "steps": a.steps,
            "samples": a.steps * a.batch, "train_seconds": seconds, "samples_per_sec": a.steps * a.batch / seconds,
            "test_elbo": elbo, "test_recon": recon, "test_kl": kl, "eval_images": int(x.shape[0]),
            "eval_samples": a.samples, "checkpoint": a.out}


def evaluate_checkpoint(a):
    from . import torch as vt

    try:
        vae = vt.load(a.checkpoint)
    except (OSError, ValueError, RuntimeError) as e:
        raise TorchTrainError(f"--checkpoint {a.checkpoint}: {str(e).strip().splitlines()[0]}") from None
    if vae.input_size != MNIST_MODEL["input_size"] or vae.likelihood != "bernoulli":  # any network of MNIST
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
                    "noise), as one JSON line. --model iwae-mnist trains configs/iwae-mnist.yaml's network and settings "
                    "instead, --objective iwae --train-samples K the IWAE bound; --out writes a vae-dist checkpoint. "
                    "With --checkpoint, evaluate a vae-dist checkpoint instead.")
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
    p.add_argument("--model", choices=sorted(MODELS), default="mnist",
                   help="the network and settings of configs/<model>.yaml (default mnist: 784-500-500-20 ReLU, Adam "
                        "eps 1e-8, constant lr; iwae-mnist: 784-200-200-50 tanh, Adam eps 1e-4, the IWAE lr decay)")
    p.add_argument("--objective", choices=["elbo", "iwae"], default="elbo",
                   help="the ELBO, or the importance-weighted bound with --train-samples k (default elbo)")
    p.add_argument("--train-samples", type=positive,
                   help="iwae: k latent samples per training row (vae-dist train's --samples)")
    p.add_argument("--lr-schedule", choices=["constant", "iwae"], help="default: the model's config's")
    p.add_argument("--adam-eps", type=float, help="Adam's epsilon (default: the model's config's)")
    p.add_argument("--out", help="also write the trained weights as a vae-dist checkpoint (vae-dist eval reads it)")
    a = p.parse_args(argv)
    if not a.lr > 0:
        p.error(f"--lr: expected a number > 0, got {a.lr}")
    if (a.objective == "iwae") != (a.train_samples is not None):
        p.error("--train-samples goes with --objective iwae, and --objective iwae needs it")
    a.lr_schedule = a.lr_schedule or MODELS[a.model]["lr_schedule"]
    a.adam_eps = MODELS[a.model]["adam_eps"] if a.adam_eps is None else a.adam_eps
    if not a.adam_eps > 0:
        p.error(f"--adam-eps: expected a number > 0, got {a.adam_eps}")
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
