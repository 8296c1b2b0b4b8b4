"""vae_dist.cluster_model: the α–β fits, the structure of the predictions and the argument errors
of scripts/bench --model."""

import json

import pytest

np = pytest.importorskip("numpy")

from vae_dist import cluster_measure, cluster_model as cm  # noqa: E402


def test_ring_fit_recovers_alpha_and_beta_from_exact_points():
    alpha, beta = 35e-6, 1 / 1.1e9
    pts = [(p, b, cm.ring_seconds(p, b / 4, alpha, beta)) for p in (2, 4) for b in (4096, 65536, 1 << 20, 1 << 24)]
    a, b = cm.fit_ring(pts)
    assert a == pytest.approx(alpha, rel=1e-9)
    assert b == pytest.approx(beta, rel=1e-9)


def test_ring_fit_with_noise_stays_close():
    rng = np.random.default_rng(1)
    alpha, beta = 50e-6, 2e-9
    pts = [(p, b, cm.ring_seconds(p, b / 4, alpha, beta) * (1 + 0.02 * rng.standard_normal()))
           for p in (2, 4) for b in (4096, 65536, 1 << 20, 1 << 22, 1 << 24)]
    a, b = cm.fit_ring(pts)
    assert a == pytest.approx(alpha, rel=0.1)
    assert b == pytest.approx(beta, rel=0.05)


def test_affine_fit_is_relative_so_small_points_count():
    # Exact on the three small points, one outlier 10% high at the largest: the intercept must
    # stay near the small points' (a plain fit would be pulled far off by the big point).
    xs = [1e3, 1e4, 1e5, 1e7]
    ys = [1e-6 + 1e-9 * x for x in xs]
    ys[-1] *= 1.1
    a, b = cm.fit_affine(xs, ys)
    assert a == pytest.approx(1e-6, rel=0.3)


def test_fits_need_two_sizes():
    with pytest.raises(cm.ModelError):
        cm.fit_ring([(2, 100, 1.0), (2, 100, 2.0)])
    with pytest.raises(cm.ModelError):
        cm.fit_ring([(1, 100, 1.0), (2, 200, 2.0)])
    with pytest.raises(cm.ModelError):
        cm.fit_affine([5, 5], [1, 2])


COMPUTE = cm.Compute(c0=1e-3, c1=80e-6, adam=1.2e-3)
LINK = cm.LINKS["10gbe"]
NPS = [1, 2, 4, 8, 16, 32, 64]


def test_one_rank_is_compute_only():
    rows = cm.table(COMPUTE, 1_316_824, LINK, 1e-10, [1], 100, scaled=False)
    p, b, g, ex, t, sps, s, e = rows[0]
    assert ex == 0 and t == pytest.approx(1e-3 + 100 * 80e-6 + 1.2e-3)
    assert s == 1 and e == 1


@pytest.mark.parametrize("link", list(cm.LINKS))
def test_fixed_batch_efficiency_never_above_one(link):
    for row in cm.table(COMPUTE, 1_316_824, cm.LINKS[link], 1e-10, NPS, 100, scaled=False):
        assert 0 < row[7] <= 1 + 1e-12


@pytest.mark.parametrize("link", list(cm.LINKS))
def test_scaled_batch_efficiency_above_one_only_from_sharded_adam(link):
    # Each rank runs 1/np of Adam: a step can be shorter than np 1's when the exchange costs
    # less than the Adam it saves; without Adam time it never is.
    no_adam = cm.Compute(COMPUTE.c0, COMPUTE.c1, 0.0)
    for row in cm.table(no_adam, 1_316_824, cm.LINKS[link], 1e-10, NPS, 100, scaled=True):
        assert 0 < row[7] <= 1 + 1e-12
    for row in cm.table(COMPUTE, 1_316_824, cm.LINKS[link], 1e-10, NPS, 100, scaled=True):
        p, ex = row[0], row[3]
        assert (row[7] > 1 + 1e-12) == (ex < COMPUTE.adam * (1 - 1 / p) - 1e-15)


def test_fixed_batch_speed_up_saturates_and_scaled_batch_keeps_growing():
    link = cm.LINKS["ib-hdr"]
    fixed = [r[6] for r in cm.table(COMPUTE, 1_316_824, link, 1e-10, NPS + [128, 1024], 100, False)]
    # Fixed global batch: no rank's step is shorter than c0, so the speed-up is below t(1) / c0.
    t1 = COMPUTE.step(1, 100, 0.0)
    assert max(fixed) < t1 / COMPUTE.c0
    assert fixed[-1] <= fixed[-2] and fixed[-1] < 0.2 * 1024
    scaled = [r[6] for r in cm.table(COMPUTE, 1_316_824, link, 1e-10, NPS, 100, True)]
    assert all(b > a for a, b in zip(scaled, scaled[1:]))
    assert scaled[-1] > 20


def test_fixed_batch_is_shared_by_the_ranks():
    rows = cm.table(COMPUTE, 1000, LINK, 0.0, [1, 2, 3, 64], 100, scaled=False)
    assert [r[1] for r in rows] == [100, 50, 34, 2]
    assert {r[2] for r in rows} == {100}


def test_min_batch_for_80_percent_reaches_it_and_one_rank_less_does_not():
    p = 8
    need = cm.min_batch_for(COMPUTE, 1_316_824, LINK, 1e-10, p)
    ex = cm.ring_seconds(p, 1_316_824, LINK.alpha, LINK.beta, 1e-10)
    eff = lambda b: COMPUTE.step(1, b * p, 0) / (p * COMPUTE.step(p, b, ex))  # noqa: E731
    assert need % p == 0 and eff(need // p) >= 0.8 and eff(need // p - 1) < 0.8


def test_faster_link_needs_a_smaller_batch():
    need = {k: cm.min_batch_for(COMPUTE, 1_316_824, v, 1e-10, 16) for k, v in cm.LINKS.items()}
    assert need["ib-hdr"] < need["25gbe"] < need["10gbe"]


def measurement():
    """A measurement as cluster_measure writes it, from a known model."""
    n = 1_000_000
    alpha, beta = 100e-6, 1e-9
    ex = [{"transport": "shm", "ranks": p, "hosts": 1, "floats": f, "arena": "x", "seconds": 1e-5 + 1e-10 * 4 * f}
          for p in (2, 4) for f in (1000, n, 4 * n)]
    ex += [{"transport": "tcp", "ranks": p, "hosts": 2, "floats": f, "arena": "x",
            "seconds": cm.ring_seconds(p, f, alpha, beta)} for p in (2, 4) for f in (1000, n, 4 * n)]
    step = lambda p, t: {"name": f"np {p}", "transport": t, "ranks": p, "hosts": 1,  # noqa: E731
                         "seconds": COMPUTE.step(p, 100 // p, 0) + (1e-5 + 4e-10 * n if t == "shm" else
                                                                      cm.ring_seconds(p, n, alpha, beta)),
                         "exchange_share": 0.1, "wait_share": 0.0}
    return {"config": "c.yaml", "batch": 100, "cores": 8, "model_floats": n, "kernel": "K",
            "compute": {"batches": [10, 50, 100], "adam_seconds": COMPUTE.adam,
                        "step_seconds": [COMPUTE.step(1, b, 0) for b in (10, 50, 100)]},
            "exchanges": ex, "steps": [step(1, "none"), step(2, "shm"), step(4, "shm"), step(2, "tcp")]}


def test_measurements_of_an_exact_model_are_predicted_exactly():
    m = measurement()
    f = cm.fit_measurements(m)
    assert f.ring["tcp"][0] == pytest.approx(100e-6) and f.ring["tcp"][1] == pytest.approx(1e-9)
    assert f.gamma == pytest.approx((1e-5 + 4e-10 * 1e6) / 5e5)
    for name, meas, pred, err, _, _ in cm.validation(f, m):
        assert abs(err) < 1e-9, name


def test_report_from_a_saved_file(tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(measurement()))
    assert cm.main(["--from", str(path), "--link", "ib-hdr", "--batch", "200", "--nps", "1 2 4"]) == 0
    out = capsys.readouterr().out
    assert "PREDICTION for ib-hdr" in out and "typical values, not measured here" in out
    assert "global batch fixed at 200" in out and "per-rank batch 200" in out
    assert "+0.0%" in out


@pytest.mark.parametrize("argv, flag", [
    (["--link", "50gbe"], "--link"), (["--batch", "0"], "--batch"), (["--batch", "x"], "--batch"),
    (["--nps", "2 4"], "--nps"), (["--nps", "1 -2"], "--nps"), ([], "--from"), (["--rounds", "0"], "--rounds"),
])
def test_argument_errors_are_one_line(tmp_path, capsys, argv, flag):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(measurement()))
    full = argv if argv == [] else ["--from", str(path)] + argv
    assert cm.main(full) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench --model: ") and flag in err


def test_from_a_file_that_is_not_a_measurement(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"batch": 1}')
    assert cm.main(["--from", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err
    assert cm.main(["--from", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_with_batch_rewrites_the_train_batch_only(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  zdim: 20\ntrain:\n  batch: 100\n  lr: 0.001\n")
    out = cluster_measure.with_batch(str(cfg), 25, str(tmp_path))
    assert open(out).read() == "model:\n  zdim: 20\ntrain:\n  batch: 25\n  lr: 0.001\n"
    cfg.write_text("train:\n  lr: 0.001\n")
    with pytest.raises(cluster_measure.MeasureError, match="batch"):
        cluster_measure.with_batch(str(cfg), 25, str(tmp_path))


def test_median_of_rounds():
    a, b, c = measurement(), measurement(), measurement()
    for x, k in ((a, 1.0), (b, 3.0), (c, 2.0)):
        x["steps"][1]["seconds"] = k
        x["exchanges"][0]["seconds"] = k
        x["compute"]["step_seconds"][0] = k
    m = cluster_measure.median_of([a, b, c])
    assert m["steps"][1]["seconds"] == 2.0 and m["exchanges"][0]["seconds"] == 2.0
    assert m["compute"]["step_seconds"][0] == 2.0
