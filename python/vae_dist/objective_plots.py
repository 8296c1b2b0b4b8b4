"""The objectives' figures, drawn from the committed CSVs (no training):

  docs/results/zdim/degraded-end.png   held-out ELBO and IW bound against z (20, 1,000, 10,000)
                                       for the plain config, KL warm-up and free bits, one panel
                                       per budget (zdim-study.csv, warmup.csv, freebits.csv)
  docs/results/objectives/iwae.png     the test log-likelihood (IW-5000 bound) of the VAE, IWAE
                                       k = 5 (every seed, vae-dist and PyTorch) and IWAE k = 50,
                                       and IWAE trained with DReG's gradient where measured
                                       (objective-study.csv, objective-torch.csv, objective-dreg.csv)

Run: python -m vae_dist.objective_plots --root REPO (scripts/figures runs it).
"""

import argparse
import csv
import os
import sys

CONFIGS = (("plain", "zdim/zdim-study.csv"), ("KL warm-up", "zdim/warmup.csv"), ("free bits λ = 0.05", "zdim/freebits.csv"))
DEGRADED_Z = (20, 1000, 10000)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def degraded_end_series(rows_by_config, budget):
    """{config: [(z, elbo, iw bound)]} at `budget` epochs for the z of the degraded end, in z order;
    a config without a row for some z simply has fewer points."""
    series = {}
    for name, rows in rows_by_config.items():
        points = sorted((int(r["zdim"]), float(r["test_elbo"]), float(r["iw_bound"])) for r in rows
                        if int(r["budget"]) == budget and int(r["zdim"]) in DEGRADED_Z)
        series[name] = points
    return series


def iwae_points(objective_rows, torch_rows, dreg_rows=(), epochs=10):
    """[(model, trained by, iw bound)]: the iwae part's VAE and k = 50 runs at `epochs` (the
    budget of the seeds' comparisons), every IWAE k = 5 seed of the torch comparison (both
    frameworks), and the dreg part's DReG runs."""
    points = []
    for r in objective_rows:
        if r["part"] == "iwae" and r["name"] in ("vae", "iwae-k50") and int(r["epochs"]) == epochs:
            points.append(("VAE" if r["name"] == "vae" else "IWAE k = 50", "vae-dist", float(r["iw_bound"])))
    for r in torch_rows:
        points.append(("IWAE k = 5", r["framework"], float(r["iw_bound"])))
    for r in dreg_rows:
        if r["gradient"] == "dreg":
            points.append((f"IWAE k = {r['samples']}", "vae-dist, DReG", float(r["iw_bound"])))
    order = {"VAE": 0, "IWAE k = 5": 1, "IWAE k = 50": 2}
    return sorted(points, key=lambda p: (order[p[0]], p[1], p[2]))


def draw_degraded_end(series_by_budget, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(series_by_budget), figsize=(5 * len(series_by_budget), 4), sharey=True)
    for ax, (budget, series) in zip(axes, sorted(series_by_budget.items())):
        for name, points in series.items():
            if not points:
                continue
            z = [p[0] for p in points]
            line, = ax.plot(z, [p[1] for p in points], "o-", label=f"{name}: ELBO")
            ax.plot(z, [p[2] for p in points], "s--", color=line.get_color(), alpha=0.6, label=f"{name}: IW bound")
        ax.set_xscale("log")
        ax.set_title(f"{budget} epochs")
        ax.set_xlabel("latent dimensions z")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("nats per held-out image")
    axes[0].set_ylim(bottom=-160)
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def draw_iwae(points, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = ["VAE", "IWAE k = 5", "IWAE k = 50"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for who, marker, shift in (("vae-dist", "o", -0.12), ("pytorch", "^", 0), ("vae-dist, DReG", "s", 0.12)):
        mine = [p for p in points if p[1] == who]
        if mine:
            ax.scatter([models.index(p[0]) + shift for p in mine], [p[2] for p in mine], marker=marker, label=who)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("test log-likelihood, IW-5000 bound (nats)")
    ax.set_title("Burda et al.'s network, 10 epochs (each point a seed)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vae_dist.objective_plots", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="the repository (reads and writes under docs/results)")
    a = p.parse_args(argv)
    results = os.path.join(a.root, "docs", "results")
    try:
        by_config = {name: read_rows(os.path.join(results, path)) for name, path in CONFIGS}
        objective = read_rows(os.path.join(results, "objectives", "objective-study.csv"))
        torch_rows = read_rows(os.path.join(results, "objectives", "objective-torch.csv"))
        dreg_path = os.path.join(results, "objectives", "objective-dreg.csv")
        dreg_rows = read_rows(dreg_path) if os.path.exists(dreg_path) else []
    except (OSError, KeyError) as e:
        print(f"objective_plots: error: cannot read the results CSVs: {e}", file=sys.stderr)
        return 1
    # The budgets the warm-up and free-bits runs reached (the plain study also has 100 epochs).
    budgets = sorted({int(r["budget"]) for name, rows in by_config.items() if name != "plain" for r in rows})
    draw_degraded_end({b: degraded_end_series(by_config, b) for b in budgets},
                      os.path.join(results, "zdim", "degraded-end.png"))
    draw_iwae(iwae_points(objective, torch_rows, dreg_rows), os.path.join(results, "objectives", "iwae.png"))
    print("objective_plots: wrote docs/results/zdim/degraded-end.png and docs/results/objectives/iwae.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
