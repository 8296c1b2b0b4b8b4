"""scripts/own-data-study (see its --help): vae-dist on your own continuous data, checked against
PyTorch. The data are scikit-learn's 8×8 digits (shipped inside its wheel: no download),
dequantised and split as the "Your own data" page's lines do; the same network is trained in
PyTorch with the same loss, optimizer, batch and epochs, and both held-out ELBOs are reported.

Usage:
  python -m vae_dist.own_data data DIR
      DIR/train.npy, DIR/test.npy (float32 [N, 8, 8]) and DIR/test_labels.npy (int64)
  python -m vae_dist.own_data torch --like RUN --data DIR --seed S --out FILE.json [--eval-samples K]
      trains the network of the vae-dist run directory RUN (its final.safetensors: model and
      train settings) in PyTorch on DIR's files; FILE.json holds its held-out numbers
  python -m vae_dist.own_data report OUT --data DIR --seeds 1,2,3 [--docs DIR]
      OUT/digits.csv and OUT/digits.png from the study directory OUT (written by the script)

The held-out ELBO is a density (continuous data, in nats per example), so it may be positive.
Needs NumPy; `data` needs scikit-learn, `torch` PyTorch, `report` matplotlib.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np

from . import checkpoint, metrics
from .results import StudyError, load_json, write_csv as _write_csv

DATA_SEED = 0
TEST_COUNT = 180
LEVELS = 17  # load_digits' values are 0..16
# elbo: one z per example (what `vae-dist train` reports); elbo_k: each example's ELBO averaged
# over k draws of z (less noisy; still the ELBO, not the IW bound); elbo_mean_z: z = μ (a
# deterministic check, no bound); recon and kl: the terms of elbo.
FIELDS = ["framework", "seed", "epochs", "steps", "elbo", "elbo_k", "k", "elbo_mean_z", "recon", "kl",
          "train_seconds"]


def dequantise(values, rng, levels=LEVELS):
    """Integer levels 0..levels-1 as continuous values in (0, 1): (v + u) / levels with
    u ~ U(0, 1) drawn from ``rng``, float32. A density on integer-valued data is unbounded
    (a model can put infinite density on the integers); on dequantised data it is not."""
    return ((values + rng.uniform(size=values.shape)) / levels).astype(np.float32)


def split(x, labels, seed=DATA_SEED, test_count=TEST_COUNT):
    """Dequantises ``x`` and holds out ``test_count`` examples, both from one generator seeded
    by ``seed`` (uniforms first, then the permutation, as docs/own-data.md's lines do).
    Returns (train, test, train_labels, test_labels)."""
    rng = np.random.default_rng(seed)
    d = dequantise(x, rng)
    i = rng.permutation(len(d))
    return d[i[test_count:]], d[i[:test_count]], labels[i[test_count:]], labels[i[:test_count]]


def digits(seed=DATA_SEED, test_count=TEST_COUNT):
    """scikit-learn's digits (1797 × 8 × 8), dequantised and split: see ``split``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise StudyError("scikit-learn is not installed: pip install scikit-learn (its wheel ships the digits)") from None
    d = load_digits()
    return split(d.images, d.target, seed, test_count)


def write_data(directory, seed=DATA_SEED):
    """DIR/train.npy, DIR/test.npy and DIR/test_labels.npy; returns (train count, test count)."""
    train, test, _, test_labels = digits(seed)
    os.makedirs(directory, exist_ok=True)
    for name, a in (("train", train), ("test", test), ("test_labels", test_labels)):
        np.save(os.path.join(directory, name + ".npy"), a)
    return len(train), len(test)


def load_npy(path):
    """A data file as float32 rows [N, D]."""
    try:
        a = np.load(path)
    except (OSError, ValueError) as e:
        raise StudyError(f"{path}: cannot read: {e}") from None
    return a.reshape(len(a), -1).astype(np.float32)


def train_settings(config_text, path="config"):
    """The ``train:`` section of a run's resolved config YAML (as vae-dist writes it: one
    ``key: value`` a line) as a dict of what PyTorch needs: batch, epochs, lr, beta1, beta2,
    adam_eps. A run with weight decay or a step count instead of epochs is refused."""
    section, train = None, {}
    for line in config_text.splitlines():
        if line and not line[0].isspace():
            section = line.split(":")[0].strip()
        elif section == "train" and ":" in line:
            key, value = line.split(":", 1)
            train[key.strip()] = value.split("#")[0].strip()
    if "epochs" not in train:
        raise StudyError(f"{path}: train.epochs missing: the PyTorch run needs an epoch count (not train.steps)")
    if float(train.get("weight_decay", "0")) != 0:
        raise StudyError(f"{path}: train.weight_decay {train['weight_decay']}: the PyTorch run has no weight decay")
    try:
        return {"batch": int(train["batch"]), "epochs": int(train["epochs"]), "lr": float(train["lr"]),
                "beta1": float(train["beta1"]), "beta2": float(train["beta2"]), "adam_eps": float(train["adam_eps"])}
    except (KeyError, ValueError) as e:
        raise StudyError(f"{path}: train section: missing or malformed {e}") from None


def read_run(run):
    """The model config and train settings of the vae-dist run directory ``run``."""
    path = os.path.join(run, "final.safetensors")
    try:
        _, meta = checkpoint.read(path)
        model = checkpoint.model_config(meta, path)
    except (OSError, ValueError) as e:
        raise StudyError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
    return model, train_settings(str(meta.get("config", "")), path)


def heldout_elbo(model, x, samples, generator):
    """(ELBO, reconstruction term, KL) per example averaged over ``x``: each example's
    log p(x|z) − KL averaged over ``samples`` draws of z (the average, not the importance-weighted
    bound), as ``vae-dist eval --samples K`` computes it."""
    import torch

    logp = torch.zeros(len(x), dtype=torch.float64)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        kl = model.kl(mu, logvar).double()
        for _ in range(samples):
            eps = torch.randn(mu.shape, generator=generator)
            logp += model.log_likelihood(x, model.decode(model.reparameterize(mu, logvar, eps))).double()
    logp /= samples
    return (logp - kl).mean().item(), -logp.mean().item(), kl.mean().item()


def train_torch(model_config, settings, train, seed):
    """The network of ``model_config`` trained in PyTorch (CPU, one thread) on ``train``
    [N, D] with vae-dist's loss (mean over the batch of KL − log p(x|z), one z per example),
    Adam with its settings, ``batch`` rows a step in a new random order every epoch, the
    last partial batch dropped (as vae-dist does). Returns (module, steps, seconds)."""
    import torch

    from . import torch as vt

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = vt.VAE.from_config(model_config)
    opt = torch.optim.Adam(model.parameters(), lr=settings["lr"], betas=(settings["beta1"], settings["beta2"]),
                           eps=settings["adam_eps"])
    x, b = torch.from_numpy(train), settings["batch"]
    steps, start = 0, time.monotonic()
    for _ in range(settings["epochs"]):
        order = torch.randperm(len(x))
        for k in range(len(x) // b):
            loss = -model.elbo(x[order[k * b:(k + 1) * b]]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    return model.eval(), steps, time.monotonic() - start


def torch_row(a):
    """`torch`: train, evaluate (one z per example, and ``--eval-samples``), write the JSON."""
    import torch

    model_config, settings = read_run(a.like)
    train, test = load_npy(os.path.join(a.data, "train.npy")), load_npy(os.path.join(a.data, "test.npy"))
    model, steps, seconds = train_torch(model_config, settings, train, a.seed)
    x = torch.from_numpy(test)
    elbo, recon, kl = heldout_elbo(model, x, 1, torch.Generator().manual_seed(a.seed))
    elbo_k, _, _ = heldout_elbo(model, x, a.eval_samples, torch.Generator().manual_seed(a.seed + 1))
    with torch.no_grad():
        elbo_mean = model.elbo(x, eps=0).double().mean().item()
    row = {"framework": "pytorch", "seed": a.seed, "epochs": settings["epochs"], "steps": steps, "elbo": elbo,
           "elbo_k": elbo_k, "k": a.eval_samples, "elbo_mean_z": elbo_mean, "recon": recon, "kl": kl,
           "train_seconds": round(seconds, 2)}
    with open(a.out, "w") as f:
        json.dump(row, f)
        f.write("\n")
    print(f"pytorch seed {a.seed}: held-out ELBO {elbo:.2f} nats (one z), {elbo_k:.2f} ({a.eval_samples} z), "
          f"{steps} steps in {seconds:.1f} s")
    return 0


def vae_dist_row(out, seed):
    """A row from OUT/vae-dist-seedS: eval.json (one z), eval-k.json (K z), eval-mean.json
    (z = μ), metrics.jsonl and config.yaml."""
    run = os.path.join(out, f"vae-dist-seed{seed}")
    one, k, mean = (load_json(os.path.join(run, f)) for f in ("eval.json", "eval-k.json", "eval-mean.json"))
    try:
        lines = metrics.read(os.path.join(run, "metrics.jsonl"))
    except metrics.MetricsError as e:
        raise StudyError(str(e)) from None
    with open(os.path.join(run, "config.yaml"), encoding="utf-8") as f:
        settings = train_settings(f.read(), os.path.join(run, "config.yaml"))
    return {"framework": "vae-dist", "seed": seed, "epochs": settings["epochs"], "steps": metrics.last_step(lines),
            "elbo": one["elbo"], "elbo_k": k["elbo"], "k": k["samples"], "elbo_mean_z": mean["elbo"],
            "recon": one["recon"], "kl": one["kl"],
            "train_seconds": round(metrics.seconds_at(lines), 2)}


def summary(rows):
    """Per framework: (runs, mean and sample standard deviation of elbo, the same of elbo_k)."""
    out = {}
    for fw in ("vae-dist", "pytorch"):
        e = [float(r["elbo"]) for r in rows if r["framework"] == fw]
        k = [float(r["elbo_k"]) for r in rows if r["framework"] == fw]
        if e:
            sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
            out[fw] = (len(e), statistics.mean(e), sd(e), statistics.mean(k), sd(k))
    return out


def summary_text(rows):
    """The lines the script prints: one per framework, then the difference of the means."""
    s = summary(rows)
    k = rows[0]["k"] if rows else ""
    lines = [f"{fw:>8}: held-out ELBO {m:.2f} ± {sd:.2f} nats (one z; mean ± sd over {n} seeds), "
             f"{mk:.2f} ± {sdk:.2f} (mean over {k} z)" for fw, (n, m, sd, mk, sdk) in s.items()]
    if len(s) == 2:
        d, dk = s["vae-dist"][1] - s["pytorch"][1], s["vae-dist"][3] - s["pytorch"][3]
        lines.append(f"vae-dist − pytorch: {d:+.2f} nats (one z), {dk:+.2f} (mean over {k} z)")
    lines.append("(a density: continuous data, in nats per example; it may be positive)")
    return "\n".join(lines)


def write_csv(rows, path):
    """The rows as CSV (header FIELDS), written atomically."""
    _write_csv(rows, path, FIELDS)


def image_grid(rows_of_images, side=8, gap=1, fill=0.2):
    """Rows of [n, side*side] images, clipped to [0, 1], as one array with ``gap`` pixels of
    ``fill`` around each."""
    n = max(len(r) for r in rows_of_images)
    h, w = len(rows_of_images) * (side + gap) + gap, n * (side + gap) + gap
    grid = np.full((h, w), fill, dtype=np.float32)
    for i, row in enumerate(rows_of_images):
        for j, img in enumerate(row):
            y, x = gap + i * (side + gap), gap + j * (side + gap)
            grid[y:y + side, x:x + side] = np.clip(np.asarray(img).reshape(side, side), 0, 1)
    return grid


def pca2(z):
    """The rows of ``z`` projected on their first two principal components."""
    c = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    return c @ vt[:2].T


def draw(ckpt, data, out_png, n=16):
    """Test digits, their reconstructions (decoder means at z = μ), samples from the prior
    (decoder means), and the test set's latent means in 2-D (PCA), coloured by digit."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from . import torch as vt

    model = vt.load(ckpt)
    x = torch.from_numpy(load_npy(os.path.join(data, "test.npy")))
    labels = np.load(os.path.join(data, "test_labels.npy"))
    with torch.no_grad():
        mu, _ = model.encode(x)
        recon = model.decode(mu)[:, :model.input_size]
        prior = model.decode(torch.randn(n, model.zdim, generator=torch.Generator().manual_seed(0)))
    grid = image_grid([x[:n].numpy(), recon[:n].numpy(), prior[:, :model.input_size].numpy()])
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [3, 1]})
    a.imshow(grid, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    a.set_xticks([])
    a.set_yticks([4.5, 13.5, 22.5], ["held-out", "reconstructed\n(z = μ)", "from the prior"], fontsize=8)
    a.tick_params(length=0)
    a.set_title("held-out digits, their reconstructions and samples from the prior (decoder means)", fontsize=9)
    p = pca2(mu.numpy())
    for d in range(10):
        b.scatter(*p[labels == d].T, s=40, color=plt.cm.tab10(d), marker=f"${d}$", linewidths=0)
    b.set_title("held-out latent means (PCA of μ)", fontsize=9)
    b.set_xticks([]), b.set_yticks([])
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def report(a):
    """`report`: the CSV, the picture and the summary from the study directory."""
    rows = []
    for s in a.seeds:
        rows.append(vae_dist_row(a.out, s))
        t = load_json(os.path.join(a.out, f"torch-seed{s}.json"))
        rows.append({f: t[f] for f in FIELDS})
    csv_path, png_path = os.path.join(a.out, "digits.csv"), os.path.join(a.out, "digits.png")
    write_csv(rows, csv_path)
    draw(os.path.join(a.out, f"vae-dist-seed{a.seeds[0]}", "final.safetensors"), a.data, png_path)
    if a.docs:
        os.makedirs(a.docs, exist_ok=True)
        for p in (csv_path, png_path):
            shutil.copy(p, a.docs)
    print(summary_text(rows))
    return 0


def seeds_arg(text):
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got {text!r}")
    return seeds


def parser():
    p = argparse.ArgumentParser(prog="python -m vae_dist.own_data",
                                description="vae-dist on scikit-learn's digits, checked against PyTorch.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("data", help="write DIR/train.npy, test.npy, test_labels.npy")
    d.add_argument("dir")
    t = sub.add_parser("torch", help="train the same network in PyTorch")
    t.add_argument("--like", required=True, help="the vae-dist run directory whose network and settings to use")
    t.add_argument("--data", required=True, help="directory of train.npy and test.npy")
    t.add_argument("--seed", type=int, required=True)
    t.add_argument("--out", required=True, help="JSON file of the held-out numbers")
    t.add_argument("--eval-samples", type=int, default=100, help="draws of z per example for elbo_k")
    r = sub.add_parser("report", help="CSV, picture and summary of a study directory")
    r.add_argument("out")
    r.add_argument("--data", required=True)
    r.add_argument("--seeds", type=seeds_arg, required=True)
    r.add_argument("--docs", help="also copy digits.csv and digits.png into this directory")
    return p


def main(argv=None):
    a = parser().parse_args(argv)
    try:
        if a.command == "data":
            n_train, n_test = write_data(a.dir)
            print(f"{a.dir}: train.npy ({n_train} × 8 × 8), test.npy ({n_test}), test_labels.npy")
            return 0
        return torch_row(a) if a.command == "torch" else report(a)
    except StudyError as e:
        print(f"own-data-study: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
