"""vae_dist.cvae_study: the CSV and results.md from a study directory's files."""

import csv
import json
import os

import pytest

from vae_dist import cvae_study

COMPLETE = {
    "images": 500,
    "cvae": {"log_p_y_given_x": -189.85, "entropy": 0.2322, "diversity": 0.52, "diversity_over_x": 0.02,
             "mean_sq_error": 60.44, "best_of_5_sq_error": 59.26},
    "regressor": {"log_p_y_given_x": -194.07, "entropy": 0.2425, "diversity": 0.15, "diversity_over_x": 0.15,
                  "mean_sq_error": 58.79, "best_of_5_sq_error": 58.42},
}


def make_study(tmp_path):
    out = tmp_path / "study"
    for m, steps, seconds in (("cvae", 600, 35.25), ("regressor", 600, 20.04)):
        run = out / m
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"name: {m}\ntrain:\n  epochs: 3  # budget\n  batch: 100\n")
        lines = [{"step": s, "loss": 1.0, "time_s": seconds * s / steps} for s in (200, 400, steps)]
        lines.append({"step": steps, "test_elbo": -1.0, "time_s": seconds})
        (run / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    (out / "complete.json").write_text(json.dumps(COMPLETE))
    (out / "cvae-iw.json").write_text(json.dumps({"iw_bound": -185.11, "images": 500}))
    return str(out)


def test_rows_and_csv(tmp_path):
    out = make_study(tmp_path)
    assert cvae_study.main([out, "5"]) == 0
    with open(os.path.join(out, "cvae-study.csv")) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == cvae_study.FIELDS
    cv, rg = rows
    assert (cv["model"], cv["epochs"], cv["steps"], cv["iw_bound"], cv["iw_k"], cv["iw_images"]) == \
        ("cvae", "3", "600", "-185.11", "5", "500")
    assert (rg["model"], rg["iw_bound"], rg["iw_k"], rg["iw_images"]) == ("regressor", "", "", "")
    assert cv["train_seconds"] == "35.2" and rg["train_seconds"] == "20.0"
    assert rg["mean_sq_error"] == "58.79" and cv["images"] == "500"


def test_results_md_states_each_claim(tmp_path, capsys):
    out = make_study(tmp_path)
    cvae_study.main([out, "5"])
    md = open(os.path.join(out, "results.md")).read()
    assert md == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "IW bound (k = 5, 500 images)" in md
    assert "- Sharper (lower entropy of the predicted means): CVAE (0.2322 vs 0.2425): holds." in md
    assert "- More diverse (mean pairwise distance between 5 completions): CVAE (0.52 vs 0.15): holds." in md
    assert "the regressor's mean is lower (58.79 vs 60.44)" in md


def test_verdicts_turn_when_the_numbers_do():
    cv = dict(COMPLETE["cvae"], entropy=0.3, diversity=0.1)
    assert cvae_study.verdicts(cv, COMPLETE["regressor"]) == (False, False, True)


def test_missing_input_is_one_line(tmp_path, capsys):
    out = make_study(tmp_path)
    os.remove(os.path.join(out, "cvae-iw.json"))
    assert cvae_study.main([out, "5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cvae-study: ") and "cvae-iw.json" in err and err.count("\n") == 1
