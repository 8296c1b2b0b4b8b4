"""``scripts/bench --vs-pytorch``: vae-dist, PyTorch and the GEMM-only ceiling on the same model and
batch, in interleaved rounds, with the medians, the ratios and a CSV.

Each round runs every configuration of ``CONFIGURATIONS`` once, in that order; a configuration's
number is the median over rounds, and a ratio is the median over rounds of that round's ratio
(a host slower for a while slows both sides of a round). Standard library only: PyTorch runs in
its own processes (``python -m vae_dist.torch_bench``), the ceiling too (``vae_dist.gemm_ceiling``).
"""

import csv
import os
import statistics
import sys

from .launch import cpu_cores, mpirun_args

#: (key, what the table calls it), in the order each round runs them.
CONFIGURATIONS = [
    ("vd-1t", "vae-dist, 1 thread"),
    ("vd-np2", "vae-dist, np 2 (mpirun, 1 thread each)"),
    ("vd-2t", "vae-dist, 2 threads, 1 process"),
    ("pt-default-1t", "PyTorch, default Adam, 1 thread"),
    ("pt-fused-1t", "PyTorch, fused Adam + flush-denormal, 1 thread"),
    ("pt-fused-2t", "PyTorch, fused Adam + flush-denormal, 2 threads"),
    ("pt-ddp", "PyTorch, DDP gloo 2x1, fused Adam + flush-denormal"),
    ("ceiling", "GEMM-only ceiling, 1 thread"),
]

#: The PyTorch one-thread configurations; the faster (by median) is "PyTorch best 1 thread".
PYTORCH_ONE_THREAD = ("pt-default-1t", "pt-fused-1t")
BEST = "pt-best-1t"

#: (ratio's name, numerator, denominator); BEST stands for the faster one-thread PyTorch.
RATIOS = [
    ("vae-dist 1 thread / GEMM-only ceiling", "vd-1t", "ceiling"),
    ("vae-dist 1 thread / PyTorch best 1 thread", "vd-1t", BEST),
    ("vae-dist np 2 / vae-dist 1 thread", "vd-np2", "vd-1t"),
    ("vae-dist np 2 / PyTorch DDP 2x1", "vd-np2", "pt-ddp"),
    ("vae-dist 2 threads / PyTorch 2 threads", "vd-2t", "pt-fused-2t"),
    ("PyTorch DDP 2x1 / PyTorch best 1 thread", "pt-ddp", BEST),
]


def best_one_thread(samples):
    """The key of the one-thread PyTorch configuration with the higher median samples/s."""
    return max(PYTORCH_ONE_THREAD, key=lambda k: statistics.median(samples[k]))


def ratio_rows(samples):
    """``(name, median, lowest, highest)`` of each ratio of RATIOS over the rounds of ``samples``
    (key -> samples/s per round, every list one value per round)."""
    best = best_one_thread(samples)
    rows = []
    for name, num, den in RATIOS:
        r = [a / b for a, b in zip(samples[num], samples[best if den == BEST else den])]
        rows.append((name, statistics.median(r), min(r), max(r)))
    return rows


def table(samples, labels):
    """The printed table: median samples/s (and the range over rounds) per configuration, then
    the ratios. ``labels``: key -> name, in the order to print."""
    lines = [f"{'configuration':<52} {'samples/s':>10} {'(range over rounds)':>20}"]
    for k, label in labels.items():
        v = samples[k]
        lines.append(f"{label:<52} {statistics.median(v):10.0f} {min(v):>9.0f}-{max(v):<9.0f}")
    lines.append("")
    lines.append(f"{'ratio (median of the rounds)':<52} {'':>4}{'ratio':>6} {'(range over rounds)':>20}")
    for name, med, lo, hi in ratio_rows(samples):
        lines.append(f"{name:<52} {med:9.2f}x {lo:>9.2f}-{hi:.2f}x")
    return lines


def csv_rows(samples, labels):
    """Rows of the CSV: ``what, name, round, value``: every run's samples/s (round 1...R), each
    configuration's median (round "median"), each ratio's median (what "ratio")."""
    rows = [("what", "name", "round", "value")]
    for k in labels:
        rows += [("samples_per_sec", labels[k], str(i + 1), f"{v:.1f}") for i, v in enumerate(samples[k])]
        rows.append(("samples_per_sec", labels[k], "median", f"{statistics.median(samples[k]):.1f}"))
    rows += [("ratio", name, "median", f"{med:.4f}") for name, med, _, _ in ratio_rows(samples)]
    return rows


def write_csv(path, rows):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def commands(a, vae_argv, python=sys.executable):
    """key -> (argv, extra environment) of every configuration. ``vae_argv``: ``vae-dist bench``'s
    argv for the config, without threads."""
    timing = ["--steps", str(a.steps), "--repeats", str(a.repeats)]
    torch = [python, "-m", "vae_dist.torch_bench"] + timing
    fast = ["--adam", "fused", "--flush-denormal"]
    one, two = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    return {
        "vd-1t": (vae_argv + ["--threads", "1"], {}),
        "vd-np2": (["mpirun"] + mpirun_args(2, threads=1) + vae_argv, {}),
        "vd-2t": (vae_argv + ["--threads", "2"], {}),
        "pt-default-1t": (torch + ["--adam", "default", "--threads", "1"], one),
        "pt-fused-1t": (torch + fast + ["--threads", "1"], one),
        "pt-fused-2t": (torch + fast + ["--threads", "2"], two),
        "pt-ddp": (torch + fast + ["--threads", "1", "--ddp", "--world", "2"], one),
        "ceiling": ([python, "-m", "vae_dist.gemm_ceiling", "--bin", a.bin, "--threads", "1"] + timing,
                    {"OPENBLAS_NUM_THREADS": "1"}),
    }


def run(a, vae_argv, run_json):
    """Runs ``a.rounds`` interleaved rounds, prints the table and writes ``a.csv``."""
    cmds = commands(a, vae_argv)
    samples = {k: [] for k, _ in CONFIGURATIONS}
    seen = {}
    for r in range(1, a.rounds + 1):
        for k, label in CONFIGURATIONS:
            argv, env = cmds[k]
            out = run_json(argv, env=dict(os.environ, **env))
            samples[k].append(out["samples_per_sec"])
            seen[k] = out
            print(f"round {r}: {label}: {out['samples_per_sec']:.0f} samples/s", file=sys.stderr)
    labels = dict(CONFIGURATIONS)
    print("\n".join(table(samples, labels)))
    print(footer(a, seen, labels[best_one_thread(samples)]))
    if a.csv:
        write_csv(a.csv, csv_rows(samples, labels))
        print(f"(written to {a.csv})")


def footer(a, seen, best_label):
    vd, pt, ceil = seen["vd-1t"], seen["pt-fused-1t"], seen["ceiling"]
    return (f"({a.config}, global batch {vd['batch']}; OpenBLAS kernel {vd['kernel']} (ceiling: {ceil['kernel']}, "
            f"{ceil['gemms_per_step']} GEMMs, {ceil['gflop_per_step']:.2f} GFLOP per step); torch {pt['torch']}, "
            f"fused Adam ran as {pt['adam_impl']}; {cpu_cores()} cores; median of {a.rounds} interleaved rounds, "
            f"each the median of {a.repeats} blocks of {a.steps} steps; PyTorch best 1 thread: {best_label})")
