"""scripts/bench --model: an α–β cost model of the data-parallel step, fitted to what was
measured on this machine, that predicts step time, speed-up and efficiency for more ranks over
a named link.

The step of one rank with a per-rank batch b, p ranks and an arena of n floats (4n bytes):

    t(p, b) = compute(b) · s + adam / p · s + exchange(p, n)

- compute(b) = c0 + c1·b: batch + forward + backward of one rank, fitted (least squares) to
  np 1 steps measured at several batches minus their Adam time (one core per rank);
- adam: the whole arena's Adam update (measured at np 2 when one process runs it inside
  backward); the sharded optimizer (the default) runs 1/p of it on each rank;
- s = max(1, ranks on one machine / its cores): the slowdown of oversubscribed ranks (1 on a
  cluster with a core per rank);
- exchange(p, n) on a link: the collective exchange's all-to-all (each rank sends every other
  rank its part of that rank's shard) and allgather, which cost what a ring reduce-scatter +
  allgather costs: 2(p−1)·α + 2(p−1)/p·4n·β + (p−1)/p·n·γ, with α (s) the link's latency, β (s/byte) its
  inverse bandwidth and γ (s/float) the local cost of adding one received float, measured here
  (from the shared-memory exchange of 2 ranks, which is nothing but that addition).

Measured exchanges are fitted the same way: the MPI collectives (TCP between namespaces, MPI
over local shared memory) to α, β with the ring formula over all of a transport's (p, bytes)
points; the shared-memory window, which is not a ring, to a + b·bytes per rank count. The
numbers of the links are typical published values, not measured here (see LINKS). The
exchange overlaps the rest of backward (its buckets start as layers finish); the model does
not count that, so its exchange is an upper bound where the link, not the CPU, is the limit.

Usage: python -m vae_dist.cluster_model --from FILE [--link NAME] [--batch N] [--nps "1 2 4"]
(measurements: vae_dist.cluster_measure). NumPy and the standard library.
"""

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass

import numpy as np


class ModelError(Exception):
    """Bad input to the model; the message is one line."""


@dataclass(frozen=True)
class Link:
    alpha: float  # seconds per message (one-way MPI latency)
    beta: float  # seconds per byte (1 / achievable MPI bandwidth)
    source: str


#: Typical values, not measured here: one-way MPI latency (osu_latency, small messages) and the
#: large-message bandwidth MPI reaches (osu_bw), from vendors' data sheets and published OSU
#: micro-benchmark results for such links.
LINKS = {
    "10gbe": Link(30e-6, 1 / 1.15e9,
                  "10 Gigabit Ethernet, MPI over kernel TCP: ~30 µs latency, ~1.15 GB/s (92% of the 1.25 GB/s line rate)"),
    "25gbe": Link(20e-6, 1 / 2.9e9,
                  "25 Gigabit Ethernet, MPI over kernel TCP: ~20 µs latency, ~2.9 GB/s (93% of the 3.125 GB/s line rate)"),
    "ib-hdr": Link(1.1e-6, 1 / 24e9,
                   "InfiniBand HDR (200 Gb/s, e.g. ConnectX-6, MPI over UCX verbs): ~1.1 µs latency, ~24 GB/s (96% of the 25 GB/s line rate)"),
}


def relative_lstsq(design, ys):
    """Least squares of the residuals relative to ``ys`` (the points span several orders of
    magnitude: plain residuals would fit the largest one only)."""
    w = 1 / np.abs(ys)
    coef, *_ = np.linalg.lstsq(design * w[:, None], ys * w, rcond=None)
    return [float(c) for c in coef]


def fit_affine(xs, ys):
    """y = a + b·x, least squares of relative residuals; returns (a, b)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) < 2 or np.ptp(xs) == 0:
        raise ModelError(f"an affine fit needs at least 2 distinct x values, got {list(xs)}")
    a, b = relative_lstsq(np.column_stack([np.ones_like(xs), xs]), ys)
    return a, b


def fit_ring(points):
    """α, β of the ring reduce-scatter + allgather t = 2(p−1)·α + 2(p−1)/p·bytes·β, least
    squares of relative residuals over ``points`` [(p, bytes, seconds)] (every p ≥ 2; two distinct sizes at least)."""
    ps = np.array([p for p, _, _ in points], float)
    if len(points) < 2 or (ps < 2).any():
        raise ModelError("a ring fit needs at least 2 points, each with 2 or more ranks")
    nbytes = np.array([b for _, b, _ in points], float)
    t = np.array([s for _, _, s in points], float)
    design = np.column_stack([2 * (ps - 1), 2 * (ps - 1) / ps * nbytes])
    if np.linalg.matrix_rank(design) < 2:
        raise ModelError("a ring fit needs points of at least 2 different sizes")
    alpha, beta = relative_lstsq(design, t)
    return alpha, beta


def ring_seconds(p, floats, alpha, beta, gamma=0.0):
    """One exchange of ``floats`` over p ranks in a ring (0 for one rank)."""
    if p < 2:
        return 0.0
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * 4 * floats * beta + (p - 1) / p * floats * gamma


@dataclass(frozen=True)
class Compute:
    c0: float  # seconds per step independent of the batch
    c1: float  # seconds per sample
    adam: float  # seconds of the whole arena's update

    def step(self, p, per_rank_batch, exchange, slowdown=1.0):
        return (self.c0 + self.c1 * per_rank_batch + self.adam / p) * slowdown + exchange


def fit_compute(batches, step_seconds, adam):
    """compute(b) = c0 + c1·b from np 1 step times at several batches, Adam time removed."""
    c0, c1 = fit_affine(batches, [s - adam for s in step_seconds])
    return Compute(c0, c1, adam)


def per_rank_batch(global_batch, p):
    """The slowest rank's rows: ranks get ⌈B/p⌉ or ⌊B/p⌋ of a global batch B."""
    return math.ceil(global_batch / p)


def table(compute, floats, link, gamma, nps, batch, scaled):
    """Rows (np, per-rank batch, global batch, exchange s, step s, samples/s, speed-up,
    efficiency) for a global batch fixed at ``batch`` or (``scaled``) ``batch`` per rank."""
    rows = []
    t1 = compute.step(1, batch, 0.0)
    for p in nps:
        b = batch if scaled else per_rank_batch(batch, p)
        global_batch = batch * p if scaled else batch
        ex = ring_seconds(p, floats, link.alpha, link.beta, gamma)
        t = compute.step(p, b, ex)
        speed_up = (global_batch / t) / (batch / t1)
        rows.append((p, b, global_batch, ex, t, global_batch / t, speed_up, speed_up / p))
    return rows


def min_batch_for(compute, floats, link, gamma, p, efficiency=0.8, limit=1 << 20):
    """The smallest global batch, a multiple of p, whose fixed-batch efficiency at p ranks
    (against one rank on the same batch) reaches ``efficiency``; None up to ``limit``. The
    efficiency grows with the batch (the exchange's share shrinks), so a bisection finds it."""
    ex = ring_seconds(p, floats, link.alpha, link.beta, gamma)

    def reaches(b):
        return compute.step(1, b * p, 0.0) / (p * compute.step(p, b, ex)) >= efficiency

    lo, hi = 1, limit // p
    if hi < 1 or not reaches(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid + 1, hi)
    return lo * p


def format_table(rows):
    lines = [f"{'np':>4} {'batch/rank':>10} {'global':>7} {'exchange ms':>12} {'step ms':>9} {'samples/s':>10} "
             f"{'speed-up':>9} {'efficiency':>10}"]
    for p, b, g, ex, t, sps, s, e in rows:
        lines.append(f"{p:>4} {b:>10} {g:>7} {1e3 * ex:>12.3f} {1e3 * t:>9.3f} {sps:>10.0f} {s:>8.2f}x {100 * e:>9.0f}%")
    return lines


@dataclass(frozen=True)
class Fits:
    """What the measurements give: the compute model, the arena and each transport's fit."""
    compute: Compute
    floats: int
    gamma: float  # s per float added (the model's arena, 2 ranks on the shared window)
    ring: dict  # transport → (α, β) for the MPI collectives
    window: dict  # ranks → (a, b per byte) for the shared-memory window
    cores: int


def fit_measurements(m):
    """Fits from the dictionary vae_dist.cluster_measure writes (see its docstring)."""
    c = m["compute"]
    compute = fit_compute(c["batches"], c["step_seconds"], c["adam_seconds"])
    by = {}
    for e in m["exchanges"]:
        by.setdefault(e["transport"], []).append((e["ranks"], 4 * e["floats"], e["seconds"]))
    window = {}
    for p in sorted({p for p, _, _ in by.get("shm", [])}):
        pts = [(b, s) for q, b, s in by["shm"] if q == p]
        window[p] = fit_affine([b for b, _ in pts], [s for _, s in pts])
    n = m["model_floats"]
    at_model = [s for q, b, s in by.get("shm", []) if q == 2 and b == 4 * n]
    if not at_model:
        raise ModelError("the measurements have no shared-memory exchange of the model's arena at 2 ranks: γ comes from it")
    # 2 ranks on the window: each adds its half of the model's arena from 2 segments, n/2 floats.
    gamma = at_model[0] / (n / 2)
    ring = {t: fit_ring(pts) for t, pts in by.items() if t != "shm"}
    return Fits(compute, m["model_floats"], gamma, ring, window, m["cores"])


def predicted_exchange(f, transport, p):
    if p < 2:
        return 0.0
    if transport == "shm":
        if p not in f.window:
            raise ModelError(f"no shared-memory exchange of {p} ranks was measured")
        a, b = f.window[p]
        return a + b * 4 * f.floats
    alpha, beta = f.ring[transport]
    return ring_seconds(p, f.floats, alpha, beta)


def validation(f, m):
    """Rows (name, measured s, predicted s, relative error, measured exchange + wait s,
    predicted exchange s) for every measured step."""
    rows = []
    for s in m["steps"]:
        p = s["ranks"]
        slowdown = max(1.0, p / f.cores)  # every rank of these runs shares this machine's cores
        ex = predicted_exchange(f, s["transport"], p)
        pred = f.compute.step(p, per_rank_batch(m["batch"], p), ex, slowdown)
        in_step = (s.get("exchange_share", 0) + s.get("wait_share", 0)) * s["seconds"]
        rows.append((s["name"], s["seconds"], pred, (pred - s["seconds"]) / s["seconds"], in_step, ex))
    return rows


def report(m, link_name, batch, nps):
    f = fit_measurements(m)
    link = LINKS[link_name]
    c = f.compute
    out = [f"Measured on this machine ({m['cores']} cores, kernel {m.get('kernel', '?')}, {m['config']}, "
           f"arena {f.floats} floats = {4 * f.floats / 1e6:.2f} MB; medians, on a shared machine):",
           f"  compute per rank: {1e3 * c.c0:.3f} ms + {1e6 * c.c1:.2f} µs/sample (batches {m['compute']['batches']}); "
           f"Adam on the whole arena {1e3 * c.adam:.3f} ms (÷ np when sharded)",
           f"  γ, adding one float (shared window, 2 ranks): {1e9 * f.gamma:.3f} ns"]
    names = {"tcp": "TCP between namespaces", "mpi-local": "MPI collectives over local shared memory"}
    for t, (alpha, beta) in sorted(f.ring.items()):
        out.append(f"  {names.get(t, t)} (ring fit): α = {1e6 * alpha:.1f} µs, β = {1e9 * beta:.3f} ns/B "
                   f"({1 / beta / 1e9 if beta > 0 else float('inf'):.2f} GB/s)")
    for p, (a, b) in sorted(f.window.items()):
        out.append(f"  shared-memory window, {p} ranks: {1e6 * a:.1f} µs + {1e9 * b:.4f} ns/B")
    out += ["", "Prediction vs measurement (real steps, global batch %d; exchange = the step's exchange + wait):" % m["batch"],
            f"  {'point':<30} {'step ms':>8} {'predicted':>9} {'error':>7} {'exchange ms':>11} {'predicted':>9}"]
    for name, meas, pred, err, ex_meas, ex_pred in validation(f, m):
        note = ""
        if "(" in name:
            name, note = name.split(" (", 1)
            note = "  (" + note
        out.append(f"  {name:<30} {1e3 * meas:>8.3f} {1e3 * pred:>9.3f} {100 * err:>+6.1f}% {1e3 * ex_meas:>11.3f} "
                   f"{1e3 * ex_pred:>9.3f}{note}")
    out += ["", f"PREDICTION for {link_name}: {link.source} (typical values, not measured here); one rank per",
            "node (or per core, each with the cores' speed measured here), flat ring, sharded Adam (each rank runs",
            "1/np of it: with a per-rank batch, efficiency passes 100% where that saves more than the exchange costs)."]
    for scaled in (False, True):
        title = f"per-rank batch {batch} (global = {batch} × np)" if scaled else f"global batch fixed at {batch}"
        out += ["", f"{title}:"] + format_table(table(c, f.floats, link, f.gamma, nps, batch, scaled))
    out += ["", "Smallest global batch keeping fixed-batch efficiency ≥ 80% (prediction):"]
    for p in nps:
        if p > 1:
            need = min_batch_for(c, f.floats, link, f.gamma, p)
            out.append(f"  np {p:>3}: {need if need else 'none below 1M'}" + (f" ({need // p} per rank)" if need else ""))
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(prog="scripts/bench --model", description="scripts/bench --model's fit and tables")
    p.add_argument("--bin", help="the vae-dist binary (measure with it)")
    p.add_argument("--config", help="the config measured (with --bin)")
    p.add_argument("--two-hosts", help="scripts/mpi-two-hosts (with --bin)")
    p.add_argument("--save", help="write the measurements here as JSON (with --bin)")
    p.add_argument("--from", dest="source", help="read measurements from this JSON instead of measuring")
    p.add_argument("--link", default="10gbe", help=f"the link of the prediction: {', '.join(LINKS)}")
    p.add_argument("--batch", help="global batch of the fixed-batch table and per-rank batch of the scaled one "
                                   "(default: the config's)")
    p.add_argument("--nps", default="1 2 4 8 16 32 64", help="rank counts of the tables")
    p.add_argument("--rounds", default="3", help="measurement rounds, interleaved; medians are used")
    return p.parse_args(argv)


def checked(a):
    """(link, batch or None, nps) from the arguments, or ModelError naming the flag."""
    if a.link not in LINKS:
        raise ModelError(f"--link: expected one of {', '.join(LINKS)}, got '{a.link}'")
    if a.batch is not None and not re.fullmatch(r"[1-9][0-9]{0,6}", a.batch):
        raise ModelError(f"--batch: expected a positive integer, got '{a.batch}'")
    nps = a.nps.split()
    if not nps or not all(re.fullmatch(r"[1-9][0-9]{0,5}", n) for n in nps):
        raise ModelError(f"--nps: expected positive integers, got '{a.nps}'")
    if "1" not in nps:
        raise ModelError(f"--nps: must include 1 (speed-ups are relative to one rank), got '{a.nps}'")
    if not re.fullmatch(r"[1-9][0-9]?", a.rounds):
        raise ModelError(f"--rounds: expected a positive integer below 100, got '{a.rounds}'")
    if bool(a.source) == bool(a.bin):
        raise ModelError("give either --from FILE (reprint) or --bin BIN --config FILE (measure)")
    return a.link, int(a.batch) if a.batch else None, sorted({int(n) for n in nps})


def load(path):
    try:
        with open(path) as f:
            m = json.load(f)
    except OSError as e:
        raise ModelError(f"--from: cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise ModelError(f"--from: {path} is not JSON: {e}") from None
    missing = [k for k in ("batch", "cores", "model_floats", "compute", "exchanges", "steps", "config") if k not in m]
    if missing:
        raise ModelError(f"--from: {path} is not a scripts/bench --model measurement (no {', '.join(missing)})")
    return m


def main(argv=None):
    a = parse_args(argv)
    try:
        link, batch, nps = checked(a)
        if a.source:
            m = load(a.source)
        else:
            from .cluster_measure import MeasureError, measure

            try:
                m = measure(a.bin, a.config, a.two_hosts, int(a.rounds))
            except MeasureError as e:
                raise ModelError(str(e)) from None
            if a.save:
                os.makedirs(os.path.dirname(os.path.abspath(a.save)), exist_ok=True)
                with open(a.save, "w") as f:
                    json.dump(m, f, indent=1)
                print(f"model: measurements saved to {a.save} (reprint with scripts/bench --model --from {a.save})",
                      file=sys.stderr)
        print("\n".join(report(m, link, batch or m["batch"], nps)))
    except ModelError as e:
        print(f"bench --model: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
