"""scripts/bench's measurements and tables (see its --help): runs ``vae-dist bench --json`` for
one setting, for several OpenBLAS kernels interleaved, or under mpirun for several rank counts,
and prints medians, ratios, speed-ups and the gradient exchange's share of a step.

Usage: python -m vae_dist.bench --bin BIN --config FILE --mode single|kernels|scaling|vs-pytorch
         [--threads N] [--steps N] [--repeats N] [--rounds R] [--kernels "K1 K2"] [--nps "1 2 4"]
         [--csv FILE]
Standard library only (--mode vs-pytorch is vae_dist.vs_pytorch; its PyTorch runs need torch).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from .launch import cpu_cores, mpirun_args


class BenchError(Exception):
    """A benchmark run failed; the message is one line."""


def run_json(argv, env=None):
    """The JSON object a ``vae-dist bench --json`` command prints (its last output line)."""
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        why = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{' '.join(argv[:2])} … exited {r.returncode}: {why}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise BenchError(f"{' '.join(argv[:2])} …: its last line is not JSON: {lines[-1][:200]}") from None


def ratios(values, baselines):
    """Each round's value over that round's baseline (a host slower for a while slows both)."""
    return [v / b for v, b in zip(values, baselines)]


def kernel_table(medians, used):
    """Lines of the --kernels table: kernel, the kernel OpenBLAS used, median samples/s and its
    ratio to the first kernel's. ``medians`` and ``used`` are keyed by kernel, in run order."""
    first = next(iter(medians.values()))
    lines = [f"{'kernel':<12} {'used':<12} {'samples/s':>14} {'ratio':>10}"]
    for k, med in medians.items():
        lines.append(f"{k:<12} {used[k]:<12} {med:14.0f} {med / first:9.2f}x")
    return lines


def scaling_row(np_, mode, samples, baseline, share, wait):
    """One line of the --scaling table from per-round lists: global samples/s (median), the
    speed-up (median of the rounds' ratios to np 1) and its range, efficiency (speed-up / np),
    the median allreduce and wait shares of a step."""
    r = ratios(samples, baseline)
    m = statistics.median(r)
    return (f"{np_:<4} {mode:<9} {statistics.median(samples):12.0f} {m:8.2f}x {min(r):6.2f}-{max(r):.2f}x "
            f"{100 * m / np_:10.0f}% {100 * statistics.median(share):9.1f}% {100 * statistics.median(wait):7.1f}%")


def bench_argv(a):
    return [a.bin, "bench", "--config", a.config, "--steps", str(a.steps), "--repeats", str(a.repeats), "--json"]


def kernel_of(binary, coretype=None):
    env = dict(os.environ, **({"OPENBLAS_CORETYPE": coretype} if coretype else {}))
    return subprocess.run([binary, "blas", "--kernel"], stdout=subprocess.PIPE, text=True, env=env).stdout.strip()


def single(a):
    out = run_json(bench_argv(a) + ["--threads", str(a.threads)])
    print(f"{a.config}: kernel {out['kernel']}, {out['threads']} thread(s): {out['steps_per_sec']:.1f} steps/s, "
          f"{out['samples_per_sec']:.0f} samples/s (median of {a.repeats} blocks of {a.steps} steps)")


def kernels(a):
    names = a.kernels.split()
    results = {k: [] for k in names}
    for r in range(1, a.rounds + 1):
        for k in names:
            out = run_json(bench_argv(a) + ["--threads", str(a.threads)], env=dict(os.environ, OPENBLAS_CORETYPE=k))
            results[k].append(out["samples_per_sec"])
            print(f"round {r}: {k} {out['kernel']} {out['samples_per_sec']:.0f} samples/s", file=sys.stderr)
    medians = {k: statistics.median(v) for k, v in results.items()}
    print("\n".join(kernel_table(medians, {k: kernel_of(a.bin, k) for k in names})))
    print(f"({a.config}, {a.threads} thread(s), median of {a.rounds} interleaved rounds, "
          f"each the median of {a.repeats} blocks of {a.steps} steps)")


def scaling(a):
    nps = [int(n) for n in a.nps.split()]
    if 1 not in nps:
        raise BenchError("--nps must include 1: speed-ups are relative to one rank")
    keys = [(n, m) for n in nps for m in ("plain", "sharded") if not (n == 1 and m == "sharded")]
    sps, share, wait = ({k: [] for k in keys} for _ in range(3))
    for r in range(1, a.rounds + 1):
        for np_, mode in keys:
            opt = "--no-shard-optimizer" if mode == "plain" else "--shard-optimizer"
            out = run_json(["mpirun"] + mpirun_args(np_, threads=1) + bench_argv(a) + [opt])
            sps[np_, mode].append(out["samples_per_sec"])
            share[np_, mode].append(out["allreduce_share"])
            wait[np_, mode].append(out["wait_share"])
            print(f"round {r}: np {np_} {mode}: {out['samples_per_sec']:.0f} samples/s", file=sys.stderr)
    print(f"{'np':<4} {'optimizer':<9} {'samples/s':>12} {'speed-up':>9} {'(range)':>13} {'efficiency':>11} "
          f"{'allreduce':>10} {'wait':>8}")
    for k in keys:
        print(scaling_row(k[0], k[1], sps[k], sps[1, "plain"], share[k], wait[k]))
    print(f"({a.config}, global batch from the config, kernel {kernel_of(a.bin)}, 1 OpenBLAS thread per rank, "
          f"{cpu_cores()} cores; median of {a.rounds} interleaved rounds, each the median of {a.repeats} blocks "
          f"of {a.steps} steps)")


def vs_pytorch(a):
    from . import vs_pytorch as vs

    vs.run(a, bench_argv(a), run_json)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vae_dist.bench", description="scripts/bench's runs and tables")
    p.add_argument("--bin", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--mode", choices=["single", "kernels", "scaling", "vs-pytorch"], default="single")
    for name, default in (("threads", 1), ("steps", 50), ("repeats", 5), ("rounds", 3)):
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--kernels", default="")
    p.add_argument("--nps", default="1 2 4 8")
    p.add_argument("--csv", default="", help="--mode vs-pytorch: also write the runs and ratios here")
    a = p.parse_args(argv)
    try:
        {"single": single, "kernels": kernels, "scaling": scaling, "vs-pytorch": vs_pytorch}[a.mode](a)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
