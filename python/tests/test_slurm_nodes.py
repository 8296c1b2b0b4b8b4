"""scripts/slurm.sbatch on a two-node Slurm: jobs across nodes, a node that dies, a restart on
fewer nodes, preemption by a higher-priority job, each ending on the tensors of the uninterrupted
run (`mpirun -np 2` on one host), compared tensor by tensor; and a cluster that leaves nothing
behind when stopped.

The cluster is scripts/slurm-local's with --nodes 2 (scripts/test starts it as root and names it
in SLURM_CONF): nodes vd-node1 and vd-node2, each in network, UTS and mount namespaces of its
own, talking over TCP on a private bridge; SlurmdTimeout 10 s, KillWait 5 s, a requeued job
eligible again after 10 s, and a partition `high` whose jobs preempt (requeue) those of the
default partition `local`. The phases run one after another, because a dead node or a
preempting job would hit every job on it: across nodes (with the reference run beside it),
then the node death and the restart on one node (with the preemption, on the other node once it
is back), each test waiting for its own job. The times measured are printed, and written as
JSON to $VAE_DIST_SLURM_TIMES when set (scripts/slurm-fault-times).
"""

import json
import os
import re
import subprocess
import tempfile
import time
from datetime import datetime, timezone

import pytest

from test_slurm import (CONFIG, JOB_TIMEOUT, LOCAL_CLUSTER, REPO, SBATCH, STEPS, TERMINAL, assert_same_tensors,
                        binary, continue_ranks, events, job_info, newest_step, require_slurm,
                        stop_ranks_at_step)

SLURM_LOCAL = os.path.join(REPO, "scripts", "slurm-local")
CHECKPOINT_EVERY = int(re.search(r"^  checkpoint_every: (\d+)$", open(CONFIG).read(), re.M).group(1))
KILL_AT = 2000  # the step after which node 2 dies / the high-priority job comes


def cluster_dir():
    """The directory of scripts/slurm-local's cluster named by SLURM_CONF, when it has namespace nodes."""
    conf = os.environ.get("SLURM_CONF", "")
    d = os.path.dirname(conf)
    return d if conf and os.path.exists(os.path.join(d, "net")) else None


def skip_reason():
    if os.environ.get("VAE_DIST_SLURM_SKIP"):
        return f"scripts/test could not start a local Slurm: {os.environ['VAE_DIST_SLURM_SKIP']}"
    if cluster_dir() is None:
        return ("SLURM_CONF names no two-node cluster of scripts/slurm-local "
                "(scripts/test starts one as root; or: scripts/slurm-local start DIR --nodes 2)")
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    if not re.search(rf"^ClusterName\s*=\s*{LOCAL_CLUSTER}$", config, re.M):
        return f"SLURM_CONF's cluster is not {LOCAL_CLUSTER}"
    if binary() is None:
        return "no vae-dist binary: set VAE_DIST_BIN or build (swift build -c release)"
    return None


def node_states():
    out = subprocess.run(["sinfo", "-h", "-N", "-p", "local", "-o", "%N %t"], capture_output=True, text=True).stdout
    return dict(line.split() for line in out.splitlines())


def wait_until(what, predicate, timeout, poll=0.5):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(poll)


class Phases:
    """The module's jobs, run phase by phase, with what each test checks afterwards."""

    def __init__(self, work):
        self.work = work
        self.env = dict(os.environ, VAE_DIST_BIN=binary(), CONFIG=CONFIG, OPENBLAS_NUM_THREADS="1",
                        OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        self.env.pop("VAE_DIST_LAUNCHER", None)
        self.env.pop("VAE_DIST_RANKS_PER_NODE", None)
        self.ids, self.seen, self.times = [], {}, {}

    def dir(self, name):
        return os.path.join(self.work, name)

    def run_dir(self, name):
        return os.path.join(self.dir(name), "runs", name)

    def submit(self, name, *options, **env):
        os.makedirs(self.dir(name), exist_ok=True)
        out = subprocess.run(["sbatch", "--parsable", f"--job-name={name}", *options, SBATCH], cwd=self.dir(name),
                             env=dict(self.env, **env), capture_output=True, text=True, check=True).stdout
        job = out.strip().split(";")[0]
        self.ids.append(job)
        self.seen[job] = []
        return job

    def poll(self, job):
        info = job_info(job)
        state = (info["JobState"], info.get("Reason"), int(info["Restarts"]))
        if not self.seen[job] or self.seen[job][-1] != state:
            self.seen[job].append(state)
        return info

    def wait(self, job, until=lambda info: info["JobState"] in TERMINAL, timeout=JOB_TIMEOUT):
        """Polls the job once a second until `until(info)`; returns that info."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = self.poll(job)
                if until(info):
                    return info
            except subprocess.CalledProcessError:
                pass  # a busy slurmctld: ask again
            if time.monotonic() > deadline:
                pytest.fail(f"job {job}: not done within {timeout} s; states {self.seen[job]}")
            time.sleep(1)

    def output(self, name):
        with open(os.path.join(self.dir(name), f"vae-dist-{name}.out")) as f:
            return f.read()

    def node(self, action, n):
        r = subprocess.run([SLURM_LOCAL, action, cluster_dir(), str(n)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def segments(run_dir):
    with open(os.path.join(run_dir, "segments.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def wall(iso):
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def across_nodes(p):
    p.across = p.submit("across", "--nodes=2", "--ntasks-per-node=1")
    p.across_info = p.wait(p.across)


def node_death(p):
    """Both nodes run job `death`; node 2 loses power after step KILL_AT; the job ends, is requeued
    and restarts on node 1 alone. Once it runs there, node 2 comes back and job `preempted` runs
    on it until a job of partition `high` takes node 2."""
    p.death = p.submit("death", "--nodes=1-2", "--ntasks=2", VAE_DIST_RANKS_PER_NODE="1")
    info = p.wait(p.death, lambda i: i["JobState"] == "RUNNING" or i["JobState"] in TERMINAL)
    p.death_nodes = info["NodeList"]
    # Held at KILL_AT (its ranks stopped) while node 2 dies, so that the death comes mid-run
    # however fast the machine trains; the rank on node 1 then goes on into the dead exchange.
    _, pids = stop_ranks_at_step(p.dir("death"), p.run_dir("death"), KILL_AT, 2)
    p.killed_at = time.time()
    p.node("node-down", 2)
    continue_ranks(pids)
    # The newest step logged once the rank left on node 1 is stuck in the exchange: the work
    # done before the death, as far as the run directory shows.
    time.sleep(2)
    p.death_kill_step = newest_step(p.run_dir("death"))
    p.wait(p.death, lambda i: i["JobState"] != "RUNNING")
    p.times["node_death_to_job_end_s"] = round(time.time() - p.killed_at, 1)
    p.wait(p.death, lambda i: i["JobState"] == "RUNNING" and int(i["Restarts"]) >= 1 or i["JobState"] in TERMINAL)
    p.death_restart_nodes = node_states()
    p.node("node-up", 2)
    wait_until("node 2's return to service", lambda: node_states().get("vd-node2") in ("idle", "mix", "alloc"), 60)
    preemption(p)
    p.death_info = p.wait(p.death)
    seg = segments(p.run_dir("death"))
    if len(seg) >= 2:
        p.times["node_death_to_resumed_start_s"] = round(wall(seg[1]["started"]) - p.killed_at, 1)
        p.times["steps_redone"] = p.death_kill_step - seg[1]["step"]


def preemption(p):
    p.preempted = p.submit("preempted", "--nodes=1", "--ntasks-per-node=2", "--nodelist=vd-node2")
    p.preempt_step, pids = stop_ranks_at_step(p.dir("preempted"), p.run_dir("preempted"), KILL_AT, 2)
    p.high_submitted = time.time()
    high = subprocess.run(["sbatch", "--parsable", "--partition=high", "--nodelist=vd-node2", "--exclusive",
                           "--job-name=high", "-o", os.path.join(p.work, "high.out"), "--wrap", "sleep 8"],
                          capture_output=True, text=True, check=True, env=p.env).stdout.strip()
    p.ids.append(high)
    p.seen[high] = []
    p.high = high
    # The ranks, held at KILL_AT, go on when Slurm preempts the job (its SIGTERM to the ranks comes
    # with a SIGCONT; the script itself is not signalled), or when the job leaves RUNNING.
    continue_ranks(pids, until=lambda: "SIGTERM at" in p.output("preempted") or p.poll(p.preempted)["JobState"] != "RUNNING")
    p.preempted_requeued = p.wait(p.preempted, lambda i: int(i["Restarts"]) >= 1 or i["JobState"] in TERMINAL)
    p.times["preemption_to_requeue_s"] = round(time.time() - p.high_submitted, 1)
    p.high_info = p.wait(high)
    p.preempted_info = p.wait(p.preempted)


@pytest.fixture(scope="module")
def phases(tmp_path_factory):
    require_slurm(skip_reason())
    p = Phases(str(tmp_path_factory.mktemp("slurm-nodes")))
    started = time.monotonic()
    log = open(os.path.join(p.work, "reference.log"), "w")
    reference = subprocess.Popen(
        ["mpirun", "-np", "2", "--oversubscribe", binary(), "train", "--config", CONFIG, "--out", p.dir("reference")],
        env=p.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        across_nodes(p)
        assert reference.wait(timeout=JOB_TIMEOUT) == 0, open(os.path.join(p.work, "reference.log")).read()[-2000:]
        p.reference = os.path.join(p.dir("reference"), "final.safetensors")
        node_death(p)
        yield p
    finally:
        if reference.poll() is None:
            reference.kill()
        log.close()
        subprocess.run(["scancel", *p.ids], capture_output=True)
        if node_states().get("vd-node2", "").startswith("down"):
            p.node("node-up", 2)
        p.times["phases_s"] = round(time.monotonic() - started)
        print(f"\nSlurm two-node tests: {json.dumps(p.times)}")
        if os.environ.get("VAE_DIST_SLURM_TIMES"):
            with open(os.environ["VAE_DIST_SLURM_TIMES"], "w") as f:
                json.dump(p.times, f)


def test_a_job_across_two_nodes_ends_on_the_tensors_of_mpirun_np_2_on_one_host(phases):
    info = phases.across_info
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), phases.seen[phases.across]
    assert info["NodeList"] == "vd-node[1-2]", info["NodeList"]
    out = phases.output("across")
    assert "srun --mpi=pmix" in out.splitlines()[1] and "(2 ranks," in out.splitlines()[1], out.splitlines()[1]
    seg = segments(phases.run_dir("across"))
    # Two hosts: no shared-memory window, the collectives over TCP.
    assert len(seg) == 1 and seg[0]["world_size"] == 2 and "MPI" in seg[0]["transport"], seg
    assert seg[0]["slurm_nodes"] == "vd-node[1-2]"
    assert_same_tensors(os.path.join(phases.run_dir("across"), "final.safetensors"), phases.reference)


def test_a_node_that_dies_ends_the_job_which_is_requeued_and_resumes_from_the_last_checkpoint(phases):
    p = phases
    assert p.death_nodes == "vd-node[1-2]", f"the job did not start across both nodes: {p.death_nodes}"
    assert KILL_AT <= p.death_kill_step < STEPS
    # Slurm's own detection: SlurmdTimeout 10 s, its ping every few seconds, then KillWait 5 s.
    assert p.times["node_death_to_job_end_s"] < 60, p.times
    seen = p.seen[p.death]
    assert any(s[0] in ("PENDING", "REQUEUED") and s[2] == 1 for s in seen), f"never requeued: {seen}"
    seg = segments(p.run_dir("death"))
    assert len(seg) == 2, seg
    resumed = seg[1]["step"]
    # The newest checkpoint: at most the checkpoint interval (+ one metrics interval, as the
    # metrics show the work done) behind the death.
    assert resumed % CHECKPOINT_EVERY == 0 and 0 < resumed, seg
    assert -50 <= p.death_kill_step - resumed < CHECKPOINT_EVERY + 50, (p.death_kill_step, resumed)
    assert f"resuming from runs/death/checkpoints/step-{resumed:08d}.safetensors at step {resumed}" in p.output("death")
    assert seg[1]["slurm_restart_count"] == 1


def test_the_restart_on_fewer_nodes_keeps_the_global_batch_and_ends_on_the_uninterrupted_tensors(phases):
    p = phases
    assert p.death_restart_nodes.get("vd-node2", "").startswith("down"), p.death_restart_nodes
    info = p.death_info
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), p.seen[p.death]
    seg = segments(p.run_dir("death"))
    assert [(s["world_size"], s["micro_batches"], s["slurm_nodes"]) for s in seg] == [
        (2, 1, "vd-node[1-2]"), (1, 2, "vd-node1")], seg
    assert seg[1]["same_bits"] is True and seg[1]["from_world_size"] == 2
    resume = [e for e in events(p.run_dir("death")) if e.get("event") == "resume"]
    assert [(e["world_size"], e["micro_batches"], e["from_world_size"]) for e in resume] == [(1, 2, 2)], resume
    out = p.output("death")
    assert "resuming a run of 2 ranks × 1 micro-batch on 1 rank × 2 micro-batches" in out
    assert "--ntasks=1 --ntasks-per-node=1" in out, "the restart did not run one rank on the one node"
    assert_same_tensors(os.path.join(p.run_dir("death"), "final.safetensors"), p.reference)


def test_a_higher_priority_job_preempts_ours_which_checkpoints_is_requeued_and_finishes_identically(phases):
    p = phases
    out = p.output("preempted")
    step = [e for e in events(p.run_dir("preempted")) if e.get("event") == "stopped"]
    assert step and step[0]["signal"] == "SIGTERM", f"no stop with a checkpoint: {out[-1500:]}"
    stopped = step[0]["step"]
    assert p.preempt_step <= stopped < STEPS
    assert "preempted by a higher-priority job" in out and f"requeued job {p.preempted} after preemption" in out, out[-1500:]
    assert (p.high_info["JobState"], p.high_info["ExitCode"]) == ("COMPLETED", "0:0")
    info = p.preempted_info
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), p.seen[p.preempted]
    # It resumed after the high-priority job: from the checkpoint of the stop, no step redone.
    assert f"resuming from runs/preempted/checkpoints/step-{stopped:08d}.safetensors at step {stopped}" in out
    seg = segments(p.run_dir("preempted"))
    assert wall(seg[1]["started"]) > p.high_submitted + 8, "resumed before the high-priority job could have ended"
    assert_same_tensors(os.path.join(p.run_dir("preempted"), "final.safetensors"), p.reference)


def test_stopping_a_two_node_cluster_leaves_no_daemon_namespace_link_or_process(tmp_path):
    """Its own cluster (another port and subnet), with a job running on both nodes when stopped."""
    if skip_reason() and cluster_dir() is None and os.environ.get("VAE_DIST_REQUIRE_SLURM") != "1":
        pytest.skip(skip_reason())
    d = tempfile.mkdtemp(prefix="vae-dist-slurm-stop.")
    env = dict(os.environ, SLURM_LOCAL_PORT="17917")
    env.pop("SLURM_CONF", None)

    def sleepers():  # the job's tasks, `srun sleep 300` run as /usr/bin/sleep 300 on each node
        out = subprocess.run(["pgrep", "-f", "bin/sleep 300$"], capture_output=True, text=True).stdout
        return out.split()

    try:
        r = subprocess.run([SLURM_LOCAL, "start", d, "--nodes", "2"], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        env["SLURM_CONF"] = os.path.join(d, "slurm.conf")
        pids = [int(open(os.path.join(d, f)).read()) for f in os.listdir(d) if f.endswith(".pid")]
        with open(os.path.join(d, "net")) as f:
            made = [line.split() for line in f]
        before = set(sleepers())
        subprocess.run(["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "-o", str(tmp_path / "j.out"),
                        "--wrap", "srun sleep 300"], capture_output=True, text=True, env=env, check=True)
        wait_until("the job's tasks on both nodes", lambda: len(set(sleepers()) - before) >= 2, 60)
        tasks = set(sleepers()) - before
    finally:
        r = subprocess.run([SLURM_LOCAL, "stop", d], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert len(pids) == 4, f"expected munged, slurmctld and two slurmd: {pids}"
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    assert not alive, f"daemons left: {alive}"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for kind, name in made:
        if kind == "netns":
            assert name not in netns, f"namespace {name} left"
        if kind == "link":
            assert f" {name}:" not in links and f" {name}@" not in links, f"link {name} left"
    assert not tasks & set(sleepers()), "the job's tasks were left running"
    assert not subprocess.run(["pgrep", "-f", d], capture_output=True).stdout, f"a process still names {d}"
    assert not os.path.exists(d)


def test_bad_ranks_per_node_is_one_line_naming_the_variable(tmp_path):
    if binary() is None:
        pytest.skip("no vae-dist binary: set VAE_DIST_BIN or build (swift build -c release)")
    env = dict(os.environ, VAE_DIST_RANKS_PER_NODE="two", VAE_DIST_BIN=binary(), CONFIG=CONFIG, VAE_DIST_LAUNCHER="srun")
    env.pop("SLURM_SUBMIT_DIR", None)
    r = subprocess.run(["bash", SBATCH], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "slurm.sbatch: error: VAE_DIST_RANKS_PER_NODE: expected a positive integer, got 'two'"


@pytest.mark.parametrize("args, message", [
    (["start", "/tmp/x", "--nodes", "9"], "slurm-local: start: expected --nodes N with N from 1 to 4, got '--nodes 9'"),
    (["node-down"], "slurm-local: node-down needs a directory (try --help)"),
    (["reboot", "/tmp/x"], "slurm-local: expected start, stop, node-down or node-up (try --help)"),
])
def test_slurm_local_usage_errors_are_one_line(args, message, tmp_path):
    if args[0] == "start":
        args = ["start", str(tmp_path / "c"), *args[2:]]
    r = subprocess.run([SLURM_LOCAL, *args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == message, r.stderr


def test_node_down_on_a_directory_without_a_cluster_says_so(tmp_path):
    r = subprocess.run([SLURM_LOCAL, "node-down", str(tmp_path), "2"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"slurm-local: no cluster of slurm-local in {tmp_path} (no slurm.conf written by it)"
