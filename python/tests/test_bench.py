"""vae_dist.bench: the maths and tables of scripts/bench, and reading `vae-dist bench --json`."""

import statistics
import sys

import pytest

from vae_dist import bench


def test_ratios_pair_each_round_with_its_own_baseline():
    assert bench.ratios([200.0, 150.0, 300.0], [100.0, 100.0, 150.0]) == [2.0, 1.5, 2.0]


def test_scaling_row():
    # np 2: rounds at 1.8x, 2.0x and 1.5x of that round's np 1; median 1.8x, efficiency 90%.
    line = bench.scaling_row(2, "sharded", [180.0, 300.0, 120.0], [100.0, 150.0, 80.0], [0.1, 0.2, 0.3],
                             [0.05, 0.01, 0.02])
    assert line.split() == ["2", "sharded", "180", "1.80x", "1.50-2.00x", "90%", "20.0%", "2.0%"]


def test_scaling_row_speed_up_is_median_of_ratios_not_ratio_of_medians():
    xs, bs = [100.0, 400.0, 90.0], [100.0, 100.0, 30.0]
    assert statistics.median(xs) / statistics.median(bs) == 1.0
    assert bench.scaling_row(4, "plain", xs, bs, [0, 0, 0], [0, 0, 0]).split()[3] == "3.00x"


def test_kernel_table_ratios_to_the_first_kernel():
    lines = bench.kernel_table({"Prescott": 1000.0, "Haswell": 2500.0}, {"Prescott": "Prescott", "Haswell": "Zen"})
    assert lines[0].split() == ["kernel", "used", "samples/s", "ratio"]
    assert lines[1].split() == ["Prescott", "Prescott", "1000", "1.00x"]
    assert lines[2].split() == ["Haswell", "Zen", "2500", "2.50x"]


def test_run_json_reads_the_last_line():
    out = bench.run_json([sys.executable, "-c", "print('warming up'); print('{\"samples_per_sec\": 12.5}')"])
    assert out == {"samples_per_sec": 12.5}


def test_run_json_failures_are_one_line():
    with pytest.raises(bench.BenchError) as e:
        bench.run_json([sys.executable, "-c", "import sys; sys.exit('config: bad field')"])
    assert "exited 1" in str(e.value) and "config: bad field" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(bench.BenchError, match="not JSON"):
        bench.run_json([sys.executable, "-c", "print('nope')"])


def test_single_against_the_binary(vae_dist_bin, mnist_dir, repo, capsys, monkeypatch):
    monkeypatch.setenv("VAE_DIST_DATA", mnist_dir)
    rc = bench.main(["--bin", vae_dist_bin, "--config", f"{repo}/configs/smoke.yaml", "--steps", "3", "--repeats", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "smoke.yaml: kernel " in out and "steps/s" in out and "median of 1 blocks of 3 steps" in out
