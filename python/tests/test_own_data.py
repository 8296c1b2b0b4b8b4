"""vae_dist.own_data (scripts/own-data-study) apart from training, the "Your own data" page's
lines, and vae_dist.torch with a learned variance (against a NumPy formula and the binary)."""

import csv
import json
import math
import os
import re
import subprocess

import pytest

np = pytest.importorskip("numpy")

from vae_dist import own_data  # noqa: E402

CONFIG_YAML = """\
name: digits
model:
  kind: vae
  input_size: 64
  likelihood: gaussian
  sigma: learned
train:
  batch: 64
  epochs: 500
  lr: 0.001
  beta1: 0.9
  beta2: 0.999
  adam_eps: 1e-08
  weight_decay: 0.0
  seed: 1
# environment (informational)
environment:
  blas_threads: 1
"""


def test_dequantise_keeps_each_level_in_its_own_interval():
    v = np.arange(17).repeat(50).reshape(17, 50)
    x = own_data.dequantise(v, np.random.default_rng(3))
    assert x.dtype == np.float32 and x.shape == v.shape
    assert (np.floor(x * 17) == v).all()
    assert len(np.unique(x)) == x.size  # continuous: no two values alike
    assert (own_data.dequantise(v, np.random.default_rng(3)) == x).all()


def test_split_is_seeded_disjoint_and_keeps_labels_with_rows():
    v = np.arange(200 * 4).reshape(200, 2, 2) % 17
    labels = np.arange(200)
    train, test, train_y, test_y = own_data.split(v, labels, seed=5, test_count=30)
    assert (len(train), len(test)) == (170, 30)
    assert sorted(np.concatenate([train_y, test_y])) == list(range(200))
    assert (np.floor(test * 17) == v[test_y]).all() and (np.floor(train * 17) == v[train_y]).all()
    again = own_data.split(v, labels, seed=5, test_count=30)
    assert (again[1] == test).all()
    assert not (own_data.split(v, labels, seed=6, test_count=30)[3] == test_y).all()


def test_train_settings_from_a_runs_config():
    s = own_data.train_settings(CONFIG_YAML)
    assert s == {"batch": 64, "epochs": 500, "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "adam_eps": 1e-8}
    with pytest.raises(own_data.StudyError, match="run.yaml: train.weight_decay 0.5"):
        own_data.train_settings(CONFIG_YAML.replace("weight_decay: 0.0", "weight_decay: 0.5"), "run.yaml")
    with pytest.raises(own_data.StudyError, match="train.epochs missing"):
        own_data.train_settings(CONFIG_YAML.replace("epochs: 500", "steps: 100"))
    with pytest.raises(own_data.StudyError, match="malformed"):
        own_data.train_settings(CONFIG_YAML.replace("lr: 0.001", "lr: fast"))


def test_summary_means_deviations_and_difference():
    rows = [{"framework": "vae-dist", "elbo": 60.0, "elbo_k": 61.0, "k": 100},
            {"framework": "vae-dist", "elbo": 62.0, "elbo_k": 63.0, "k": 100},
            {"framework": "pytorch", "elbo": 59.0, "elbo_k": 62.0, "k": 100}]
    s = own_data.summary(rows)
    assert s["vae-dist"] == (2, 61.0, pytest.approx(math.sqrt(2)), 62.0, pytest.approx(math.sqrt(2)))
    assert s["pytorch"] == (1, 59.0, 0.0, 62.0, 0.0)
    text = own_data.summary_text(rows)
    assert "vae-dist: held-out ELBO 61.00 ± 1.41 nats (one z; mean ± sd over 2 seeds), 62.00 ± 1.41" in text
    assert "vae-dist − pytorch: +2.00 nats (one z), +0.00 (mean over 100 z)" in text
    assert "may be positive" in text


def test_image_grid_places_each_image():
    a, b = np.full((2, 64), 0.25), np.full((1, 64), 2.0)
    g = own_data.image_grid([a, b])
    assert g.shape == (2 * 9 + 1, 2 * 9 + 1)
    assert (g[1:9, 10:18] == 0.25).all() and (g[10:18, 1:9] == 1.0).all()  # clipped to [0, 1]
    assert (g[10:18, 10:18] == 0.2).all() and (g[0] == 0.2).all()  # an empty cell and the gaps


def test_pca2_keeps_a_planes_distances():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(50, 2)) * [3.0, 1.0]
    basis = np.linalg.qr(rng.normal(size=(8, 2)))[0]
    p = own_data.pca2(plane @ basis.T + 7.0)
    d = lambda m: np.linalg.norm(m[:, None] - m[None], axis=-1)  # noqa: E731
    assert np.allclose(d(p), d(plane), atol=1e-9)


def make_study(out):
    run = out / "vae-dist-seed3"
    run.mkdir(parents=True)
    for name, elbo, samples in (("eval", 66.5, 1), ("eval-k", 67.25, 100), ("eval-mean", 71.0, 0)):
        (run / f"{name}.json").write_text(json.dumps(
            {"checkpoint": "x", "kind": "vae", "elbo": elbo, "recon": -80.0, "kl": 13.5, "samples": samples}))
    lines = [{"step": 50, "loss": 1.0, "time_s": 0.1}, {"step": 12500, "test_elbo": 66.5, "time_s": 3.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    (run / "config.yaml").write_text(CONFIG_YAML)


def test_vae_dist_row_and_csv(tmp_path):
    make_study(tmp_path)
    row = own_data.vae_dist_row(str(tmp_path), 3)
    assert row == {"framework": "vae-dist", "seed": 3, "epochs": 500, "steps": 12500, "elbo": 66.5,
                   "elbo_k": 67.25, "k": 100, "elbo_mean_z": 71.0, "recon": -80.0, "kl": 13.5,
                   "train_seconds": 3.25}
    path = str(tmp_path / "t.csv")
    own_data.write_csv([row], path)
    with open(path) as f:
        assert list(csv.DictReader(f)) == [{k: str(v) for k, v in row.items()}]


def test_missing_input_is_one_line(tmp_path, capsys):
    make_study(tmp_path)
    os.remove(tmp_path / "vae-dist-seed3" / "eval-k.json")
    assert own_data.main(["report", str(tmp_path), "--data", str(tmp_path), "--seeds", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("own-data-study: ") and "eval-k.json" in err and err.count("\n") == 1
    assert own_data.main(["torch", "--like", str(tmp_path / "absent"), "--data", ".", "--seed", "1",
                          "--out", str(tmp_path / "t.json")]) == 1
    err = capsys.readouterr().err
    assert "absent/final.safetensors" in err and err.count("\n") == 1


def readme_python(repo):
    """The Python the "Your own data" page runs (docs/own-data.md, between <<'EOF' and EOF)."""
    with open(os.path.join(repo, "docs", "own-data.md"), encoding="utf-8") as f:
        text = f.read()
    return re.search(r"<<'EOF'\n(.*?)\nEOF\n", text, re.S).group(1)


def test_readme_lines_write_the_studys_data(repo, tmp_path):
    pytest.importorskip("sklearn")
    subprocess.run([os.sys.executable, "-c", readme_python(repo)], cwd=tmp_path, check=True)
    train, test, _, _ = own_data.digits()
    assert (np.load(tmp_path / "data/digits/train.npy") == train.reshape(-1, 8, 8)).all()
    assert (np.load(tmp_path / "data/digits/test.npy") == test).all()
    assert test.dtype == np.float32 and test.shape == (180, 8, 8) and train.shape == (1617, 8, 8)


def test_config_names_the_readme_paths(repo):
    with open(os.path.join(repo, "configs", "digits.yaml"), encoding="utf-8") as f:
        cfg = f.read()
    for line in ("  train: ../data/digits/train.npy", "  test: ../data/digits/test.npy", "  sigma: learned"):
        assert line in cfg
    assert 'np.save("data/digits/train.npy"' in readme_python(repo)


def test_learned_sigma_module_matches_the_formula():
    torch = pytest.importorskip("torch")
    from vae_dist import torch as vt

    m = vt.VAE(6, [5], None, 3, "gaussian", "learned")
    assert m.decoder["out"].out_features == 12 and m.config()["sigma"] == "learned"
    assert vt.VAE.from_config(m.config()).config() == m.config()
    rng = np.random.default_rng(1)
    x, out = rng.uniform(size=(4, 6)), rng.normal(size=(4, 12))
    mu, lv = out[:, :6], out[:, 6:]
    want = (-0.5 * (np.log(2 * np.pi) + lv + (x - mu) ** 2 / np.exp(lv))).sum(-1)
    got = m.log_likelihood(torch.from_numpy(x), torch.from_numpy(out)).numpy()
    assert np.allclose(got, want, rtol=1e-12)


def test_learned_sigma_checkpoint_loads_and_agrees_with_eval(vae_dist_bin, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from vae_dist import torch as vt

    x = own_data.dequantise(np.random.default_rng(2).integers(0, 17, size=(300, 16)), np.random.default_rng(3))
    np.save(tmp_path / "train.npy", x[:240])
    np.save(tmp_path / "test.npy", x[240:])
    (tmp_path / "c.yaml").write_text("model:\n  hidden: [16]\n  zdim: 2\n  likelihood: gaussian\n  sigma: learned\n"
                                     "data:\n  train: train.npy\n  test: test.npy\ntrain:\n  batch: 20\n  steps: 40\n")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    subprocess.run([vae_dist_bin, "train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"),
                    "--quiet", "--no-tensorboard"], check=True, env=env)
    ck = str(tmp_path / "r" / "final.safetensors")
    out = json.loads(subprocess.run([vae_dist_bin, "eval", "--checkpoint", ck, "--mean-z", "--json"], check=True,
                                    capture_output=True, text=True, env=env).stdout)
    model = vt.load(ck)
    assert model.sigma == "learned" and model.decoder["out"].out_features == 32
    with torch.no_grad():
        elbo = model.double().elbo(torch.from_numpy(x[240:]).double(), eps=0).mean().item()
    assert out["images"] == 60
    assert elbo == pytest.approx(out["elbo"], rel=1e-6)
