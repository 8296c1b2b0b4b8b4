"""scripts/time-to-quality and vae_dist.time_to_quality: the table's medians, ratios and target
column, the CSV, argument errors, a short end-to-end run through scripts/train and torch_train,
and scripts/train's choice of processes (common.sh's train_np, run with stand-in mpirun and nproc)."""

import csv
import os
import subprocess
import sys

import pytest

from vae_dist import time_to_quality as ttq

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "time-to-quality")
COMMON = os.path.join(REPO, "scripts", "lib", "common.sh")


def result(wall, elbo, steps=6000):
    return {"wall_s": wall, "exit_s": wall + 1, "train_s": wall - 2, "steps": steps, "test_elbo": elbo, "launch": "x"}


RESULTS = {
    "vd-default": [result(40, -100.9), result(60, -100.9), result(50, -100.9)],
    "vd-1p": [result(50, -101.2), result(50, -100.8), result(50, -101.5)],
    "pytorch": [result(80, -101.5), result(90, -101.5), result(100, -101.5)],
}
LABELS = ttq.configurations(one_process=True)


def test_summary_takes_medians_and_per_round_ratios():
    s = ttq.summary(RESULTS)
    assert s["vd-default"]["wall_s"] == 50 and s["vd-default"]["ratio"] == 2.0  # rounds: 2.0, 1.5, 2.0
    assert s["vd-default"]["samples_per_sec"] == 600000 / 50
    assert [s[k]["reached"] for k in ("vd-default", "vd-1p", "pytorch")] == ["yes", "1/3", "no"]
    assert s["pytorch"]["ratio"] == 1.0 and s["vd-1p"]["test_elbo"] == -101.2


def test_table_and_csv(tmp_path):
    lines = ttq.table(RESULTS, LABELS)
    assert lines[0].split()[-5:] == ["ELBO", ">=", "-101", "vs", "PyTorch"]
    assert lines[1].startswith("vae-dist, scripts/train's default") and lines[1].split()[-5:] == \
        ["50.0", "12,000", "-100.90", "yes", "2.00x"]
    path = tmp_path / "out" / "t.csv"
    ttq.write_csv(str(path), ttq.csv_rows(RESULTS, LABELS))
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 3 * 4 and [r["round"] for r in rows[:4]] == ["1", "2", "3", "median"]
    assert rows[1]["speedup_vs_pytorch"] == "1.5000" and rows[4]["reached_target"] == "no"


def test_commands_run_scripts_train_and_torch_train(tmp_path):
    a = ttq.parse_args(["--bin", SCRIPT, "--train-script", SCRIPT, "--data", str(make_data(tmp_path)), "--steps", "7"])
    cmds = ttq.commands(a, lambda k: "/runs/" + k, python="py")
    argv, env = cmds["vd-default"]
    assert argv == [SCRIPT, "--steps", "7", "--out", "/runs/vd-default"] and env["VAE_DIST_BIN"] == SCRIPT
    assert "VAE_DIST_NP" not in env  # the default, whatever the caller's environment says
    assert cmds["vd-1p"][0][1:] == ["--steps", "7", "--np", "1", "--out", "/runs/vd-1p"]
    argv, env = cmds["pytorch"]
    assert argv[:3] == ["py", "-m", "vae_dist.torch_train"] and argv[-4:] == ["--threads", "2", "--steps", "7"]
    assert env["OMP_NUM_THREADS"] == "2"


def make_data(tmp_path):
    (tmp_path / "mnist").mkdir(exist_ok=True)
    return tmp_path


@pytest.mark.parametrize("args,message", [
    (["--bin", "/nonexistent"], "--bin: '/nonexistent' is not an executable file"),
    (["--data", "/nonexistent"], "--data: no mnist/ in '/nonexistent'"),
    (["--rounds", "0"], "--rounds: expected a positive integer"),
])
def test_bad_arguments(args, message, tmp_path, capsys):
    base = {"--bin": SCRIPT, "--train-script": SCRIPT, "--data": str(make_data(tmp_path))}
    base.update(dict(zip(args[::2], args[1::2])))
    with pytest.raises(SystemExit) as e:
        ttq.parse_args([x for kv in base.items() for x in kv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_script_help_and_argument_errors():
    r = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "scripts/train" in r.stdout and "-101" in r.stdout
    for args, message in ((["--rounds", "x"], "--rounds: expected a positive integer, got 'x'"),
                          (["--steps"], "--steps: expected a positive integer, got ''"),
                          (["--bogus"], "unknown argument '--bogus'")):
        r = subprocess.run([SCRIPT] + args, capture_output=True, text=True)
        assert r.returncode != 0 and message in r.stderr, r.stderr


def test_a_short_run_end_to_end(vae_dist_bin, mnist_dir, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("numpy")
    out_csv = tmp_path / "t.csv"
    env = dict(os.environ, VAE_DIST_BIN=vae_dist_bin, VAE_DIST_DATA=mnist_dir, VAE_DIST_NP="1",
               VAE_DIST_PYTHON=sys.executable, PYTHONPATH=os.path.join(REPO, "python"))
    r = subprocess.run([SCRIPT, "--steps", "20", "--csv", str(out_csv), "--work", str(tmp_path / "w")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    rows = {row["configuration"]: row for row in csv.DictReader(open(out_csv)) if row["round"] == "1"}
    vd, pt = rows["vae-dist, scripts/train's default"], rows["PyTorch best 2-core (2 threads, fused Adam + ftz)"]
    assert vd["steps"] == pt["steps"] == "20" and vd["reached_target"] == pt["reached_target"] == "no"
    assert -400 < float(vd["test_elbo"]) < -150 and -400 < float(pt["test_elbo"]) < -150
    assert 0 < float(vd["wall_s"]) <= float(vd["exit_s"])
    # The default ignores the caller's VAE_DIST_NP=1: it is what scripts/train chooses by itself.
    np_, why = bash_train_np(["auto", "VAE_DIST_NP"], dict(os.environ)).stdout.strip().split(" ", 1)
    assert vd["launch"].startswith("training ") and why in vd["launch"], r.stdout
    assert ("mpirun -np 2" in vd["launch"]) == (np_ == "2")


def bash_train_np(args, env):
    script = 'set -euo pipefail; source "$1"; shift; train_np "$@"; echo "$TRAIN_NP $TRAIN_NP_WHY"'
    return subprocess.run(["/bin/bash", "-c", script, "bash", COMMON] + args, env=env, capture_output=True, text=True)


def fake_tools(tmp_path, cores, mpirun=True):
    """A PATH holding only a stand-in nproc printing ``cores`` and, with ``mpirun``, a stand-in mpirun."""
    d = tmp_path / f"bin-{cores}-{mpirun}"
    d.mkdir()
    tools = {"nproc": f"#!/bin/sh\necho {cores}\n"} | ({"mpirun": "#!/bin/sh\nexit 0\n"} if mpirun else {})
    for name, text in tools.items():
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMIX_RANK")}
    return dict(env, PATH=str(d))


@pytest.mark.parametrize("cores,mpirun,extra,expected", [
    (2, True, {}, "2 mpirun installed, 2 cores"),
    (8, True, {}, "2 mpirun installed, 8 cores"),
    (1, True, {}, "1 1 core"),
    (2, False, {}, "1 mpirun is not installed"),
    (2, True, {"OMPI_COMM_WORLD_SIZE": "2"}, "1 already an MPI rank"),
])
def test_scripts_train_chooses_np_2_when_mpirun_and_two_cores(cores, mpirun, extra, expected, tmp_path):
    r = bash_train_np(["auto", "VAE_DIST_NP"], dict(fake_tools(tmp_path, cores, mpirun), **extra))
    assert r.returncode == 0 and r.stdout.strip() == expected, r.stderr


def test_scripts_train_np_requests(tmp_path):
    assert bash_train_np(["1", "--np"], fake_tools(tmp_path, 2, mpirun=False)).stdout.strip() == "1 --np 1"
    assert bash_train_np(["4", "--np"], fake_tools(tmp_path, 2)).stdout.strip() == "4 --np 4"
    r = bash_train_np(["3", "VAE_DIST_NP"], fake_tools(tmp_path, 4, mpirun=False))
    assert r.returncode != 0 and "VAE_DIST_NP 3 needs mpirun" in r.stderr
    r = bash_train_np(["two", "--np"], fake_tools(tmp_path, 3))
    assert r.returncode != 0 and "--np: expected auto or a number of processes 1…9999, got 'two'" in r.stderr
    r = subprocess.run([os.path.join(REPO, "scripts", "train"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--np N" in r.stdout and "VAE_DIST_NP" in r.stdout
