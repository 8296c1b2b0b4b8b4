"""mpirun's arguments for vae-dist jobs: the same list as ``mpirun_args`` in
scripts/lib/common.sh, so every script and tool launches ranks alike (tests/test_launch.py runs
both and compares them).

The rules, for NP ranks on this machine's C cores (or a hostfile's machines):
  -np NP --mca btl_vader_single_copy_mechanism none   (shared memory without single-copy: the
                                                       setting measured fastest here, and one
                                                       that works in containers without ptrace)
  --allow-run-as-root                                  when running as root
  --hostfile FILE --bind-to none                       with a hostfile
  --oversubscribe --bind-to none                       else when NP > C
  --bind-to none                                       else when other jobs share the cores
  --bind-to core                                       otherwise
  -x OPENBLAS_NUM_THREADS=T                            T: given, else $OPENBLAS_NUM_THREADS,
                                                       else C // NP, at least 1
  -x OPENBLAS_CORETYPE, -x VAE_DIST_DATA               each when set
  $MPIRUN_EXTRA                                        split at white space
"""

import os

#: Environment variables passed on to the ranks when they are set.
FORWARDED = ("OPENBLAS_CORETYPE", "VAE_DIST_DATA")


def cpu_cores():
    """The cores this process may run on (what coreutils' ``nproc`` counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


def mpirun_args(np, hostfile="", threads=None, shared=False, *, cores=None, root=None, environ=None):
    """The arguments after ``mpirun`` for ``np`` ranks (see the module's rules). ``cores``,
    ``root`` and ``environ`` default to this process's."""
    if not isinstance(np, int) or np < 1:
        raise ValueError(f"mpirun_args: np must be a positive integer, got {np!r}")
    env = os.environ if environ is None else environ
    cores = cpu_cores() if cores is None else cores
    root = is_root() if root is None else root
    if threads is None:
        threads = env.get("OPENBLAS_NUM_THREADS") or max(1, cores // np)
    args = ["-np", str(np), "--mca", "btl_vader_single_copy_mechanism", "none"]
    if root:
        args.append("--allow-run-as-root")
    if hostfile:
        args += ["--hostfile", hostfile, "--bind-to", "none"]
    elif np > cores:
        args += ["--oversubscribe", "--bind-to", "none"]
    elif shared:
        args += ["--bind-to", "none"]
    else:
        args += ["--bind-to", "core"]
    args += ["-x", f"OPENBLAS_NUM_THREADS={threads}"]
    for name in FORWARDED:
        if name in env:
            args += ["-x", name]
    return args + env.get("MPIRUN_EXTRA", "").split()
