"""vae_dist.launch.mpirun_args: its rules, and that scripts/lib/common.sh's mpirun_args builds
exactly the same list (bash is run from here)."""

import os
import subprocess

import pytest

from vae_dist.launch import cpu_cores, is_root, mpirun_args

COMMON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "scripts", "lib", "common.sh")
CLEAN = {k: v for k, v in os.environ.items()
         if k not in ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "VAE_DIST_DATA", "MPIRUN_EXTRA")}


def bash_args(args, env):
    script = 'set -euo pipefail; source "$1"; shift; mpirun_args "$@"; printf "%s\\0" "${MPIRUN_ARGS[@]}"'
    r = subprocess.run(["bash", "-c", script, "bash", COMMON] + args, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split("\0")[:-1]


def to_bash(np_, hostfile="", threads=None, shared=False):
    return ([str(np_)] + (["--hostfile", hostfile] if hostfile else []) + (["--threads", str(threads)] if threads else [])
            + (["--shared"] if shared else []))


C = cpu_cores()
CASES = [
    (dict(np_=1), {}),
    (dict(np_=C), {}),
    (dict(np_=C + 1), {}),
    (dict(np_=2, threads=1), {"OPENBLAS_CORETYPE": "Haswell"}),
    (dict(np_=1, shared=True), {"VAE_DIST_DATA": "/data", "OPENBLAS_NUM_THREADS": "3"}),
    (dict(np_=4, hostfile="hosts file"), {"MPIRUN_EXTRA": "--mca btl tcp,self  --report-bindings",
                                          "OPENBLAS_CORETYPE": ""}),
]


@pytest.mark.parametrize("kw,extra_env", CASES)
def test_bash_and_python_build_the_same_arguments(kw, extra_env):
    env = dict(CLEAN, **extra_env)
    kw = dict(kw)
    np_ = kw.pop("np_")
    expected = mpirun_args(np_, environ=env, **kw)
    assert bash_args(to_bash(np_, **kw), env) == expected


def test_rules():
    env = {}
    fits = mpirun_args(2, cores=4, root=False, environ=env)
    assert fits == ["-np", "2", "--mca", "btl_vader_single_copy_mechanism", "none", "--bind-to", "core",
                    "-x", "OPENBLAS_NUM_THREADS=2"]
    over = mpirun_args(8, cores=4, root=True, environ=env)
    assert "--allow-run-as-root" in over and over[over.index("--oversubscribe") + 1:][:2] == ["--bind-to", "none"]
    assert "-x" in over and over[over.index("-x") + 1] == "OPENBLAS_NUM_THREADS=1"  # 4 // 8 rounds up to 1
    shared = mpirun_args(2, cores=4, root=False, shared=True, environ=env)
    assert "--bind-to" in shared and shared[shared.index("--bind-to") + 1] == "none"
    assert "--oversubscribe" not in shared
    hosts = mpirun_args(16, hostfile="h", cores=2, root=False, environ=env)
    assert hosts[5:9] == ["--hostfile", "h", "--bind-to", "none"] and "--oversubscribe" not in hosts


def test_threads_and_environment():
    env = {"OPENBLAS_NUM_THREADS": "3", "VAE_DIST_DATA": "/d", "MPIRUN_EXTRA": " --mca a b "}
    args = mpirun_args(2, cores=8, root=False, environ=env)
    assert args[-7:] == ["-x", "OPENBLAS_NUM_THREADS=3", "-x", "VAE_DIST_DATA", "--mca", "a", "b"]
    assert "OPENBLAS_NUM_THREADS=1" in mpirun_args(2, threads=1, cores=8, root=False, environ=env)
    assert "OPENBLAS_CORETYPE" not in mpirun_args(2, cores=8, root=False, environ={})
    assert mpirun_args(1, cores=1, root=False, environ={"OPENBLAS_CORETYPE": ""})[-1] == "OPENBLAS_CORETYPE"


def test_bad_np_is_refused_in_both():
    with pytest.raises(ValueError, match="np must be a positive integer"):
        mpirun_args(0)
    r = subprocess.run(["bash", "-c", 'source "$1"; mpirun_args 0', "bash", COMMON], capture_output=True, text=True)
    assert r.returncode != 0 and "NP must be a positive integer" in r.stderr


def test_this_process():
    assert cpu_cores() >= 1
    assert ("--allow-run-as-root" in mpirun_args(1)) == is_root()
