"""vae_dist.objective_plots: which rows each figure takes, and that both figures are written."""

import os
import shutil

from vae_dist import objective_plots as op

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def row(z, budget, elbo, iw):
    return {"zdim": str(z), "budget": str(budget), "test_elbo": str(elbo), "iw_bound": str(iw)}


def test_degraded_end_series_keeps_the_budget_and_the_three_sizes_in_z_order():
    rows = {"plain": [row(10000, 10, -137, -117), row(20, 10, -110, -106), row(5, 10, -117, -113), row(20, 30, -106, -101)],
            "free bits": [row(1000, 10, -141, -117)]}
    s = op.degraded_end_series(rows, 10)
    assert s["plain"] == [(20, -110.0, -106.0), (10000, -137.0, -117.0)]  # z = 5 and the 30-epoch row left out
    assert s["free bits"] == [(1000, -141.0, -117.0)]
    assert op.degraded_end_series(rows, 30)["free bits"] == []


def test_iwae_points_take_the_vae_k50_and_every_k5_seed_in_model_order():
    objective = [{"part": "iwae", "name": "iwae-k50", "iw_bound": "-100.3", "epochs": "10"},
                 {"part": "iwae", "name": "vae", "iw_bound": "-106.4", "epochs": "10"},
                 {"part": "iwae", "name": "vae", "iw_bound": "-93.1", "epochs": "50"},
                 {"part": "iwae", "name": "iwae-k5", "iw_bound": "-102.1", "epochs": "10"},
                 {"part": "beta", "name": "vae", "iw_bound": "-93", "epochs": "10"}]
    torch_rows = [{"framework": "pytorch", "iw_bound": "-102.9"}, {"framework": "vae-dist", "iw_bound": "-102.2"}]
    assert op.iwae_points(objective, torch_rows) == [
        ("VAE", "vae-dist", -106.4), ("IWAE k = 5", "pytorch", -102.9), ("IWAE k = 5", "vae-dist", -102.2),
        ("IWAE k = 50", "vae-dist", -100.3)]
    dreg = [{"gradient": "dreg", "samples": "50", "iw_bound": "-99.5"}, {"gradient": "standard", "samples": "5", "iw_bound": "-102"},
            {"gradient": "dreg", "samples": "5", "iw_bound": "-101.2"}]
    points = op.iwae_points(objective, torch_rows, dreg)
    assert ("IWAE k = 50", "vae-dist, DReG", -99.5) in points and ("IWAE k = 5", "vae-dist, DReG", -101.2) in points
    assert len(points) == 6 and points.index(("IWAE k = 5", "vae-dist, DReG", -101.2)) < points.index(("IWAE k = 50", "vae-dist", -100.3))


def test_main_draws_both_figures_from_the_committed_csvs(tmp_path):
    shutil.copytree(os.path.join(REPO, "docs", "results"), tmp_path / "docs" / "results")
    for png in ("zdim/degraded-end.png", "objectives/iwae.png"):
        os.remove(tmp_path / "docs" / "results" / png)
    assert op.main(["--root", str(tmp_path)]) == 0
    for png in ("zdim/degraded-end.png", "objectives/iwae.png"):
        with open(tmp_path / "docs" / "results" / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_missing_csvs_are_one_error_line(tmp_path, capsys):
    assert op.main(["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("objective_plots: error: cannot read the results CSVs:") and "\n" not in err
