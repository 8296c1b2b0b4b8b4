"""vae_dist.stop_latency: what a stop cost, from a run's metrics and checkpoints."""

import pytest

from vae_dist import stop_latency


def train(step, wall):
    return {"step": step, "loss": 1.0, "time_s": wall - 1000, "wall_time": wall}


def test_checkpoint_step_is_the_newest():
    assert stop_latency.checkpoint_step(["step-00000100.safetensors", "step-00000250.safetensors", "x.tmp"]) == 250
    assert stop_latency.checkpoint_step([]) == 0


def test_outcome_counts_steps_after_the_signal_and_lost_steps():
    lines = [train(s, 1000 + s / 10) for s in range(1, 101)]  # step s logged at 1000 + s/10
    lines.append({"step": 102, "event": "stopped", "signal": "SIGTERM", "time_s": 10.3})
    # The signal came at 1010.05: step 100 (at 1010.0) was the last one before it.
    assert stop_latency.outcome(lines, 1010.05, 102) == (2, 0)
    assert stop_latency.outcome(lines, 1010.05, 100) == (2, 2)


def test_outcome_without_a_stopped_event():
    with pytest.raises(stop_latency.StopError, match="no 'stopped' event"):
        stop_latency.outcome([train(1, 1000.0)], 1000.5, 1)


def test_row_takes_medians_codes_and_the_worst_loss():
    rounds = [(0.3, 143, 1, 120, 0), (0.5, 143, 1, 118, 0), (0.2, 143, 3, 119, 2)]
    assert stop_latency.row(1, "process", rounds).split() == ["1", "process", "0.30", "143", "1", "at", "stop", "2"]
    assert "MISSING" in stop_latency.row(2, "mpirun", [(2.0, 1, 14, 0, 14)])


def test_train_command_uses_the_common_mpirun_arguments():
    one = stop_latency.train_command("vae-dist", "c.yaml", "out", 1)
    assert one[:2] == ["vae-dist", "train"] and "--threads" in one
    two = stop_latency.train_command("vae-dist", "c.yaml", "out", 2)
    assert two[0] == "mpirun" and two[1:3] == ["-np", "2"] and "OPENBLAS_NUM_THREADS=1" in two
    assert two[two.index("vae-dist"):] == one


def test_a_real_stop(vae_dist_bin, mnist_dir, repo, capsys, monkeypatch):
    monkeypatch.setenv("VAE_DIST_DATA", mnist_dir)
    rc = stop_latency.main(["--bin", vae_dist_bin, "--config", f"{repo}/configs/smoke.yaml", "--nps", "1",
                            "--rounds", "1", "--after-steps", "20"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0, out
    cells = out[-1].split()
    assert cells[:2] == ["1", "process"] and cells[3] == "143" and cells[-3:] == ["at", "stop", "0"]
