"""scripts/data-memory's measurement (see its --help): memory and start-up time of
``vae-dist train`` on a large ``.npy`` file that every rank maps read-only.

Subcommands:
  write-npy --path P --rows N --cols D   a float32 [N, D] array in [0, 1] (kept when one of that
                                         shape exists; NumPy needed)
  config --data P --out FILE --steps S   the small model's config on P
  evict --path P                         drop P's pages from the page cache (posix_fadvise)
  measure --np N --cache C --run-dir D --data P --csv FILE --binary BIN -- COMMAND...
                                         run COMMAND, sample every rank's /proc/PID/smaps_rollup,
                                         append one CSV row per rank (peak values) to FILE
  report --csv FILE                      print FILE as a table

Memory figures are the peak over the run of each /proc/PID/smaps_rollup field, per rank.
A file page mapped by one process only counts as Private_Clean; mapped by several, as
Shared_Clean (and 1/k of it in each one's Pss). Neither is a copy: both are the page cache's
pages. What a rank owns alone is Private_Dirty (its heap, stacks, buffers).
"""

import argparse
import csv
import os
import subprocess
import sys
import time

from . import metrics

#: The smaps_rollup fields sampled (kB in the file, MiB in the CSV).
FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Anonymous")
#: The phases of the run's "startup" metrics line, in order.
PHASES = ("startup_s", "data_load_s", "data_check_s", "data_checksum_s", "handshake_s")
COLUMNS = ("np", "cache", "rank", "file_mib") + tuple(f.lower() + "_mib" for f in FIELDS) + PHASES + ("command_s",)


class MeasureError(Exception):
    """The measurement could not be made; the message is one line."""


def parse_smaps_rollup(text):
    """The kB fields of a /proc/PID/smaps_rollup text: {"Rss": 1234, ...} (other lines ignored)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].endswith(":") and parts[2] == "kB":
            out[parts[0][:-1]] = int(parts[1])
    return out


def rank_of(environ):
    """The MPI rank named in a process's environment (the NUL-separated bytes of
    /proc/PID/environ): OMPI_COMM_WORLD_RANK, PMI_RANK or SLURM_PROCID; None without one."""
    env = dict(e.split(b"=", 1) for e in environ.split(b"\0") if b"=" in e)
    for key in (b"OMPI_COMM_WORLD_RANK", b"PMI_RANK", b"SLURM_PROCID"):
        if key in env:
            return int(env[key])
    return None


def merge_peak(peaks, rank, sample):
    """Keeps in ``peaks[rank]`` the largest value of every field seen so far."""
    old = peaks.setdefault(rank, {})
    for k, v in sample.items():
        old[k] = max(old.get(k, v), v)


def descendants(pid, proc="/proc"):
    """PIDs of every live process under ``pid`` (children, grandchildren, ...)."""
    children = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat")) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def ranks(pid, binary, proc="/proc"):
    """{rank: pid} of the processes running ``binary`` at or under ``pid`` (rank 0 for one
    process without MPI)."""
    found = {}
    for p in [pid] + descendants(pid, proc):
        try:
            if os.path.realpath(os.path.join(proc, str(p), "exe")) != binary:
                continue
            with open(os.path.join(proc, str(p), "environ"), "rb") as f:
                r = rank_of(f.read())
        except OSError:
            continue
        found[0 if r is None else r] = p
    return found


def sample(command, binary, interval=0.1):
    """Runs ``command`` to its end, sampling the ranks' smaps_rollup every ``interval`` s.
    Returns (exit status, seconds, {rank: {field: peak kB}})."""
    peaks = {}
    start = time.monotonic()
    p = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    while p.poll() is None:
        for r, pid in ranks(p.pid, binary).items():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    merge_peak(peaks, r, parse_smaps_rollup(f.read()))
            except OSError:
                pass  # the rank ended between the listing and the read
        time.sleep(interval)
    return p.returncode, time.monotonic() - start, peaks


def rows(np_, cache, peaks, startup, file_bytes, command_s):
    """One CSV row (dict) per rank: peaks in MiB (one decimal), the run's start-up phases."""
    out = []
    for r in sorted(peaks):
        row = {"np": np_, "cache": cache, "rank": r, "file_mib": round(file_bytes / 2**20, 1)}
        for f in FIELDS:
            row[f.lower() + "_mib"] = round(peaks[r].get(f, 0) / 1024, 1)
        for k in PHASES:
            row[k] = startup.get(k, "")
        row["command_s"] = round(command_s, 3)
        out.append(row)
    return out


def table(rows_):
    """The rows as an aligned text table (the columns that matter for "one copy per node")."""
    cols = ("np", "cache", "rank", "rss_mib", "pss_mib", "private_clean_mib", "private_dirty_mib",
            "shared_clean_mib") + PHASES
    head = ("np", "cache", "rank", "Rss MiB", "Pss MiB", "Priv.clean", "Priv.dirty", "Shared.clean", "startup s",
            "load s", "check s", "checksum s", "handshake s")
    body = [[str(r[c]) for c in cols] for r in rows_]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join("{:>%d}" % w for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*b) for b in body])


def write_npy(path, rows_, cols, chunk=10000, seed=0):
    """A float32 [rows, cols] .npy of uniform values in [0, 1), written in chunks; returns False
    when ``path`` already holds an array of that shape and dtype (left as it is)."""
    import numpy as np

    if os.path.exists(path):
        try:
            old = np.load(path, mmap_mode="r")
            if old.shape == (rows_, cols) and old.dtype == np.float32:
                return False
        except ValueError:
            pass
    tmp = path + ".partial"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows_, cols))
    rng = np.random.default_rng(seed)
    for i in range(0, rows_, chunk):
        n = min(chunk, rows_ - i)
        out[i:i + n] = rng.random((n, cols), dtype=np.float32)
    out.flush()
    del out
    os.replace(tmp, path)
    return True


def config_text(data, steps):
    """The measured run: a 1024-256-16 VAE (width from the file), batch 100, a 0.1 % held-out split."""
    return (f"name: data-memory\ndata:\n  train: {data}\n  test_fraction: 0.001\n"
            "model:\n  hidden: [256]\n  zdim: 16\n"
            f"train:\n  batch: 100\n  steps: {steps}\n  log_every: 50\n  checkpoint_every: 0\n  eval_every: 0\n")


def evict(path):
    """Asks the kernel to drop ``path``'s clean pages from the page cache (no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure(args):
    """Runs the command, then appends its per-rank rows to the CSV and prints them."""
    binary = os.path.realpath(args.binary)
    status, seconds, peaks = sample(args.command, binary)
    if status != 0:
        raise MeasureError(f"np {args.np}: the run exited with status {status}")
    lines = metrics.read(os.path.join(args.run_dir, "metrics.jsonl"))
    startup = metrics.events(lines, "startup")
    if not startup:
        raise MeasureError(f"{args.run_dir}/metrics.jsonl: no 'startup' event line")
    if len(peaks) != args.np:
        raise MeasureError(f"np {args.np}: sampled {len(peaks)} rank(s); the run may have been too short to see")
    new = rows(args.np, args.cache, peaks, startup[0], os.path.getsize(args.data), seconds)
    exists = os.path.exists(args.csv) and os.path.getsize(args.csv) > 0
    with open(args.csv, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if not exists:
            w.writeheader()
        w.writerows(new)
    print(table(new), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vae_dist.data_memory", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("write-npy")
    w.add_argument("--path", required=True)
    w.add_argument("--rows", type=int, required=True)
    w.add_argument("--cols", type=int, required=True)
    c = sub.add_parser("config")
    c.add_argument("--data", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--steps", type=int, required=True)
    e = sub.add_parser("evict")
    e.add_argument("--path", required=True)
    m = sub.add_parser("measure")
    for flag in ("--run-dir", "--data", "--csv", "--cache"):
        m.add_argument(flag, required=True)
    m.add_argument("--np", type=int, required=True)
    m.add_argument("--binary", required=True, help="the vae-dist binary the ranks run")
    m.add_argument("command", nargs=argparse.REMAINDER)
    r = sub.add_parser("report")
    r.add_argument("--csv", required=True)
    a = p.parse_args(argv)
    try:
        return run(a)
    except (MeasureError, metrics.MetricsError, OSError) as err:
        print(f"data-memory: error: {err}", file=sys.stderr)
        return 1


def run(a):
    """One subcommand."""
    if a.what == "write-npy":
        print(f"{a.path}: " + ("written" if write_npy(a.path, a.rows, a.cols) else "exists, kept"))
    elif a.what == "config":
        with open(a.out, "w") as f:
            f.write(config_text(a.data, a.steps))
    elif a.what == "evict":
        evict(a.path)
    elif a.what == "measure":
        a.command = a.command[1:] if a.command[:1] == ["--"] else a.command
        measure(a)
    else:
        with open(a.csv, newline="") as f:
            print(table(list(csv.DictReader(f))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
