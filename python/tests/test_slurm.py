"""scripts/slurm.sbatch and scripts/zdim-study --slurm under a real Slurm: the cluster of
scripts/slurm-local, which scripts/test starts (as root, two nodes) and names in SLURM_CONF;
these jobs each run on one node (test_slurm_nodes.py has those across nodes).

One module fixture submits every test's jobs at once and starts the uninterrupted reference run
(`mpirun -np 2`, the same config); they run side by side (the test cluster lets jobs share
cores) and each test then waits for its own job. The test cluster holds a requeued job about
30 s (Slurm's usual is about 2 minutes); nothing here moves a job's start time, so every
restart below is Slurm's own. Without a usable Slurm the tests skip, saying why, unless
VAE_DIST_REQUIRE_SLURM=1 (CI sets it), which makes that a failure.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(PYTHON_DIR)
sys.path.insert(0, PYTHON_DIR)
from vae_dist import checkpoint  # noqa: E402

SBATCH = os.path.join(REPO, "scripts", "slurm.sbatch")
CONFIG = os.path.join(REPO, "configs", "slurm-test.yaml")
with open(CONFIG) as _f:
    STEPS = int(re.search(r"^  steps: (\d+)$", _f.read(), re.M).group(1))
JOB_TIMEOUT = 420
LOCAL_CLUSTER = "vae-dist-local"  # scripts/lib/slurm.sh's ClusterName
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def binary():
    path = os.environ.get("VAE_DIST_BIN") or os.path.join(REPO, ".build", "release", "vae-dist")
    return path if os.access(path, os.X_OK) else None


def skip_reason():
    """Why the Slurm tests cannot run here, or None."""
    if os.environ.get("VAE_DIST_SLURM_SKIP"):
        return f"scripts/test could not start a local Slurm: {os.environ['VAE_DIST_SLURM_SKIP']}"
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is not set: scripts/test starts a local Slurm as root (or: scripts/slurm-local start DIR)"
    for tool in ("sbatch", "scontrol", "mpirun"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if "UP" not in ping.stdout:
        return f"the Slurm of SLURM_CONF={os.environ['SLURM_CONF']} does not answer: {ping.stdout.strip() or ping.stderr.strip()}"
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    cluster = re.search(r"^ClusterName\s*=\s*(\S+)", config, re.M)
    if not cluster or cluster.group(1) != LOCAL_CLUSTER:
        return (f"SLURM_CONF names cluster {cluster.group(1) if cluster else '?'}, not {LOCAL_CLUSTER}: "
                "these tests submit only to scripts/slurm-local's test cluster")
    if binary() is None:
        return "no vae-dist binary: set VAE_DIST_BIN or build (swift build -c release)"
    return None


def job_info(job):
    """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job)], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def submit(name, cwd, env, *options):
    os.makedirs(cwd, exist_ok=True)
    args = ["sbatch", "--parsable", f"--job-name={name}", "--nodes=1", "--ntasks-per-node=2", *options, SBATCH]
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout
    return out.strip().split(";")[0]


def events(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def newest_step(run_dir):
    try:
        return max((e.get("step", 0) for e in events(run_dir)), default=0)
    except (OSError, ValueError):
        return 0


def assert_same_tensors(path, reference):
    got, _ = checkpoint.read(path)
    want, _ = checkpoint.read(reference)
    assert sorted(got) == sorted(want), f"{path}: tensor names differ from the uninterrupted run's"
    differ = [k for k in want if not np.array_equal(got[k], want[k])]
    assert not differ, f"{path}: {len(differ)} tensors differ from the uninterrupted run's, e.g. {differ[0]}"


class Jobs(threading.Thread):
    """Everything the module's tests submitted, and the reference run. A thread polls every job
    once a second (`scontrol show job`), records each distinct (JobState, Reason, Restarts) it
    passes through, and runs the job's hook, so that the jobs are acted on while they run side
    by side, whichever test is waiting."""

    def __init__(self, work):
        super().__init__(daemon=True)
        self.work = work
        self.env = dict(os.environ, VAE_DIST_BIN=binary(), CONFIG=CONFIG, OPENBLAS_NUM_THREADS="1",
                        OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        self.env.pop("VAE_DIST_LAUNCHER", None)
        self.ids, self.hooks, self.seen, self.final, self.errors, self.held = [], {}, {}, {}, [], {}
        self.lock, self.stopping = threading.Lock(), False

    def dir(self, name):
        return os.path.join(self.work, name)

    def submit(self, name, *options, **env):
        job = submit(name, self.dir(name), dict(self.env, **env), *options)
        self.watch(job)
        return job

    def watch(self, job, hook=None):
        with self.lock:
            self.ids.append(job)
            self.hooks[job], self.seen[job] = hook, []

    def run(self):
        while not self.stopping:
            with self.lock:
                live = [j for j in self.ids if j not in self.final]
            for job in live:
                try:
                    self.poll(job)
                except subprocess.CalledProcessError as e:  # a busy slurmctld: ask again next time
                    self.errors.append(f"job {job}: {' '.join(e.cmd)}: {e.stderr or ''}".strip())
            time.sleep(1)

    def poll(self, job):
        info = job_info(job)
        state = (info["JobState"], info.get("Reason"), int(info["Restarts"]))
        if not self.seen[job] or self.seen[job][-1] != state:
            self.seen[job].append(state)
        if self.hooks[job]:
            self.hooks[job](info)
        if info["JobState"] in TERMINAL:
            self.final[job] = info

    def wait(self, job, timeout=JOB_TIMEOUT):
        """The job's final `scontrol show job` and the states it passed through."""
        deadline = time.monotonic() + timeout
        while job not in self.final:
            if time.monotonic() > deadline:
                pytest.fail(f"job {job} did not end within {timeout} s; states: {self.seen[job]}; "
                            f"scontrol errors: {self.errors[-3:]}")
            time.sleep(1)
        return self.final[job], self.seen[job]

    def reference(self):
        """final.safetensors of the uninterrupted mpirun -np 2 run."""
        if self.reference_run.wait(timeout=JOB_TIMEOUT) != 0:
            with open(os.path.join(self.work, "reference.log")) as f:
                pytest.fail(f"the reference run failed: {f.read()[-2000:]}")
        return os.path.join(self.dir("reference"), "final.safetensors")

    def output(self, name, missing=None):
        path = os.path.join(self.dir(name), f"vae-dist-{name}.out")
        if missing is not None and not os.path.exists(path):
            return missing
        with open(path) as f:
            return f.read()


def lift_time_limit(job):
    """After the job's first requeue, lets the next start run to the end (10 minutes)."""
    def hook(info):
        if int(info["Restarts"]) >= 1 and info["TimeLimit"] == "00:01:00":
            subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True, capture_output=True, text=True)
    return hook


def hold_at_step(j, name, step, signal_line, action=lambda: None):
    """A thread that stops job `name`'s two ranks once its run has logged `step`, runs action(),
    and lets the ranks go on once the job script has logged signal_line (the signal has reached
    it): the signal then finds the run mid-way however fast the machine trains. Records the
    step held at in j.held[name], or what went wrong in j.errors."""
    def run():
        try:
            logged, pids = stop_ranks_at_step(j.dir(name), os.path.join(j.dir(name), "runs", name), step, 2)
            j.held[name] = logged
            action()
            continue_ranks(pids, until=lambda: signal_line in j.output(name, missing=""))
        except BaseException as e:  # pytest.fail included: the test reports it
            j.errors.append(f"holding {name} at step {step}: {e}")
    threading.Thread(target=run, daemon=True).start()


def ranks(job_dir):
    """PIDs of the vae-dist processes working in job_dir (a job's submit directory), whichever node runs them."""
    exe, cwd, pids = os.path.realpath(binary()), os.path.realpath(job_dir), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/exe") == exe and os.readlink(f"/proc/{pid}/cwd") == cwd:
                pids.append(int(pid))
        except OSError:
            pass  # gone, or not ours to read
    return pids


def signal_pids(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_ranks_at_step(job_dir, run_dir, step, count, timeout=JOB_TIMEOUT):
    """Once the run has logged `step`, stops (SIGSTOP) its `count` ranks and returns (step logged, pids).
    What a test does at a step then happens there, however fast the machine trains: the tensors
    are unchanged, and a signal sent meanwhile waits for continue_ranks. Checks every 50 ms."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if newest_step(run_dir) >= step:
            pids = ranks(job_dir)
            if len(pids) == count:
                signal_pids(pids, signal.SIGSTOP)
                return newest_step(run_dir), pids
        time.sleep(0.05)
    pytest.fail(f"{run_dir}: step {step} with {count} ranks running not reached within {timeout} s")


def continue_ranks(pids, until=lambda: True, timeout=120):
    """SIGCONT to pids once until() is true (checked every 0.2 s), or after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        time.sleep(0.2)
    signal_pids(pids, signal.SIGCONT)


def require_slurm(reason):
    """Skips with `reason` when Slurm cannot run, or fails when VAE_DIST_REQUIRE_SLURM=1 (CI)."""
    if reason and os.environ.get("VAE_DIST_REQUIRE_SLURM") == "1":
        pytest.fail(f"VAE_DIST_REQUIRE_SLURM=1 but {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    require_slurm(skip_reason())
    j = Jobs(str(tmp_path_factory.mktemp("slurm")))
    # Slurm's warning comes at its first 30 s check after (limit - signal time - 30 s): with a
    # 1-minute limit and @20, 10-40 s into the job, and the time limit itself at 60-90 s.
    # Each run is held (its ranks stopped) at a step until its signal has reached the script, so
    # that the signal finds it mid-way on a machine of any speed.
    j.timelimit = j.submit("timelimit", "--time=1", "--signal=B:USR1@20")
    j.hooks[j.timelimit] = lift_time_limit(j.timelimit)
    hold_at_step(j, "timelimit", 50, "SIGUSR1 (time limit near)")
    j.norequeue = j.submit("norequeue", "--time=1", "--signal=B:USR1@20", "--no-requeue", VAE_DIST_LAUNCHER="srun")
    hold_at_step(j, "norequeue", 50, "SIGUSR1 (time limit near)")
    j.requeue = j.submit("requeue", "--time=10", VAE_DIST_LAUNCHER="mpirun")
    hold_at_step(j, "requeue", 500, "SIGTERM at", lambda: subprocess.run(
        ["scontrol", "requeue", j.requeue], check=True, capture_output=True, text=True))
    zdim = subprocess.run([os.path.join(REPO, "scripts", "zdim-study"), "--slurm", "--quick", "--zdims", "2 3",
                           "--epochs", "1", "--out", j.dir("zdim")] + zdim_data_args(),
                          env=j.env, capture_output=True, text=True)
    j.zdim_output = zdim.stdout + zdim.stderr
    j.zdim = re.findall(r"Submitted batch job (\d+)", zdim.stdout)
    for job in j.zdim:
        j.watch(job)
    j.reference_log = open(os.path.join(j.work, "reference.log"), "w")
    j.reference_run = subprocess.Popen(
        ["mpirun", "-np", "2", "--oversubscribe", binary(), "train", "--config", CONFIG, "--out", j.dir("reference")],
        env=j.env, stdout=j.reference_log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    j.start()
    try:
        yield j
    finally:
        j.stopping = True
        j.join()
        if j.reference_run.poll() is None:
            j.reference_run.kill()
            j.reference_run.wait()
        j.reference_log.close()
        subprocess.run(["scancel", *j.ids], capture_output=True)
        print(f"\nSlurm tests: {time.monotonic() - started:.0f} s from the first submission to the last check")


def zdim_data_args():
    for d in (os.environ.get("VAE_DIST_DATA"), os.path.join(REPO, "data")):
        if d and os.path.isdir(os.path.join(d, "mnist")):
            return ["--data", d]
    return []


def stop_step(run_dir, signal):
    stops = [e for e in events(run_dir) if e.get("event") == "stopped"]
    assert stops, f"{run_dir}: no 'stopped' event: the run was never interrupted"
    assert stops[0]["signal"] == signal, f"{run_dir}: first stop by {stops[0]['signal']}, expected {signal}"
    return stops[0]["step"]


def test_time_limit_warning_checkpoints_requeues_and_finishes_identically(jobs):
    info, seen = jobs.wait(jobs.timelimit)
    out = jobs.output("timelimit")
    assert "SIGUSR1 (time limit near)" in out, f"no time-limit warning reached the script; states {seen}; {jobs.errors}:\n{out}"
    assert "srun --mpi=pmix" in out.splitlines()[1], "the launcher was not srun --mpi=pmix though this Slurm has PMIx"
    run = os.path.join(jobs.dir("timelimit"), "runs", "timelimit")
    step = stop_step(run, "SIGUSR1")
    assert 0 < step < STEPS, f"stopped at step {step}: the warning came before or after training"
    assert "vae-dist exited with status 138" in out
    assert f"requeued job {jobs.timelimit}" in out
    assert ("PENDING", "BeginTime", 1) in seen, f"the job did not wait in the queue after its requeue: {seen}"
    assert f"step-{step:08d}.safetensors at step {step}" in out, "the restart did not resume from the stop checkpoint"
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), f"ended {info['JobState']} {info['ExitCode']}"
    assert int(info["Restarts"]) >= 1
    assert_same_tensors(os.path.join(run, "final.safetensors"), jobs.reference())


def test_scontrol_requeue_mid_run_with_mpirun_finishes_identically(jobs):
    info, seen = jobs.wait(jobs.requeue)
    assert "requeue" in jobs.held, f"the run was never held at step 500 and requeued: {seen}; {jobs.errors}"
    out = jobs.output("requeue")
    assert out.splitlines()[1].startswith("slurm.sbatch: mpirun "), out.splitlines()[1]
    run = os.path.join(jobs.dir("requeue"), "runs", "requeue")
    step = stop_step(run, "SIGTERM")
    assert jobs.held["requeue"] <= step < STEPS
    assert f"step-{step:08d}.safetensors at step {step}" in out, "the restart did not resume from the stop checkpoint"
    assert ("PENDING", "BeginTime", 1) in seen, f"the job did not wait in the queue after its requeue: {seen}"
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1")
    assert_same_tensors(os.path.join(run, "final.safetensors"), jobs.reference())


def test_time_limit_without_requeue_fails_with_the_checkpoint_and_says_how_to_continue(jobs):
    info, seen = jobs.wait(jobs.norequeue)
    out = jobs.output("norequeue")
    run = os.path.join(jobs.dir("norequeue"), "runs", "norequeue")
    step = stop_step(run, "SIGUSR1")
    assert os.path.exists(os.path.join(run, "checkpoints", f"step-{step:08d}.safetensors"))
    assert f"scontrol requeue {jobs.norequeue} failed" in out
    assert "not requeued; to continue: sbatch --job-name=norequeue" in out
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "138:0", "0"), seen


def test_zdim_study_slurm_runs_one_job_per_z_and_collect_gathers_the_rows(jobs):
    assert len(jobs.zdim) == 2, f"expected 2 submitted jobs:\n{jobs.zdim_output}"
    for job in jobs.zdim:
        info, seen = jobs.wait(job)
        assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), f"job {job} {info['JobName']}: {seen}"
    out = jobs.dir("zdim")
    for z in (2, 3):
        assert os.path.exists(os.path.join(out, f"slurm-zdim-{z}.out"))
        assert os.path.exists(os.path.join(out, f"z-{z}", "epochs-1.safetensors"))
    collect = subprocess.run([os.path.join(REPO, "scripts", "zdim-study"), "--collect", "--quick", "--zdims", "2 3",
                              "--epochs", "1", "--out", out] + zdim_data_args(),
                             env=jobs.env, capture_output=True, text=True)
    assert collect.returncode == 0, collect.stderr
    with open(os.path.join(out, "zdim-study.csv")) as f:
        rows = [line.split(",")[:2] for line in f.read().splitlines()[1:]]
    assert sorted(rows) == [["2", "1"], ["3", "1"]]


def test_bad_launcher_is_one_line_naming_the_variable(tmp_path):
    env = dict(os.environ, VAE_DIST_LAUNCHER="pbs", VAE_DIST_BIN=binary(), CONFIG=CONFIG)
    if env["VAE_DIST_BIN"] is None:
        pytest.skip("no vae-dist binary: set VAE_DIST_BIN or build (swift build -c release)")
    env.pop("SLURM_SUBMIT_DIR", None)
    r = subprocess.run(["bash", SBATCH], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "slurm.sbatch: error: VAE_DIST_LAUNCHER: expected auto, srun or mpirun, got 'pbs'"


def test_help_is_the_header_and_an_argument_is_refused(tmp_path):
    r = subprocess.run(["bash", SBATCH, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "VAE_DIST_LAUNCHER" in r.stdout and not any(line.startswith("#SBATCH") for line in r.stdout.splitlines())
    r = subprocess.run(["bash", SBATCH, "configs/mnist.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "slurm.sbatch: error: unknown argument 'configs/mnist.yaml': settings go in the environment (try --help)"
