"""vae_dist.metrics: the three kinds of metrics.jsonl line, a line being written, bad lines."""

import json

import pytest

from vae_dist import metrics

TRAIN = {"step": 10, "epoch": 1, "loss": 532.4, "recon": 532.2, "kl": 0.12, "world_size": 1, "time_s": 0.5,
         "wall_time": 1000.5}
TRAIN2 = dict(TRAIN, step=20, loss=400.0, time_s=1.0, wall_time=1001.0)
EVAL = {"step": 20, "epoch": 1, "test_elbo": -242.2, "test_recon": 234.6, "test_kl": 7.6, "time_s": 1.2,
        "wall_time": 1001.2}
STOP = {"step": 21, "event": "stopped", "signal": "SIGTERM", "time_s": 1.3}
RESUME = {"step": 21, "event": "resume", "changed": "train.lr 0.001 → 0.0005"}


def write(tmp_path, text):
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    return str(path)


def lines_text(*objs):
    return "".join(json.dumps(o) + "\n" for o in objs)


def test_kinds_of_line(tmp_path):
    lines = metrics.read(write(tmp_path, lines_text(TRAIN, TRAIN2, EVAL, STOP, RESUME)))
    assert lines == [TRAIN, TRAIN2, EVAL, STOP, RESUME]
    assert metrics.training(lines) == [TRAIN, TRAIN2]
    assert metrics.evaluations(lines) == [EVAL]
    assert metrics.events(lines) == [STOP, RESUME]
    assert metrics.events(lines, "stopped") == [STOP]
    assert metrics.last_step(lines) == 21
    assert metrics.seconds_at(lines) == 1.3
    assert metrics.seconds_at(lines, 20) == 1.2
    assert metrics.seconds_at(lines, 10) == 0.5
    assert metrics.last_step([]) == 0 and metrics.seconds_at([]) == 0.0


def test_a_line_being_written_is_left_out(tmp_path):
    path = write(tmp_path, lines_text(TRAIN) + '{"step": 20, "epoch": 1, "lo')
    assert metrics.read(path) == [TRAIN]


def test_blank_lines_are_skipped(tmp_path):
    assert metrics.read(write(tmp_path, "\n" + lines_text(TRAIN) + "\n\n" + lines_text(EVAL) + "\n")) == [TRAIN, EVAL]


@pytest.mark.parametrize("bad", ['{"step": 1', "[1, 2]", "42", "not json"])
def test_a_bad_complete_line_is_an_error_naming_the_line(tmp_path, bad):
    path = write(tmp_path, lines_text(TRAIN) + bad + "\n" + lines_text(EVAL))
    with pytest.raises(metrics.MetricsError) as e:
        metrics.read(path)
    assert str(e.value) == f"{path}:2: not a JSON object"


def test_a_bad_last_line_that_is_complete_is_an_error(tmp_path):
    path = write(tmp_path, lines_text(TRAIN) + "oops\n")
    with pytest.raises(metrics.MetricsError, match=":2: not a JSON object"):
        metrics.read(path)


def test_missing_file(tmp_path):
    path = str(tmp_path / "none.jsonl")
    assert metrics.read(path, missing_ok=True) == []
    with pytest.raises(metrics.MetricsError, match="none.jsonl: no such file"):
        metrics.read(path)
