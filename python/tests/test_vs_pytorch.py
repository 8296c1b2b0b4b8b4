"""scripts/bench --vs-pytorch's maths and commands (vae_dist.vs_pytorch), and the GEMM-only
ceiling's list of GEMMs and calls (vae_dist.gemm_ceiling). No timing is asserted."""

import csv
import json
import os
import subprocess
import sys
import types

import pytest

from vae_dist import gemm_ceiling as gc
from vae_dist import vs_pytorch as vs

KEYS = [k for k, _ in vs.CONFIGURATIONS]
PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(gc.__file__)))


def ceiling(*args):
    """``python -m vae_dist.gemm_ceiling ARGS`` with this checkout's package, wherever pytest runs."""
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "vae_dist.gemm_ceiling", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env)


def samples(**over):
    """Two rounds, every configuration at 100 and 200 samples/s unless given."""
    s = {k: [100.0, 200.0] for k in KEYS}
    s.update(over)
    return s


def test_every_configuration_has_a_command_and_the_issue_s_eight_are_there():
    a = types.SimpleNamespace(steps=50, repeats=5, bin="/x/vae-dist")
    cmds = vs.commands(a, ["/x/vae-dist", "bench", "--json"], python="py")
    assert set(cmds) == set(KEYS) and len(KEYS) == 8
    np2, _ = cmds["vd-np2"]
    assert np2[0] == "mpirun" and np2[np2.index("-np") + 1] == "2" and "OPENBLAS_NUM_THREADS=1" in np2
    assert cmds["vd-1t"][0][-2:] == ["--threads", "1"] and cmds["vd-2t"][0][-2:] == ["--threads", "2"]
    ddp, env = cmds["pt-ddp"]
    assert ddp[:3] == ["py", "-m", "vae_dist.torch_bench"] and "--ddp" in ddp and env["OMP_NUM_THREADS"] == "1"
    assert {"--flush-denormal", "fused"} <= set(cmds["pt-fused-1t"][0]) and "fused" not in cmds["pt-default-1t"][0]
    assert cmds["pt-fused-2t"][0][-2:] == ["--threads", "2"]
    ceiling, env = cmds["ceiling"]
    assert ceiling[2] == "vae_dist.gemm_ceiling" and env == {"OPENBLAS_NUM_THREADS": "1"}


def test_ratios_are_medians_of_per_round_ratios():
    # np 2 over np 1 by round: 2.0, 1.0, 1.5 -> 1.5; the ratio of the medians would be 300/200.
    s = {k: [100.0, 100.0, 100.0] for k in KEYS}
    s["vd-1t"], s["vd-np2"] = [100.0, 400.0, 200.0], [200.0, 400.0, 300.0]
    rows = {name: (med, lo, hi) for name, med, lo, hi in vs.ratio_rows(s)}
    assert rows["vae-dist np 2 / vae-dist 1 thread"] == (1.5, 1.0, 2.0)
    assert rows["vae-dist np 2 / PyTorch DDP 2x1"] == (3.0, 2.0, 4.0)
    assert rows["vae-dist 1 thread / GEMM-only ceiling"] == (2.0, 1.0, 4.0)


def test_pytorch_best_one_thread_is_the_faster_median():
    fast_default = samples(**{"pt-default-1t": [400.0, 400.0], "pt-fused-1t": [300.0, 300.0]})
    assert vs.best_one_thread(fast_default) == "pt-default-1t"
    rows = dict((n, m) for n, m, _, _ in vs.ratio_rows(fast_default))
    assert rows["vae-dist 1 thread / PyTorch best 1 thread"] == pytest.approx((100 / 400 + 200 / 400) / 2)
    fast_fused = samples(**{"pt-fused-1t": [50.0, 100.0], "pt-default-1t": [10.0, 10.0]})
    assert vs.best_one_thread(fast_fused) == "pt-fused-1t"
    assert dict((n, m) for n, m, _, _ in vs.ratio_rows(fast_fused))["vae-dist 1 thread / PyTorch best 1 thread"] == 2.0


def test_table_lists_medians_ranges_and_ratios():
    s = samples(**{"vd-1t": [9000.0, 11000.0, 10000.0]})
    s = {k: (v if k == "vd-1t" else [100.0, 200.0, 300.0]) for k, v in s.items()}
    lines = vs.table(s, dict(vs.CONFIGURATIONS))
    row = next(line for line in lines if line.startswith("vae-dist, 1 thread "))
    assert row.split()[-2:] == ["10000", "9000-11000"]
    ratio = next(line for line in lines if line.startswith("vae-dist 1 thread / GEMM-only ceiling"))
    assert ratio.split()[-2:] == ["55.00x", "33.33-90.00x"]  # 9000/100, 11000/200, 10000/300


def test_csv_has_every_run_the_medians_and_the_ratios(tmp_path):
    path = tmp_path / "out" / "vs.csv"
    vs.write_csv(str(path), vs.csv_rows(samples(), dict(vs.CONFIGURATIONS)))
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["what", "name", "round", "value"]
    runs = [r for r in rows if r[0] == "samples_per_sec"]
    assert len(runs) == 8 * 3 and ["samples_per_sec", "vae-dist, 1 thread", "median", "150.0"] in runs
    assert [r[1] for r in rows if r[0] == "ratio"] == [name for name, _, _ in vs.RATIOS]


def test_step_gemms_are_the_engine_s_calls():
    calls = gc.step_gemms(784, [500, 500], [500, 500], 20, 100)
    # 7 layers: forward and weight gradient each, input gradient for all but encoder.0.
    assert len(calls) == 20 and ("encoder.0", "input_grad") not in {(c[0], c[1]) for c in calls}
    assert ("encoder.0", "forward", gc.NO_TRANS, gc.TRANS, 100, 500, 784) in calls
    assert ("decoder.out", "weight_grad", gc.TRANS, gc.NO_TRANS, 784, 500, 100) in calls
    assert ("encoder.logvar", "input_grad", gc.NO_TRANS, gc.NO_TRANS, 100, 500, 20) in calls
    macs = 784 * 500 + 500 * 500 + 2 * 500 * 20 + 20 * 500 + 500 * 500 + 500 * 784
    assert gc.flops(calls) == 6 * 100 * macs - 2 * 100 * 784 * 500  # ~0.71 GFLOP


def openblas_or_skip():
    try:
        return gc.load_openblas(gc.openblas_path(), 1)
    except (gc.CeilingError, OSError) as e:
        pytest.skip(f"no OpenBLAS to call: {e}")


def test_prepared_calls_compute_the_products():
    lib = openblas_or_skip()
    calls = gc.step_gemms(12, [6], [5], 3, 4)
    for (args, (_, _, c)), call in zip(gc.prepared_calls(calls), calls):
        lib.cblas_sgemm(*args)
        k = call[-1]
        assert list(c) == [0.25 * 0.25 * k] * len(c), call  # every entry: K products of 0.25 · 0.25


def test_ceiling_prints_one_json_line():
    openblas_or_skip()
    r = ceiling("--hidden", "8", "--zdim", "2", "--input-size", "16", "--batch", "4", "--warmup", "0", "--steps", "1",
                "--repeats", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["gemms_per_step"] == 14 and out["samples_per_sec"] == pytest.approx(4 * out["steps_per_sec"])


def test_ceiling_bad_flag_is_one_line():
    r = ceiling("--threads", "0")
    assert r.returncode == 2 and "--threads: expected a positive integer, got '0'" in r.stderr
