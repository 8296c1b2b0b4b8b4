"""Training curves of one or more runs in one PNG (scripts/plot; see its --help): training loss
and held-out ELBO against step and wall time, four panels.

Usage: python -m vae_dist.plot OUT.png RUN [RUN…]
Exit status: 0, 2 on bad input (one line "plot: error: …" on stderr), 3 when matplotlib is
missing. Needs matplotlib; reading the runs (``read_run``) needs only the standard library.
"""

import os
import sys

from . import metrics


class PlotError(Exception):
    """Bad input; the message is one line."""


def read_run(arg):
    """A run directory (or its metrics.jsonl) as {name, path, train, eval}: ``train`` and
    ``eval`` are (step, time_s, value) tuples of the training loss and the held-out ELBO."""
    if os.path.isdir(arg):
        path = os.path.join(arg, "metrics.jsonl")
        if not os.path.exists(path):
            raise PlotError(f"{arg} has no metrics.jsonl (is it a vae-dist run directory?)")
        name = os.path.basename(os.path.normpath(arg))
    elif os.path.isfile(arg):
        path = arg
        name = os.path.basename(os.path.dirname(os.path.abspath(arg)))
    else:
        raise PlotError(f"no run directory {arg}")
    try:
        lines = metrics.read(path)
    except metrics.MetricsError as e:
        raise PlotError(str(e)) from None
    train = [(m.get("step"), m.get("time_s"), m["loss"]) for m in metrics.training(lines)]
    evals = [(m.get("step"), m.get("time_s"), m["test_elbo"]) for m in metrics.evaluations(lines)]
    if not train and not evals:
        raise PlotError(f"{path} is empty: no training or evaluation lines yet")
    for rows, key in ((train, "loss"), (evals, "test_elbo")):
        if any(not all(isinstance(x, (int, float)) for x in row) for row in rows):
            raise PlotError(f"{path}: a '{key}' line without numeric step/time_s/{key}")
    return {"name": name, "path": path, "train": train, "eval": evals}


def labelled(data, args):
    """Sets each run's label: its directory name, or the path as given where names repeat."""
    names = [d["name"] for d in data]
    for d, r in zip(data, args):
        d["label"] = d["name"] if names.count(d["name"]) == 1 else os.path.normpath(r)
    return data


def loss_limits(values):
    """The loss axis's (low, high): the first steps' losses (hundreds of nats) are cut off the
    top, at the 95th percentile plus a quarter of the range, so the rest is readable."""
    s = sorted(values)
    top, low = s[int(0.95 * (len(s) - 1))], s[0]
    return low - 0.05 * (top - low), top + 0.25 * (top - low) + 1e-9


def draw_panel(ax, data, kind, xi, colors):
    values = []
    for k, d in enumerate(data):
        rows = d[kind]
        if not rows:
            continue
        values += [r[2] for r in rows]
        style = dict(marker="o", markersize=3) if kind == "eval" or len(rows) < 20 else {}
        ax.plot([r[xi] for r in rows], [r[2] for r in rows], label=d["label"], color=colors[k % len(colors)],
                linewidth=1.2, **style)
    ax.grid(True, alpha=0.3)
    if not values:
        ax.text(0.5, 0.5, "no evaluation lines\n(train.eval_every)", ha="center", va="center",
                transform=ax.transAxes, color="grey")
        return
    if kind == "train" and len(values) >= 20:
        ax.set_ylim(*loss_limits(values))
    ax.legend(fontsize="small")


def draw(data, out, plt):
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    loss, elbo = "training loss (nats / image, lower is better)", "held-out ELBO (nats / image, higher is better)"
    panels = [(axes[0][0], "train", 0, "step", loss), (axes[0][1], "eval", 0, "step", elbo),
              (axes[1][0], "train", 1, "wall time (s)", loss), (axes[1][1], "eval", 1, "wall time (s)", elbo)]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind, xi, xlabel, ylabel in panels:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        draw_panel(ax, data, kind, xi, colors)
    title = data[0]["label"] if len(data) == 1 else f"{len(data)} runs"
    fig.suptitle(f"vae-dist training curves: {title}")
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except OSError as e:
        raise PlotError(f"{out}: cannot write: {e.strerror}") from None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m vae_dist.plot OUT.png RUN [RUN…]", file=sys.stderr)
        return 2
    out, runs = argv[0], argv[1:]
    try:
        data = labelled([read_run(r) for r in runs], runs)
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print(f"plot: error: matplotlib is not installed for {sys.executable}: pip install matplotlib "
                  f"(or set VAE_DIST_PYTHON)", file=sys.stderr)
            return 3
        draw(data, out, plt)
    except PlotError as e:
        print(f"plot: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
