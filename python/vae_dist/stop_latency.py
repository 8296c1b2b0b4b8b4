"""scripts/stop-latency's measurement (see its --help): SIGTERM to a running ``vae-dist train``
(one process, or ``mpirun`` / every rank of an MPI job) after N logged steps, and what the stop
cost, from the run's own metrics.jsonl and checkpoints.

Usage: python -m vae_dist.stop_latency --bin BIN --config FILE [--nps "1 2 4"] [--rounds R]
         [--after-steps N]
Standard library only.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from . import metrics
from .launch import mpirun_args


class StopError(Exception):
    """A run did not behave as the measurement needs; the message is one line."""


def checkpoint_step(names):
    """The step of the newest ``step-NNNNNNNN.safetensors`` among ``names`` (0 for none)."""
    steps = [int(n.split("-")[1].split(".")[0]) for n in names if n.startswith("step-") and n.endswith(".safetensors")]
    return max(steps, default=0)


def outcome(lines, t0, checkpoint):
    """What a stop cost, from the run's metrics lines, the signal's wall-clock time ``t0`` and
    the step of the checkpoint written at the stop: (steps completed after the signal, steps
    computed but not in that checkpoint). Raises StopError without a "stopped" event."""
    stopped = metrics.events(lines, "stopped")
    if not stopped:
        raise StopError("no 'stopped' event in metrics.jsonl")
    before = max((m["step"] for m in metrics.training(lines) if m["wall_time"] <= t0), default=0)
    return stopped[0]["step"] - before, metrics.last_step(lines) - checkpoint


def train_command(binary, config, out, np_):
    train = [binary, "train", "--config", config, "--out", out, "--steps", "10000000", "--log-every", "1",
             "--eval-every", "0", "--checkpoint-every", "0", "--no-tensorboard", "--progress", "none", "--threads", "1"]
    return ["mpirun"] + mpirun_args(np_, threads=1) + train if np_ > 1 else train


def wait_for_steps(p, path, after, np_):
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        steps = metrics.training(metrics.read(path, missing_ok=True))
        if steps and steps[-1]["step"] >= after:
            return
        time.sleep(0.05)
    if p.poll() is not None:
        raise StopError(f"np {np_}: the run ended before the signal: {p.stderr.read()[-500:]}")
    raise StopError(f"np {np_}: {after} steps were not logged within 600 s")


def one(a, np_, tmp, to):
    """One stop: (seconds to exit, exit code, steps after the signal, checkpoint step, lost)."""
    out = os.path.join(tmp, f"np{np_}")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, OMPI_MCA_orte_tmpdir_base=tmp, OPENBLAS_NUM_THREADS="1")
    p = subprocess.Popen(train_command(a.bin, a.config, out, np_), env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    path = os.path.join(out, "metrics.jsonl")
    wait_for_steps(p, path, a.after_steps, np_)
    ranks = []
    if to == "ranks":  # as Slurm or Kubernetes do: every rank gets the signal
        pgrep = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True)
        ranks = [int(x) for x in pgrep.stdout.split()]
    t0 = time.time()
    for pid in ranks or [p.pid]:
        os.kill(pid, signal.SIGTERM)
    code = p.wait(timeout=120)
    seconds = time.time() - t0
    ckpt = checkpoint_step(os.listdir(os.path.join(out, "checkpoints")))
    try:
        after, lost = outcome(metrics.read(path), t0, ckpt)
    except StopError as e:
        raise StopError(f"np {np_}: {e}: {p.stderr.read()[-500:]}") from None
    return seconds, code, after, ckpt, lost


def row(np_, to, results):
    """The table line of R rounds: median seconds and steps after, the exit codes seen, whether
    every round wrote a checkpoint at the stop, and the most steps lost."""
    med = lambda i: statistics.median(x[i] for x in results)  # noqa: E731
    codes = ",".join(map(str, sorted({x[1] for x in results})))
    ckpt = "at stop" if all(x[3] > 0 for x in results) else "MISSING"
    return f"{np_:>3} {to:>10} {med(0):>8.2f} {codes:>9} {med(2):>11.0f} {ckpt:>10} {max(x[4] for x in results):>5}"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vae_dist.stop_latency", description="scripts/stop-latency's runs")
    p.add_argument("--bin", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--nps", default="1 2 4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--after-steps", type=int, default=100)
    a = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="vae-dist-stop-")
    try:
        print(f"config {os.path.basename(a.config)}, SIGTERM after {a.after_steps} logged steps, "
              f"{a.rounds} round(s) per np (medians)")
        print(f"{'np':>3} {'SIGTERM to':>10} {'exit s':>8} {'exit code':>9} {'steps after':>11} {'checkpoint':>10} "
              f"{'lost':>5}", flush=True)
        for np_ in (int(n) for n in a.nps.split()):
            for to in ["process"] if np_ == 1 else ["mpirun", "ranks"]:
                print(row(np_, to, [one(a, np_, tmp, to) for _ in range(a.rounds)]), flush=True)
    except StopError as e:
        print(f"stop-latency: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
