"""scripts/bench --model's measurements (vae_dist.cluster_model fits and prints them): every run
goes through the vae-dist binary.

- compute: np 1 `vae-dist bench --json` at batches B/16, B/4, B/2 and B (B the config's batch;
  a copy of the config with another train.batch in a temporary directory), and `--profile` at B
  for the Adam time; 1 OpenBLAS thread;
- exchanges: `vae-dist bench --exchange` (the run's own exchange, no-op update) for the model's
  arena and one-tensor arenas of EXCHANGE_FLOATS: the shared-memory window at np 2 and 4 (one
  arena per process: the window exists once per process), MPI's collectives over local shared
  memory (VAE_DIST_SHM=0) at np 2 and 4, and TCP between two namespace hosts
  (scripts/mpi-two-hosts) with 1 and 2 ranks per host;
- steps: `vae-dist bench --json` at np 2 and 4 locally and 2 × 1, 2 × 2 over TCP, the points the
  model's predictions are checked against.

The result is a dictionary (saved as JSON): config, batch, kernel, cores, model_floats,
compute {batches, step_seconds, adam_seconds}, exchanges [{transport: shm|mpi-local|tcp, ranks,
hosts, floats, seconds}], steps [{name, transport, ranks, hosts, seconds, exchange_share, wait_share}] (the shares of a
step in the exchange and waiting for the slowest rank, as `vae-dist bench` measures them).
Standard library only.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

from .launch import cpu_cores, mpirun_args

#: One-tensor arenas (floats) timed besides the model's own.
EXCHANGE_FLOATS = [16384, 262144, 4194304]
#: The two-host runs' exit status when namespaces cannot be made (scripts/mpi-two-hosts).
SKIP = 77


class MeasureError(Exception):
    """A measurement failed; the message is one line."""


def json_lines(argv, env=None):
    """The JSON objects a command prints, one per line (other lines are ignored); None when
    it exits with SKIP."""
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       stdin=subprocess.DEVNULL)
    if r.returncode == SKIP:
        return None
    objs = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0 or not objs:
        why = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or ["no output"])[-1]
        raise MeasureError(f"{' '.join(os.path.basename(x) for x in argv[:3])} … exited {r.returncode}: {why}")
    return objs


def with_batch(config, batch, directory):
    """A copy of the YAML ``config`` in ``directory`` whose train.batch is ``batch``."""
    text = open(config).read()
    new, count = re.subn(r"(?m)^(\s+batch:\s*)\d+", lambda mt: mt.group(1) + str(batch), text)
    if count != 1:
        raise MeasureError(f"{config}: expected one 'batch: N' line under train:, found {count}")
    path = os.path.join(directory, f"batch-{batch}.yaml")
    with open(path, "w") as f:
        f.write(new)
    return path


class Runner:
    def __init__(self, binary, config, two_hosts, log=sys.stderr, steps=20, repeats=5):
        self.bin, self.config, self.two_hosts, self.log = binary, config, two_hosts, log
        self.step_args = ["--threads", "1", "--warmup", "10", "--steps", str(steps), "--repeats", str(repeats), "--json"]
        self.exchange_args = ["--exchange", "--threads", "1", "--warmup", "5", "--repeats", "21"]
        self.tcp_ok = True

    def say(self, text):
        print(f"model: {text}", file=self.log, flush=True)

    def local(self, p, argv, env=None):
        pre = [] if p == 1 else ["mpirun"] + mpirun_args(p, threads=1, shared=True) + (["-x", "VAE_DIST_SHM"] if env else [])
        return json_lines(pre + [self.bin] + argv, dict(os.environ, **env) if env else None)

    def over_tcp(self, per_host, argv):
        if not self.tcp_ok:
            return None
        out = json_lines([self.two_hosts, "--ranks-per-host", str(per_host), "--run", self.bin] + argv)
        if out is None:
            self.tcp_ok = False
            self.say("two namespace hosts cannot be made here (scripts/mpi-two-hosts skipped): no TCP points")
        return out

    def compute(self, batch, tmp):
        batches = sorted({max(1, batch // 16), max(1, batch // 4), max(1, batch // 2), batch})
        seconds = []
        for b in batches:
            out = self.local(1, ["bench", "--config", with_batch(self.config, b, tmp)] + self.step_args)[-1]
            seconds.append(1 / out["steps_per_sec"])
            self.say(f"np 1, batch {b}: {1e3 * seconds[-1]:.3f} ms/step")
        prof = self.local(1, ["bench", "--config", self.config, "--profile"] + self.step_args)[-1]
        adam = prof["profile_ms_per_step"]["adam"][0] / 1e3
        if adam < 0.01 * seconds[-1]:
            # One process runs Adam inside backward (each layer's update while its gradient is
            # in cache), so its profile shows no Adam phase: take Adam's time from 2 sharded
            # ranks, each of which updates half of the arena after the exchange.
            two = self.local(2, ["bench", "--config", self.config, "--profile"] + self.step_args)[-1]
            halves = two["profile_ms_per_step"]["adam"]
            adam = 2 * sorted(halves)[len(halves) // 2] / 1e3
            self.say(f"Adam (from np 2, sharded): {1e3 * adam:.3f} ms for the whole arena")
        return {"batches": batches, "step_seconds": seconds, "adam_seconds": adam}, prof

    def exchanges(self):
        rows = []

        def add(transport, hosts, objs):
            for o in objs or []:
                rows.append({"transport": transport, "ranks": o["ranks"], "hosts": hosts, "floats": o["floats"],
                             "arena": o["arena"], "seconds": o["seconds"]})
                self.say(f"exchange {transport} np {o['ranks']}: {o['floats']} floats {1e3 * o['seconds']:.3f} ms")

        sizes = [str(n) for n in EXCHANGE_FLOATS]
        for p in (2, 4):
            add("shm", 1, self.local(p, ["bench", "--config", self.config] + self.exchange_args))
            for n in sizes:
                add("shm", 1, self.local(p, ["bench", "--floats", n] + self.exchange_args))
            add("mpi-local", 1, self.local(p, ["bench", "--config", self.config, "--floats"] + sizes + self.exchange_args,
                                           env={"VAE_DIST_SHM": "0"}))
        for per_host in (1, 2):
            add("tcp", 2, self.over_tcp(per_host, ["bench", "--config", self.config, "--floats"] + sizes + self.exchange_args))
        return rows

    def steps(self, np1_seconds):
        rows = [{"name": "np 1", "transport": "none", "ranks": 1, "hosts": 1, "seconds": np1_seconds}]
        argv = ["bench", "--config", self.config] + self.step_args
        for p in (2, 4):
            out = self.local(p, argv)[-1]
            note = f" (oversubscribed: {p} ranks on {cpu_cores()} cores)" if p > cpu_cores() else ""
            rows.append({"name": f"np {p}, shared-memory window{note}", "transport": "shm", "ranks": p, "hosts": 1,
                         "seconds": 1 / out["steps_per_sec"], "exchange_share": out["allreduce_share"],
                         "wait_share": out["wait_share"]})
        for per_host in (1, 2):
            out = self.over_tcp(per_host, argv)
            if out:
                p = 2 * per_host
                note = f" (oversubscribed: {p} ranks on {cpu_cores()} cores)" if p > cpu_cores() else ""
                rows.append({"name": f"2 hosts × {per_host}, TCP{note}", "transport": "tcp", "ranks": p, "hosts": 2,
                             "seconds": 1 / out[-1]["steps_per_sec"], "exchange_share": out[-1]["allreduce_share"],
                             "wait_share": out[-1]["wait_share"]})
        for r in rows[1:]:
            self.say(f"step {r['name']}: {1e3 * r['seconds']:.3f} ms")
        return rows


def measure_once(r, config, batch):
    with tempfile.TemporaryDirectory() as tmp:
        compute, prof = r.compute(batch, tmp)
    np1 = compute["step_seconds"][compute["batches"].index(batch)]
    return {"kernel": prof["kernel"], "compute": compute, "exchanges": r.exchanges(), "steps": r.steps(np1)}


def median_of(rounds):
    """One measurement from several rounds: each number the median over the rounds."""
    med = statistics.median
    first = rounds[0]
    c = [x["compute"] for x in rounds]
    compute = {"batches": first["compute"]["batches"], "adam_seconds": med(x["adam_seconds"] for x in c),
               "step_seconds": [med(x["step_seconds"][i] for x in c) for i in range(len(c[0]["step_seconds"]))]}
    exchanges = [dict(e, seconds=med(x["exchanges"][i]["seconds"] for x in rounds)) for i, e in enumerate(first["exchanges"])]
    steps = [dict(s, **{k: med(x["steps"][i][k] for x in rounds) for k in ("seconds", "exchange_share", "wait_share") if k in s})
             for i, s in enumerate(first["steps"])]
    return {"kernel": first["kernel"], "compute": compute, "exchanges": exchanges, "steps": steps}


def measure(binary, config, two_hosts, rounds=3, log=sys.stderr):
    """Runs every measurement ``rounds`` times, interleaved (about 1 minute a round on 2 cores),
    and returns the dictionary: each number the median of the rounds (the rounds are kept
    under "rounds")."""
    r = Runner(binary, config, two_hosts, log)
    batch = r.local(1, ["bench", "--config", config] + r.step_args)[-1]["batch"]
    runs = []
    for i in range(rounds):
        r.say(f"round {i + 1} of {rounds}")
        runs.append(measure_once(r, config, batch))
    if len({len(x["exchanges"]) for x in runs} | {len(x["steps"]) for x in runs}) > 2:
        raise MeasureError("the rounds measured different points (the two-host runs failed in some): run again")
    model = [e["floats"] for e in runs[0]["exchanges"] if e["arena"] == "model"]
    return dict(median_of(runs), config=config, batch=batch, cores=cpu_cores(), model_floats=model[0], rounds=runs)
