"""``scripts/time-to-quality``: how long the default 2-core user experience takes to train
``configs/mnist.yaml`` (10 epochs) to a held-out ELBO of at least -101, next to PyTorch's best
2-core setting on the same model, data and epochs, measured in one run.

Each round runs, in this order:
  vd-default  ``scripts/train`` as a user types it (with ``--out``): on 2+ cores with mpirun that is
              ``mpirun -np 2`` with one OpenBLAS thread per rank (its ``==>`` line says what ran)
  vd-1p       (``--one-process``) ``scripts/train --np 1``: one process, OpenBLAS's threads
  pytorch     ``python -m vae_dist.torch_train``: the same training in PyTorch, 2 threads, fused Adam
              + flush-denormal, evaluated with vae-dist's estimator on the same test bits and noise
Wall seconds run from launch to the trained model's held-out ELBO: for vae-dist to
``final.safetensors`` (written after the final evaluation; scripts/train also verifies the data,
checkpoints every 1,000 steps and evaluates at step 3,000), for PyTorch to the process's exit (it
writes nothing). samples/s = samples trained / wall seconds. A configuration's numbers are medians
over the rounds; its ratio is the median over rounds of PyTorch's wall / its wall in that round.
Standard library only; PyTorch runs in its own process.
"""

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from . import metrics
from .gemm_ceiling import positive
from .launch import cpu_cores

TARGET = -101.0
TRAIN_IMAGES = 60000
BATCH = 100


class TimeToQualityError(Exception):
    """A run failed or its result cannot be read; the message is one line."""


def configurations(one_process):
    """``(key, label)`` of each configuration, in the order a round runs them."""
    rows = [("vd-default", "vae-dist, scripts/train's default")]
    if one_process:
        rows.append(("vd-1p", "vae-dist, one process (scripts/train --np 1)"))
    return rows + [("pytorch", "PyTorch best 2-core (2 threads, fused Adam + ftz)")]


def length_args(a):
    """The run length as both trainers' flags: ``--epochs N`` or ``--steps N``."""
    return ["--steps", str(a.steps)] if a.steps else ["--epochs", str(a.epochs)]


def commands(a, out_dir, python=sys.executable):
    """key -> (argv, environment) of each configuration; vae-dist runs write to ``out_dir(key)``."""
    base = {k: v for k, v in os.environ.items() if k != "VAE_DIST_NP"}
    vd_env = dict(base, VAE_DIST_BIN=a.bin, VAE_DIST_DATA=a.data)
    torch_env = dict(base, OMP_NUM_THREADS=str(a.torch_threads), MKL_NUM_THREADS=str(a.torch_threads))
    vd = [a.train_script] + length_args(a)
    return {
        "vd-default": (vd + ["--out", out_dir("vd-default")], vd_env),
        "vd-1p": (vd + ["--np", "1", "--out", out_dir("vd-1p")], vd_env),
        "pytorch": ([python, "-m", "vae_dist.torch_train", "--data", a.data, "--threads", str(a.torch_threads)]
                    + length_args(a), torch_env),
    }


def run_logged(argv, env, log):
    """Runs ``argv`` with its output in the file ``log``; ``(launch time, exit time, output)``."""
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env)
    t1 = time.time()
    with open(log) as f:
        text = f.read()
    if r.returncode != 0:
        last = (text.strip().splitlines() or ["no output"])[-1]
        raise TimeToQualityError(f"{os.path.basename(argv[0])} … exited {r.returncode}: {last} (log: {log})")
    return t0, t1, text


def vae_dist_result(out, t0, t1, text):
    """One vae-dist run's numbers from its run directory ``out`` and scripts/train's output."""
    lines = metrics.read(os.path.join(out, "metrics.jsonl"))
    evals, steps = metrics.evaluations(lines), metrics.training(lines)
    final = os.path.join(out, "final.safetensors")
    if not evals or not steps or not os.path.isfile(final):
        raise TimeToQualityError(f"{out}: no final evaluation or final.safetensors: the run did not finish")
    launch = next((ln[4:].strip() for ln in text.splitlines() if ln.startswith("==> training")), "")
    return {"wall_s": os.stat(final).st_mtime - t0, "exit_s": t1 - t0, "train_s": float(steps[-1]["time_s"]),
            "steps": int(steps[-1]["step"]), "test_elbo": float(evals[-1]["test_elbo"]), "launch": launch}


def torch_result(t0, t1, text):
    import json

    try:
        out = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TimeToQualityError("torch_train: its last line is not JSON") from None
    return {"wall_s": t1 - t0, "exit_s": t1 - t0, "train_s": float(out["train_seconds"]), "steps": int(out["steps"]),
            "test_elbo": float(out["test_elbo"]), "launch": f"torch {out['torch']}, {out['threads']} threads, "
                                                            f"Adam {out['adam_impl']}, flush-denormal {out['flush_denormal']}"}


def run(a):
    """Runs the rounds; returns ``{key: [result per round]}``."""
    labels = configurations(a.one_process)
    cmds = commands(a, lambda key: os.path.join(a.work, key))
    results = {k: [] for k, _ in labels}
    for r in range(1, a.rounds + 1):
        for key, label in labels:
            argv, env = cmds[key]
            if key != "pytorch":
                shutil.rmtree(os.path.join(a.work, key), ignore_errors=True)  # a fresh run, not a resume
            t0, t1, text = run_logged(argv, env, os.path.join(a.work, f"{key}-round{r}.log"))
            res = vae_dist_result(os.path.join(a.work, key), t0, t1, text) if key != "pytorch" else torch_result(t0, t1, text)
            results[key].append(res)
            print(f"round {r}: {label}: {res['wall_s']:.1f} s, held-out ELBO {res['test_elbo']:.2f}", file=sys.stderr)
    return results


def summary(results, target=TARGET):
    """key -> {wall_s, samples_per_sec, test_elbo (medians), reached ("yes", "no" or "k/R"), ratio}."""
    base = results["pytorch"]
    out = {}
    for key, runs in results.items():
        reached = sum(r["test_elbo"] >= target for r in runs)
        wall = statistics.median(r["wall_s"] for r in runs)
        out[key] = {"wall_s": wall, "samples_per_sec": statistics.median(r["steps"] * BATCH / r["wall_s"] for r in runs),
                    "test_elbo": statistics.median(r["test_elbo"] for r in runs),
                    "reached": "yes" if reached == len(runs) else "no" if reached == 0 else f"{reached}/{len(runs)}",
                    "ratio": statistics.median(p["wall_s"] / r["wall_s"] for p, r in zip(base, runs))}
    return out


def table(results, labels, target=TARGET):
    """The printed table: one line per configuration (medians over rounds)."""
    s = summary(results, target)
    lines = [f"{'configuration':<52} {'wall s':>7} {'samples/s':>10} {'held-out ELBO':>14} "
             f"{'>= ' + format(target, 'g'):>8} {'vs PyTorch':>11}"]
    for key, label in labels:
        v = s[key]
        lines.append(f"{label:<52} {v['wall_s']:7.1f} {v['samples_per_sec']:10,.0f} {v['test_elbo']:14.2f} "
                     f"{v['reached']:>8} {v['ratio']:10.2f}x")
    return lines


def csv_rows(results, labels, target=TARGET):
    """Every run (round 1...R) and each configuration's medians (round "median")."""
    head = ["configuration", "round", "wall_s", "exit_s", "train_s", "steps", "samples_per_sec", "test_elbo",
            "reached_target", "speedup_vs_pytorch", "launch"]
    rows = [head]
    s = summary(results, target)
    for key, label in labels:
        for i, r in enumerate(results[key]):
            rows.append([label, str(i + 1), f"{r['wall_s']:.2f}", f"{r['exit_s']:.2f}", f"{r['train_s']:.2f}",
                         str(r["steps"]), f"{r['steps'] * BATCH / r['wall_s']:.1f}", f"{r['test_elbo']:.4f}",
                         "yes" if r["test_elbo"] >= target else "no",
                         f"{results['pytorch'][i]['wall_s'] / r['wall_s']:.4f}", r["launch"]])
        v = s[key]
        rows.append([label, "median", f"{v['wall_s']:.2f}", "", "", "", f"{v['samples_per_sec']:.1f}",
                     f"{v['test_elbo']:.4f}", v["reached"], f"{v['ratio']:.4f}", ""])
    return rows


def write_csv(path, rows):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def report(a, results):
    labels = configurations(a.one_process)
    print("\n".join(table(results, labels, a.target)))
    length = f"{a.steps} steps" if a.steps else f"{a.epochs} epochs"
    print(f"(configs/mnist.yaml, {length} of batch {BATCH}; median of {a.rounds} interleaved round(s); {cpu_cores()} "
          f"cores; wall: launch to final.safetensors (vae-dist) or to exit after the evaluation (PyTorch))")
    for key, label in labels:
        print(f"  {label}: {results[key][-1]['launch']}")
    if a.csv:
        write_csv(a.csv, csv_rows(results, labels, a.target))
        print(f"(written to {a.csv})")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m vae_dist.time_to_quality",
        description="Time configs/mnist.yaml to its held-out ELBO with scripts/train's default and with PyTorch's "
                    "best 2-core setting, in interleaved rounds; print a table and write a CSV. "
                    "scripts/time-to-quality runs it.")
    p.add_argument("--bin", required=True, help="the vae-dist binary (scripts/train runs it, building nothing)")
    p.add_argument("--train-script", required=True, help="scripts/train")
    p.add_argument("--data", required=True, help="directory holding mnist/")
    p.add_argument("--rounds", type=positive, default=1, help="interleaved rounds (default 1)")
    p.add_argument("--epochs", type=positive, default=10, help="epochs each side trains (default 10)")
    p.add_argument("--steps", type=positive, help="steps instead of --epochs (a quick check, not the measurement)")
    p.add_argument("--one-process", action="store_true", help="also run scripts/train --np 1 each round")
    p.add_argument("--torch-threads", type=positive, default=2, help="PyTorch's threads (default 2)")
    p.add_argument("--target", type=float, default=TARGET, help="the held-out ELBO to reach (default -101)")
    p.add_argument("--work", help="directory for the runs and their logs (default: a temporary one, removed)")
    p.add_argument("--csv", help="write every run and the medians here")
    a = p.parse_args(argv)
    for flag, path in (("--bin", a.bin), ("--train-script", a.train_script)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            p.error(f"{flag}: '{path}' is not an executable file")
    if not os.path.isdir(os.path.join(a.data, "mnist")):
        p.error(f"--data: no mnist/ in '{a.data}' (run scripts/get-data)")
    a.data = os.path.abspath(a.data)
    return a


def main(argv=None):
    a = parse_args(argv)
    temporary = a.work is None
    a.work = tempfile.mkdtemp(prefix="time-to-quality-") if temporary else os.path.abspath(a.work)
    os.makedirs(a.work, exist_ok=True)
    try:
        report(a, run(a))
    except (TimeToQualityError, metrics.MetricsError, OSError) as e:
        print(f"time-to-quality: {e}", file=sys.stderr)
        return 1  # the work directory stays, with the logs the message names
    if temporary:
        shutil.rmtree(a.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
