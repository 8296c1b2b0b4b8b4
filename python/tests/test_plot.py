"""vae_dist.plot: reading runs, the loss axis, one-line errors and the figure."""

import json
import os

import pytest

from vae_dist import plot


def fake_run(root, name, scale=1.0, evals=True):
    d = root / name
    d.mkdir(parents=True)
    lines = []
    for step in range(10, 210, 10):
        loss = scale * (100 + 400 / step)
        lines.append({"step": step, "epoch": 1, "loss": loss, "time_s": step * 0.05})
        if evals and step % 50 == 0:
            lines.append({"step": step, "epoch": 1, "test_elbo": -loss - 2, "time_s": step * 0.05 + 0.01})
    (d / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    return str(d)


def test_read_run(tmp_path):
    d = fake_run(tmp_path, "lr-1e-3", evals=True)
    run = plot.read_run(d)
    assert run["name"] == "lr-1e-3" and len(run["train"]) == 20 and len(run["eval"]) == 4
    assert run["train"][0] == (10, 0.5, 140.0) and run["eval"][0][0] == 50
    assert plot.read_run(os.path.join(d, "metrics.jsonl"))["name"] == "lr-1e-3"


@pytest.mark.parametrize("content,message", [
    ("", "is empty: no training or evaluation lines yet"),
    ('{"step": 1, "loss": "x", "time_s": 1}\n', "a 'loss' line without numeric step/time_s/loss"),
    ('{"step": 1, "loss": 1, "time_s": 1}\nnot json\n{"step": 2}\n', "metrics.jsonl:2: not a JSON object"),
])
def test_bad_metrics(tmp_path, content, message):
    (tmp_path / "metrics.jsonl").write_text(content)
    with pytest.raises(plot.PlotError, match=message):
        plot.read_run(str(tmp_path))


def test_labels_disambiguate_equal_names(tmp_path):
    a, b, c = fake_run(tmp_path / "x", "run"), fake_run(tmp_path / "y", "run"), fake_run(tmp_path, "other")
    labels = [d["label"] for d in plot.labelled([plot.read_run(p) for p in (a, b, c)], [a, b, c])]
    assert labels == [os.path.normpath(a), os.path.normpath(b), "other"]


def test_loss_limits_cut_the_first_steps_off():
    values = [500.0, 300.0] + [100.0 + i * 0.1 for i in range(98)]
    low, high = plot.loss_limits(values)
    assert low < 100.0 and 109.0 < high < 115.0  # well below the first steps' 300 and 500


def test_main_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert plot.main([str(tmp_path / "x.png"), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == f"plot: error: no run directory {tmp_path / 'missing'}\n"
    assert not (tmp_path / "x.png").exists()


def test_figure(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "compare.png"
    runs = [fake_run(tmp_path, "a"), fake_run(tmp_path, "b", scale=1.1, evals=False)]
    assert plot.main([str(out)] + runs) == 0
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1200 and int.from_bytes(png[20:24], "big") == 850
    assert len(png) > 20_000
