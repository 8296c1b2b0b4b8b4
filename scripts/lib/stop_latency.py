"""scripts/stop-latency's measurement (see its --help). Standard library only."""
import json, os, shutil, signal, statistics, subprocess, sys, tempfile, time

binary, config, nps, rounds, after = sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3].split()], int(sys.argv[4]), int(sys.argv[5])


def lines(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip().endswith("}")]
    except FileNotFoundError:
        return []


def one(np, tmp, to):
    out = os.path.join(tmp, f"np{np}")
    shutil.rmtree(out, ignore_errors=True)
    train = [binary, "train", "--config", config, "--out", out, "--steps", "10000000", "--log-every", "1",
             "--eval-every", "0", "--checkpoint-every", "0", "--no-tensorboard", "--progress", "none", "--threads", "1"]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_orte_tmpdir_base=tmp, OPENBLAS_NUM_THREADS="1")
    if np > 1:
        train = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(np)] + train
    p = subprocess.Popen(train, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        steps = [m for m in lines(metrics) if "loss" in m]
        if steps and steps[-1]["step"] >= after:
            break
        time.sleep(0.05)
    if p.poll() is not None:
        sys.exit(f"stop-latency: np {np}: the run ended before the signal: {p.stderr.read()[-500:]}")
    ranks = []
    if to == "ranks":  # as Slurm or Kubernetes do: every rank gets the signal
        ranks = [int(x) for x in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()]
    t0 = time.time()
    for pid in ranks or [p.pid]:
        os.kill(pid, signal.SIGTERM)
    code = p.wait(timeout=120)
    seconds = time.time() - t0
    ms = lines(metrics)
    stop = [m for m in ms if m.get("event") == "stopped"]
    if not stop:
        sys.exit(f"stop-latency: np {np}: no 'stopped' event in {metrics}: {p.stderr.read()[-500:]}")
    stopped = stop[0]["step"]
    before = max([m["step"] for m in ms if "loss" in m and m["wall_time"] <= t0] or [0])
    computed = max(m["step"] for m in ms if "step" in m)
    ckpts = sorted(os.listdir(os.path.join(out, "checkpoints")))
    ckpt = int(ckpts[-1].split("-")[1].split(".")[0]) if ckpts else 0
    return seconds, code, stopped - before, ckpt, computed - ckpt


tmp = tempfile.mkdtemp(prefix="vae-dist-stop-")
try:
    print(f"config {os.path.basename(config)}, SIGTERM after {after} logged steps, {rounds} round(s) per np (medians)")
    print(f"{'np':>3} {'SIGTERM to':>10} {'exit s':>8} {'exit code':>9} {'steps after':>11} {'checkpoint':>10} {'lost':>5}")
    for np, to in [(n, t) for n in nps for t in (["process"] if n == 1 else ["mpirun", "ranks"])]:
        r = [one(np, tmp, to) for _ in range(rounds)]
        med = lambda i: statistics.median(x[i] for x in r)
        codes = sorted({x[1] for x in r})
        print(f"{np:>3} {to:>10} {med(0):>8.2f} {','.join(map(str, codes)):>9} {med(2):>11.0f} {'at stop' if all(x[3] > 0 for x in r) else 'MISSING':>10} {max(x[4] for x in r):>5}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
