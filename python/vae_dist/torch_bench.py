"""The PyTorch baseline of ``scripts/bench --vs-pytorch``: vae-dist's network (``vae_dist.torch.VAE``),
loss and data pipeline trained in PyTorch and timed like ``vae-dist bench``.

One step: the next global batch of a per-epoch permutation of the MNIST training images,
dynamically binarised (a fresh Bernoulli draw of every pixel, torch's RNG), noise eps ~ N(0, I),
loss = sum over the rows of (KL - log p(x|z)) / batch, backward, Adam (lr 1e-3, betas 0.9/0.999,
eps 1e-8, as vae-dist). Timed: --warmup steps, then the median of --repeats blocks of --steps.
With --ddp, --world processes (torch.distributed, gloo, over 127.0.0.1) each take their share of
every global batch, as vae-dist's ranks do; DistributedDataParallel averages the gradients.

Prints one JSON line: samples/s (global), steps/s, the configuration and torch's version.
"""

import argparse
import json
import os
import socket
import statistics
import sys
import time

from .gemm_ceiling import MNIST_MODEL, positive

TRAIN_IMAGES = "train-images-idx3-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"


class TorchBenchError(Exception):
    """A setting or input the benchmark cannot run with; the message is one line."""


def images_path(data_dir, name=TRAIN_IMAGES):
    """``<data_dir>/mnist``'s images file ``name`` (default the training images), raw or gzip-compressed."""
    base = os.path.join(data_dir, "mnist", name)
    path = next((p for p in (base, base + ".gz") if os.path.isfile(p)), None)
    if path is None:
        raise TorchBenchError(f"--data: no {base}[.gz] (run scripts/get-data, or set VAE_DIST_DATA)")
    return path


def load_images(data_dir):
    """MNIST's training images as a uint8 tensor ``[60000, 784]`` from ``<data_dir>/mnist``."""
    import torch

    from .data import read_idx

    images = read_idx(images_path(data_dir))
    return torch.from_numpy(images.reshape(images.shape[0], -1))


def build_model(input_size, hidden, decoder_hidden, zdim):
    """vae-dist's network as a PyTorch module (float32, train mode)."""
    from .torch import VAE

    return VAE(input_size, hidden, decoder_hidden, zdim, "bernoulli").train()


def terms_module(vae):
    """A module whose forward is ``vae.elbo_terms(x, eps)`` (what DistributedDataParallel wraps,
    so that its gradient hooks see the whole step)."""
    from torch import nn

    class ELBOTerms(nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, x, eps):
            return self.vae.elbo_terms(x, eps)

    return ELBOTerms(vae)


def step_loss(terms, x, eps, batch):
    """vae-dist's training loss of rows ``x`` with noise ``eps``: the sum over the rows of
    KL(q(z|x) || N(0, I)) - log p(x|z), divided by ``batch`` (the rows a process takes).
    ``terms``: ``terms_module(vae)``, or DistributedDataParallel around it."""
    recon, kl = terms(x, eps)
    return (kl - recon).sum() / batch


def make_optimizer(params, adam, lr, eps=1e-8):
    """``(optimizer, implementation)``: torch.optim.Adam as constructed by default, or fused
    (falling back to foreach where this torch has no fused Adam on CPU); ``eps``: Adam's ε."""
    import torch

    if adam == "default":
        return torch.optim.Adam(params, lr=lr, eps=eps), "default"
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True), "fused"
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr, eps=eps, foreach=True), "foreach"


class Batches:
    """This process's rows of each global batch: a fresh permutation every epoch (the same on
    every process: ``seed`` and the epoch key it), process ``rank`` of ``world`` taking rows
    [rank·B/world, (rank+1)·B/world) of it, binarised with the default torch RNG."""

    def __init__(self, images, batch, seed, rank=0, world=1):
        import torch

        self.torch, self.images, self.batch, self.seed = torch, images, batch, seed
        self.lo, self.hi = rank * batch // world, (rank + 1) * batch // world
        self.epoch, self.pos, self.order = -1, images.shape[0], None

    def next(self):
        torch = self.torch
        if self.pos + self.batch > self.images.shape[0]:
            self.epoch += 1
            self.order = torch.randperm(self.images.shape[0], generator=torch.Generator().manual_seed(self.seed + self.epoch))
            self.pos = 0
        idx = self.order[self.pos + self.lo:self.pos + self.hi]
        self.pos += self.batch
        return torch.bernoulli(self.images[idx].float() * (1.0 / 255.0))


def train_step(model, optimizer, batches, zdim):
    import torch

    x = batches.next()
    loss = step_loss(model, x, torch.randn(x.shape[0], zdim), x.shape[0])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def timed_blocks(a, model, optimizer, batches, barrier=lambda: None):
    """Steps/s of each of ``a.repeats`` blocks of ``a.steps`` steps after ``a.warmup`` steps."""
    for _ in range(a.warmup):
        train_step(model, optimizer, batches, a.zdim)
    rates = []
    for _ in range(a.repeats):
        barrier()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            train_step(model, optimizer, batches, a.zdim)
        barrier()
        rates.append(a.steps / (time.perf_counter() - t0))
    return rates


def set_threads(a):
    """Intra-op threads and subnormal flushing as asked; returns whether flushing is on."""
    import torch

    torch.set_num_threads(a.threads)
    return bool(torch.set_flush_denormal(True)) if a.flush_denormal else False


def result(a, rates, impl, flushing):
    import torch

    rate = statistics.median(rates)
    return {"configuration": a.label, "framework": "pytorch", "torch": torch.__version__, "adam": a.adam,
            "adam_impl": impl, "threads": a.threads, "flush_denormal": flushing, "world_size": a.world if a.ddp else 1,
            "backend": "gloo" if a.ddp else None, "batch": a.batch, "steps_per_sec": rate,
            "samples_per_sec": rate * a.batch, "all_steps_per_sec": rates}


def run_single(a):
    import torch

    flushing = set_threads(a)
    torch.manual_seed(a.seed)
    model = terms_module(build_model(a.input_size, a.hidden, a.decoder_hidden, a.zdim))
    optimizer, impl = make_optimizer(model.parameters(), a.adam, a.lr)
    rates = timed_blocks(a, model, optimizer, Batches(load_images(a.data), a.batch, a.seed))
    return result(a, rates, impl, flushing)


def ddp_worker(rank, a, port, queue):
    """One process of the --ddp run; rank 0 puts the result (or the error) on ``queue``."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    try:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cores) >= a.world * a.threads:  # one core each, as mpirun --bind-to core
            os.sched_setaffinity(0, cores[rank * a.threads:(rank + 1) * a.threads])
        flushing = set_threads(a)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=a.world)
        torch.manual_seed(a.seed)
        model = DistributedDataParallel(terms_module(build_model(a.input_size, a.hidden, a.decoder_hidden, a.zdim)))
        optimizer, impl = make_optimizer(model.parameters(), a.adam, a.lr)
        torch.manual_seed(a.seed * 1000 + rank + 1)  # each rank its own binarisation and noise
        batches = Batches(load_images(a.data), a.batch, a.seed, rank, a.world)
        rates = timed_blocks(a, model, optimizer, batches, barrier=dist.barrier)
        if rank == 0:
            queue.put(result(a, rates, impl, flushing))
        dist.destroy_process_group()
    except Exception as e:  # reported by the parent as one line
        if rank == 0:
            queue.put({"error": f"{type(e).__name__}: {e}".splitlines()[0]})
        raise


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(a):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    try:
        mp.spawn(ddp_worker, args=(a, free_port(), queue), nprocs=a.world, join=True)
    except Exception as e:
        out = queue.get() if not queue.empty() else {"error": str(e).strip().splitlines()[-1]}
        raise TorchBenchError(f"--ddp: {out.get('error', e)}") from None
    return queue.get()


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m vae_dist.torch_bench",
        description="Train vae-dist's network (default: configs/mnist.yaml's 784-500-500-20 Bernoulli VAE, batch "
                    "100, Adam lr 1e-3) in PyTorch on dynamically binarised MNIST and print its throughput as one "
                    "JSON line: the median over --repeats blocks of --steps steps, after --warmup steps. "
                    "scripts/bench --vs-pytorch runs it beside vae-dist.")
    p.add_argument("--adam", choices=["default", "fused"], default="default",
                   help="torch.optim.Adam as constructed by default, or fused=True (foreach where fused is "
                        "missing; the JSON's adam_impl says which ran)")
    p.add_argument("--threads", type=positive, default=1, help="torch intra-op threads per process (default 1)")
    p.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True), as vae-dist does")
    p.add_argument("--ddp", action="store_true",
                   help="DistributedDataParallel over --world processes (gloo, 127.0.0.1), each on its share of "
                        "the global batch; one core each when there are enough")
    p.add_argument("--world", type=positive, default=2, help="processes with --ddp (default 2)")
    p.add_argument("--data", default=os.environ.get("VAE_DIST_DATA", "data"),
                   help="directory holding mnist/ (default: $VAE_DIST_DATA, else ./data)")
    p.add_argument("--label", default="", help="the configuration's name in the JSON (default: built from the flags)")
    p.add_argument("--batch", type=positive, default=MNIST_MODEL["batch"], help="global batch (default 100)")
    p.add_argument("--hidden", type=positive, nargs="+", default=MNIST_MODEL["hidden"], help="encoder widths")
    p.add_argument("--zdim", type=positive, default=MNIST_MODEL["zdim"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    p.add_argument("--steps", type=positive, default=50, help="steps per timed block (default 50)")
    p.add_argument("--repeats", type=positive, default=5, help="timed blocks; the median is reported (default 5)")
    a = p.parse_args(argv)
    if a.ddp and a.batch < a.world:
        p.error(f"--batch {a.batch}: expected at least one row per process (--world {a.world})")
    a.input_size, a.decoder_hidden = MNIST_MODEL["input_size"], list(reversed(a.hidden))
    a.label = a.label or default_label(a)
    return a


def default_label(a):
    """E.g. ``pytorch fused+ftz 1t`` or ``pytorch ddp gloo 2x1 fused``."""
    adam = a.adam + ("+ftz" if a.flush_denormal else "")
    return f"pytorch ddp gloo {a.world}x{a.threads} {adam}" if a.ddp else f"pytorch {adam} {a.threads}t"


def run_tool(name, installer, errors, body):
    """The command-line end of a PyTorch tool: 2 and one line naming ``installer`` when PyTorch
    is missing; else ``body()``'s result as one JSON line and 0, or 1 and one line for an error
    of the types ``errors``."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print(f"{name}: PyTorch is not installed in this Python ({installer} installs the CPU wheel; or pip "
              "install torch --index-url https://download.pytorch.org/whl/cpu)", file=sys.stderr)
        return 2
    try:
        out = body()
    except errors as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


def main(argv=None):
    a = parse_args(argv)

    def body():
        images_path(a.data)
        return run_ddp(a) if a.ddp else run_single(a)

    return run_tool("torch_bench", "scripts/bench --vs-pytorch", (TorchBenchError, ValueError, OSError), body)


if __name__ == "__main__":
    sys.exit(main())
