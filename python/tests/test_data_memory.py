"""vae_dist.data_memory: smaps_rollup parsing, rank discovery, peaks, rows and the data file."""

import csv
import os
import subprocess
import sys

import pytest

from vae_dist import data_memory

ROLLUP = """55d1c0a3e000-7ffd6b5f2000 ---p 00000000 00:00 0                          [rollup]
Rss:             4200000 kB
Pss:             2150000 kB
Pss_Anon:          50000 kB
Shared_Clean:    4100000 kB
Shared_Dirty:          0 kB
Private_Clean:      2000 kB
Private_Dirty:     98000 kB
Anonymous:         98000 kB
"""


def test_parse_smaps_rollup_reads_the_kb_fields():
    f = data_memory.parse_smaps_rollup(ROLLUP)
    assert f["Rss"] == 4200000 and f["Pss"] == 2150000 and f["Shared_Clean"] == 4100000
    assert f["Private_Clean"] == 2000 and f["Private_Dirty"] == 98000 and f["Anonymous"] == 98000
    assert "rollup]" not in "".join(f)


def test_parse_this_processes_rollup():
    with open("/proc/self/smaps_rollup") as f:
        fields = data_memory.parse_smaps_rollup(f.read())
    assert fields["Rss"] > 0 and fields["Pss"] <= fields["Rss"]


def test_rank_of_reads_the_launchers_variables():
    assert data_memory.rank_of(b"A=1\0OMPI_COMM_WORLD_RANK=3\0B=x=y\0") == 3
    assert data_memory.rank_of(b"PMI_RANK=2\0") == 2
    assert data_memory.rank_of(b"SLURM_PROCID=5\0") == 5
    assert data_memory.rank_of(b"HOME=/root\0") is None


def test_merge_peak_keeps_each_fields_maximum():
    peaks = {}
    data_memory.merge_peak(peaks, 0, {"Rss": 10, "Pss": 7})
    data_memory.merge_peak(peaks, 0, {"Rss": 5, "Pss": 9})
    data_memory.merge_peak(peaks, 1, {"Rss": 3})
    assert peaks == {0: {"Rss": 10, "Pss": 9}, 1: {"Rss": 3}}


def test_rows_convert_to_mib_and_carry_the_startup_phases():
    peaks = {1: {"Rss": 2048, "Private_Dirty": 1536}, 0: {"Rss": 4096}}
    startup = {"step": 0, "event": "startup", "startup_s": 3.5, "data_load_s": 0.01, "data_check_s": 2.0,
               "data_checksum_s": 1.0, "handshake_s": 0.2}
    rows = data_memory.rows(2, "warm", peaks, startup, 3 * 2**20, 9.25)
    assert [r["rank"] for r in rows] == [0, 1]
    assert rows[0]["rss_mib"] == 4.0 and rows[0]["private_dirty_mib"] == 0.0
    assert rows[1]["rss_mib"] == 2.0 and rows[1]["private_dirty_mib"] == 1.5
    assert rows[1]["file_mib"] == 3.0 and rows[1]["startup_s"] == 3.5 and rows[1]["data_check_s"] == 2.0
    assert rows[1]["command_s"] == 9.25
    assert set(rows[0]) == set(data_memory.COLUMNS)
    text = data_memory.table(rows)
    assert len(text.splitlines()) == 3 and "Priv.dirty" in text.splitlines()[0]


def test_ranks_finds_the_binary_under_a_launcher(tmp_path):
    # A shell (the "launcher") running sleep (the "binary"): sleep is found as rank 0.
    sleep = os.path.realpath("/bin/sleep")
    p = subprocess.Popen(["/bin/sh", "-c", "/bin/sleep 5; true"])
    try:
        for _ in range(100):
            found = data_memory.ranks(p.pid, sleep)
            if found:
                break
            subprocess.run(["/bin/sleep", "0.02"])
        assert list(found) == [0] and found[0] != p.pid
    finally:
        p.kill()
        p.wait()


def test_write_npy_values_shape_and_kept_when_present(tmp_path):
    np = pytest.importorskip("numpy")
    path = str(tmp_path / "d.npy")
    assert data_memory.write_npy(path, 25, 6, chunk=10)
    a = np.load(path)
    assert a.shape == (25, 6) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() < 1 and len(np.unique(a)) > 100
    mtime = os.path.getmtime(path)
    assert not data_memory.write_npy(path, 25, 6)
    assert os.path.getmtime(path) == mtime
    assert data_memory.write_npy(path, 5, 6)  # another shape: rewritten
    assert np.load(path).shape == (5, 6)


def test_config_text_is_the_documented_run():
    text = data_memory.config_text("/d/x.npy", 300)
    for part in ("train: /d/x.npy", "test_fraction: 0.001", "hidden: [256]", "zdim: 16", "batch: 100", "steps: 300"):
        assert part in text


def test_measure_appends_rows_from_a_run(tmp_path):
    """measure runs a command (here a stand-in that sleeps and writes a metrics.jsonl), samples
    it as rank 0 and appends its row to the CSV."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"step": 0, "event": "startup", "startup_s": 1.5, "data_load_s": 0.1, "data_check_s": 1.0, '
        '"data_checksum_s": 0.3, "handshake_s": 0.0}\n')
    data = tmp_path / "d.npy"
    data.write_bytes(b"x" * 2**20)
    out = tmp_path / "m.csv"
    code = data_memory.main(["measure", "--np", "1", "--cache", "warm", "--run-dir", str(run), "--data", str(data),
                             "--csv", str(out), "--binary", sys.executable, "--",
                             sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert code == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 1 and rows[0]["rank"] == "0" and rows[0]["startup_s"] == "1.5"
    assert float(rows[0]["rss_mib"]) > 1 and rows[0]["file_mib"] == "1.0"
