"""The z-dimension study's driver (run by scripts/zdim-study, which checks its options, builds
or finds the binary and chooses the OpenBLAS kernel).

Per zdim: one training run measured at each budget on the way (see scripts/zdim-study --help).
Every step is cached in the run directory, so a call does only what is missing.

Usage: python -m vae_dist.zdim_study --bin BIN --config FILE --out DIR --zdims "…" --epochs "…"
         [--iw K] [--iw-images N] [--np N] [--hostfile F] [--threads N] [--limit N] [--docs 0|1]
         [--root REPO] [--parallel-z K] [--collect 0|1]
Standard library only (the plot needs matplotlib and is skipped with a note without it).
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys

from . import metrics
from .launch import mpirun_args


def fail(msg):
    print(f"zdim-study: {msg}", file=sys.stderr)
    sys.exit(2)


def int_list(text, flag, lo, hi):
    out = []
    for tok in text.replace(",", " ").split():
        if not tok.isdigit() or not lo <= int(tok) <= hi:
            fail(f"{flag}: '{tok}' is not an integer in {lo}...{hi}")
        out.append(int(tok))
    if not out:
        fail(f"{flag}: expected a list of integers in {lo}...{hi}")
    return out


class StudyError(Exception):
    """A step failed; the message says which. Everything done so far is kept."""


def run(argv, what):
    r = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise StudyError(f"{what} failed (exit {r.returncode}); run the same command again to continue")
    return r.stdout


def write_json(row, path):
    with open(path + ".tmp", "w") as f:
        json.dump(row, f)
    os.replace(path + ".tmp", path)


def train_seconds(metrics_path, step):
    """The run time when ``step`` was reached (a resumed run continues counting)."""
    try:
        return round(metrics.seconds_at(metrics.read(metrics_path), step), 1)
    except metrics.MetricsError as e:
        raise StudyError(str(e)) from None


class Study:
    """The options of one call and the steps of one zdim: train to a budget, measure, sample."""

    def __init__(self, a):
        self.a = a
        self.budgets = int_list(a.epochs, "--epochs", 1, 100000)
        if self.budgets != sorted(set(self.budgets)):
            fail(f"--epochs: expected increasing budgets, got '{a.epochs}'")
        self.iw, self.iw_images, self.np = int(a.iw or 0), int(a.iw_images or 1000), int(a.np or 1)
        self.shared = int(a.parallel_z or 1) > 1
        self.eval_limit = ["--limit", a.limit] if a.limit else []

    def train_argv(self, z, epochs, rundir):
        a = self.a
        argv = [a.bin, "train", "--config", a.config, "--zdim", str(z), "--epochs", str(epochs), "--out", rundir,
                "--resume", "auto", "--quiet", "--no-tensorboard"] + (["--train-limit", a.limit] if a.limit else [])
        if self.np > 1:
            return ["mpirun"] + mpirun_args(self.np, hostfile=a.hostfile, threads=1, shared=self.shared) + argv
        return argv + (["--threads", a.threads] if a.threads else [])

    def eval_units(self, snap):
        return json.loads(run([self.a.bin, "eval", "--checkpoint", snap, "--json", "--active-units"] + self.eval_limit,
                              "eval"))

    def upgrade(self, measured, snap):
        """Rows measured before the KL was split by unit get the split (a quick pass, no IW)."""
        with open(measured) as f:
            row = json.load(f)
        if row.get("kl_inactive_units", "") != "":
            return
        print(f"==> z = {row['zdim']}, {row['epochs']} epochs: splitting the KL by unit", flush=True)
        ev = self.eval_units(snap)
        row.update(active_units=ev["active_units"], kl_per_active_unit=ev["kl_per_active_unit"],
                   kl_inactive_units=ev.get("kl_inactive_units", ""))
        write_json(row, measured)

    def measure(self, z, e, snap, rundir):
        """The row of (z, budget e): held-out ELBO and its terms, active units, the IW bound,
        the parameter count and the training time to this budget."""
        ev = self.eval_units(snap)
        row = {"zdim": z, "epochs": e, "steps": ev["step"], "test_elbo": ev["elbo"], "test_recon": ev["recon"],
               "test_kl": ev["kl"], "iw_bound": "", "iw_k": "", "iw_images": "",
               "active_units": ev["active_units"], "kl_per_active_unit": ev["kl_per_active_unit"],
               "kl_inactive_units": ev.get("kl_inactive_units", "")}
        if self.iw > 0:
            b = json.loads(run([self.a.bin, "eval", "--checkpoint", snap, "--json", "--iw", str(self.iw), "--limit",
                                str(self.iw_images)], "eval --iw"))
            row.update(iw_bound=b["iw_bound"], iw_k=self.iw, iw_images=b["images"])
        info = run([self.a.bin, "info", snap], "info")
        row["parameters"] = next((l.split()[1] for l in info.splitlines() if l.startswith("parameters ")), "")
        row["train_seconds"] = train_seconds(os.path.join(rundir, "metrics.jsonl"), row["steps"])
        return row

    def study(self, z):
        rundir = os.path.join(self.a.out, f"z-{z}")
        for e in self.budgets:
            snap = os.path.join(rundir, f"epochs-{e}.safetensors")
            if not os.path.exists(snap):
                print(f"==> z = {z}: training to {e} epochs", flush=True)
                run(self.train_argv(z, e, rundir), f"training z = {z} to {e} epochs")
                shutil.copyfile(os.path.join(rundir, "final.safetensors"), snap + ".tmp")
                os.replace(snap + ".tmp", snap)
            measured = os.path.join(rundir, f"eval-{e}.json")
            if os.path.exists(measured):
                self.upgrade(measured, snap)
                continue
            print(f"==> z = {z}, {e} epochs: measuring", flush=True)
            write_json(self.measure(z, e, snap, rundir), measured)
        last = os.path.join(rundir, f"epochs-{self.budgets[-1]}.safetensors")
        run([self.a.bin, "sample", "--checkpoint", last, "--n", "64", "--scale", "3", "--out",
             os.path.join(rundir, "samples.png")], "sample")


def run_all(st, zdims, parallel):
    """Studies every zdim, ``parallel`` at once (each its own training process or mpirun job; a
    failure of one lets the others finish their current step and is reported at the end)."""
    if parallel > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for f in [pool.submit(st.study, z) for z in zdims]:
                f.result()
    else:
        for z in zdims:
            st.study(z)


def publish(rows, out, root, docs):
    """The CSV, the plot and the table; with ``docs`` also docs/results/zdim/ and docs/results.md."""
    write_csv(rows, os.path.join(out, "zdim-study.csv"))
    plotted = plot(rows, os.path.join(out, "zdim-study.png"))
    table(rows)
    if not docs:
        return
    target = os.path.join(root, "docs", "results", "zdim")
    os.makedirs(target, exist_ok=True)
    shutil.copyfile(os.path.join(out, "zdim-study.csv"), os.path.join(target, "zdim-study.csv"))
    if plotted:
        shutil.copyfile(os.path.join(out, "zdim-study.png"), os.path.join(target, "zdim-study.png"))
    for z in sorted({r["zdim"] for r in rows}):
        grid = os.path.join(out, f"z-{z}", "samples.png")
        if os.path.exists(grid):
            shutil.copyfile(grid, os.path.join(target, f"samples-z{z}.png"))
    update_readme(os.path.join(root, "docs", "results.md"), markdown(rows))
    print(f"==> copied to {target}; docs/results.md table updated")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vae_dist.zdim_study")
    for a in ["bin", "config", "out", "zdims", "epochs", "iw", "iw-images", "np", "hostfile", "threads",
              "limit", "docs", "root", "parallel-z", "collect"]:
        p.add_argument("--" + a, default="")
    a = p.parse_args(argv)
    zdims = sorted(set(int_list(a.zdims, "--zdims", 1, 10000)))
    st = Study(a)
    try:
        if a.collect != "1":  # --collect only gathers what earlier calls measured
            run_all(st, zdims, int(a.parallel_z or 1))
    except StudyError as e:
        print(f"zdim-study: {e}", file=sys.stderr)
        return 1
    publish(collect(a.out), a.out, a.root, a.docs == "1")
    return 0


def collect(out):
    """Every measured (zdim, budget) in the study directory, also those of other calls."""
    rows = []
    for d in os.listdir(out):
        if not d.startswith("z-"):
            continue
        for f in os.listdir(os.path.join(out, d)):
            if f.startswith("eval-") and f.endswith(".json"):
                with open(os.path.join(out, d, f)) as h:
                    rows.append(json.load(h))
    return sorted(rows, key=lambda r: (r["epochs"], r["zdim"]))


# `budget` is the training budget in epochs at which the row was measured (one run per z).
FIELDS = ["zdim", "budget", "steps", "test_elbo", "test_recon", "test_kl", "iw_bound", "iw_k", "iw_images",
          "active_units", "kl_per_active_unit", "kl_inactive_units", "parameters", "train_seconds"]


def write_csv(rows, path):
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows({**r, "budget": r["epochs"]} for r in rows)
    os.replace(path + ".tmp", path)


def plot(rows, png):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed for this Python (scripts/test installs it in .venv)")
        return False
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(17, 4.5))
    for i, e in enumerate(sorted({r["epochs"] for r in rows})):
        rs = sorted((r for r in rows if r["epochs"] == e), key=lambda r: r["zdim"])
        z = [r["zdim"] for r in rs]
        a1.plot(z, [r["test_elbo"] for r in rs], "o-", color=f"C{i}", label=f"ELBO, {e} epochs")
        iw = [(r["zdim"], r["iw_bound"]) for r in rs if r["iw_bound"] != ""]
        if iw:
            a1.plot([p[0] for p in iw], [p[1] for p in iw], "s--", color=f"C{i}", alpha=0.6,
                    label=f"IW bound, {e} epochs")
        a2.plot(z, [r["active_units"] for r in rs], "o-", color=f"C{i}", label=f"{e} epochs")
        a3.plot(z, [r["test_kl"] for r in rs], "o-", color=f"C{i}", label=f"all units, {e} epochs")
        idle = [(r["zdim"], r["kl_inactive_units"]) for r in rs if r.get("kl_inactive_units", "") != ""]
        if idle:
            a3.plot([p[0] for p in idle], [p[1] for p in idle], "s--", color=f"C{i}", alpha=0.6,
                    label=f"inactive units, {e} epochs")
    for ax in (a1, a2, a3):
        ax.set_xscale("log")
        ax.set_xlabel("latent dimensions z")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    a1.set_ylabel("nats per test image (higher is better)")
    a1.set_title("held-out ELBO and importance-weighted bound")
    a2.set_yscale("log")
    a2.set_ylabel("active units (posterior-mean variance > 0.01)")
    a2.set_title("active latent units")
    a3.set_ylabel("KL(q(z|x) || p(z)), nats per test image")
    a3.set_title("KL term: all units and the inactive ones")
    fig.suptitle("z-dimension study (configs/tutorial.yaml)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    print(f"plot: {png}")
    return True


def markdown(rows):
    """The table of the study in docs/results.md (between its zdim-table markers)."""
    out = ["| epochs | z | held-out ELBO | IW bound | reconstruction | KL | active units | KL per active unit "
           "| KL in inactive units | training s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted({r["epochs"] for r in rows}):
        rs = sorted((r for r in rows if r["epochs"] == e), key=lambda r: r["zdim"])
        best = max(r["test_elbo"] for r in rs)
        for r in rs:
            elbo = f"{r['test_elbo']:.2f}".replace("-", "−")
            if r["test_elbo"] == best:
                elbo = f"**{elbo}**"
            iw = f"{r['iw_bound']:.2f}".replace("-", "−") if r["iw_bound"] != "" else ""
            out.append(f"| {e} | {r['zdim']} | {elbo} | {iw} | {r['test_recon']:.2f} | {r['test_kl']:.2f} | "
                       f"{r['active_units']} of {r['zdim']} | {r['kl_per_active_unit']:.2f} | "
                       f"{number(r.get('kl_inactive_units', ''), 2)} | {r['train_seconds']:.0f} |")
    return "\n".join(out)


def number(v, digits):
    """A CSV cell: blank when not measured."""
    return f"{v:.{digits}f}" if v != "" else ""


def update_readme(path, table_md):
    begin, end = "<!-- zdim-table: generated by scripts/zdim-study --docs -->", "<!-- /zdim-table -->"
    text = open(path).read()
    if begin not in text or end not in text:
        print(f"zdim-study: {path} has no zdim-table markers; the table was not updated", file=sys.stderr)
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path + ".tmp", "w") as f:
        f.write(head + begin + "\n" + table_md + "\n" + end + tail)
    os.replace(path + ".tmp", path)


def table(rows):
    print(f"\n{'epochs':>6} {'zdim':>6} {'ELBO':>9} {'IW bound':>9} {'recon':>8} {'KL':>7} {'active':>7} "
          f"{'KL/unit':>8} {'KL idle':>8} {'train s':>8}")
    for r in rows:
        iw = f"{r['iw_bound']:9.2f}" if r["iw_bound"] != "" else f"{'':>9}"
        print(f"{r['epochs']:>6} {r['zdim']:>6} {r['test_elbo']:9.2f} {iw} {r['test_recon']:8.2f} "
              f"{r['test_kl']:7.2f} {r['active_units']:>7} {r['kl_per_active_unit']:8.3f} "
              f"{number(r.get('kl_inactive_units', ''), 3):>8} {r['train_seconds']:8.1f}")


if __name__ == "__main__":
    sys.exit(main())
