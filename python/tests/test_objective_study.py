"""vae_dist.objective_study apart from training: its plan, tables, CSV and the docs markers."""

import os

import pytest

from vae_dist import objective_study as st


def rows():
    base = {"epochs": 10, "iw_samples": 5000, "iw_limit": 500, "train_seconds": 1.0, "samples_per_sec": 1000.0}
    r = [dict(base, part="iwae", name="vae", objective="elbo", samples=1, beta=1.0, test_elbo=-95.5, test_recon=70.0,
              test_kl=25.5, iw_bound=-90.25, active_units=20, zdim=50),
         dict(base, part="iwae", name="iwae-k5", objective="iwae", samples=5, beta=1.0, test_elbo=-96.0, test_recon=69.0,
              test_kl=27.0, iw_bound=-89.5, active_units=25, zdim=50)]
    r += [dict(base, part="beta", name=f"beta-{b:g}", objective="elbo", samples=1, beta=b, test_elbo=-100 - b,
               test_recon=80 + b, test_kl=30 / b, iw_bound=-95 - b, active_units=10, zdim=20) for b in (4.0, 0.25)]
    return r


def test_plan_has_the_three_iwae_runs_and_five_betas():
    p = st.plan(3)
    assert [r[1] for r in p] == ["vae", "iwae-k5", "iwae-k50", "beta-0.25", "beta-0.5", "beta-1", "beta-2", "beta-4"]
    assert p[2][3] == ["--objective", "iwae", "--samples", "50", "--epochs", "3"] and p[2][5] == 50
    assert p[3][3] == ["--beta", "0.25", "--epochs", "3"] and p[3][2] == "configs/mnist.yaml"


def test_tables_name_each_run_with_minus_signs_and_sorted_betas():
    iw = st.markdown(rows(), "iwae").splitlines()
    assert iw[2].startswith("| VAE (ELBO) | 10 | −90.25 (k = 5000, first 500) | −95.50 | 20 of 50 |")
    assert iw[3].startswith("| IWAE, k = 5 |")
    beta = st.markdown(rows(), "beta").splitlines()
    assert beta[2].startswith("| 0.25 |") and beta[3].startswith("| 4 |")
    assert "| 120.00 |" in beta[2]  # rate 30 / 0.25


def test_csv_round_trips(tmp_path):
    st.write_csv(rows(), tmp_path / "s.csv")
    back = st.read_csv(tmp_path / "s.csv")
    assert [r["name"] for r in back] == ["vae", "iwae-k5", "beta-4", "beta-0.25"]
    assert st.markdown(back, "beta") == st.markdown(rows(), "beta")


def test_replace_between_rewrites_only_the_table(tmp_path):
    begin, end = st.MARKERS["beta"]
    page = tmp_path / "results.md"
    page.write_text(f"intro\n{begin}\nold\n{end}\noutro\n")
    assert st.replace_between(str(page), begin, end, "| new |")
    assert page.read_text() == f"intro\n{begin}\n| new |\n{end}\noutro\n"
    page.write_text("no markers\n")
    assert not st.replace_between(str(page), begin, end, "| new |")


def test_unknown_part_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        st.main(["--bin", "x", "--root", ".", "--parts", "vimco"])
    assert e.value.code == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_a_missing_binary_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        st.run(["/nonexistent/vae-dist", "train"], "training vae")
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("objective-study: training vae: cannot run /nonexistent/vae-dist") and err.count("\n") == 1


def test_torch_plan_pairs_vae_dist_and_pytorch_per_seed_with_seed_1_the_iwae_parts_run():
    p = st.torch_plan(3, [1, 2])
    assert [(r[1], r[8], r[9]) for r in p] == [("iwae-k5", "vae-dist", 1), ("pytorch-iwae-k5-seed1", "pytorch", 1),
                                               ("iwae-k5-seed2", "vae-dist", 2), ("pytorch-iwae-k5-seed2", "pytorch", 2)]
    assert p[0][3] == st.plan(3)[1][3]  # the IWAE part's k = 5 command, not retrained
    assert p[2][3][-2:] == ["--seed", "2"]
    torch_flags = p[3][3]
    assert torch_flags[:6] == ["--model", "iwae-mnist", "--objective", "iwae", "--train-samples", "5"]
    assert "--epochs" in torch_flags and torch_flags[torch_flags.index("--epochs") + 1] == "3"


def test_torch_table_has_a_row_per_run_and_a_mean_per_framework():
    base = {"epochs": 10, "iw_samples": 5000, "iw_limit": 500, "train_seconds": 100.0, "samples_per_sec": 6000.0,
            "part": "torch", "test_elbo": -111.0, "active_units": 48, "zdim": 50, "samples": 5}
    rs = [dict(base, framework=fw, seed=s, iw_bound=b) for fw, s, b in
          (("vae-dist", 1, -102.0), ("pytorch", 2, -103.0), ("pytorch", 1, -102.5), ("vae-dist", 2, -102.5))]
    lines = st.markdown(rs, "torch").splitlines()
    assert lines[2].startswith("| pytorch | 1 | 10 | −102.50 (k = 5000, first 500) | −111.00 | 48 of 50 | 100 | 6000 |")
    assert lines[3].startswith("| pytorch | 2 |") and lines[5].startswith("| vae-dist | 2 |")
    assert lines[6].startswith("| pytorch, mean ± sd of 2 | | | −102.75 ± 0.35 |")
    assert lines[7].startswith("| vae-dist, mean ± sd of 2 | | | −102.25 ± 0.35 | −111.00 ± 0.00 | 48.0 |")


def test_bad_seeds_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        st.main(["--bin", "x", "--root", ".", "--parts", "torch", "--seeds", "one"])
    assert e.value.code == 1 and "--seeds" in capsys.readouterr().err


def test_torch_jsonl_holds_the_pytorch_runs_lines_in_order(tmp_path):
    for name, line in (("pytorch-iwae-k5-seed2", '{"seed": 2}'), ("pytorch-iwae-k5-seed1", 'log\n{"seed": 1}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "torch.json").write_text(line + "\n")
    rows = [{"framework": "pytorch", "name": "pytorch-iwae-k5-seed2"}, {"framework": "vae-dist", "name": "iwae-k5"},
            {"framework": "pytorch", "name": "pytorch-iwae-k5-seed1"}]
    st.write_torch_jsonl(str(tmp_path), rows, str(tmp_path / "out.jsonl"))
    assert (tmp_path / "out.jsonl").read_text() == '{"seed": 2}\n{"seed": 1}\n'


def test_dreg_plan_pairs_each_seeds_standard_run_with_its_dreg_run_and_k50_with_seed_1():
    p = st.dreg_plan(3, [1, 2])
    assert [(r[1], r[5], r[8], r[9]) for r in p] == [
        ("iwae-k5", 5, "standard", 1), ("iwae-k5-dreg", 5, "dreg", 1), ("iwae-k5-seed2", 5, "standard", 2),
        ("iwae-k5-dreg-seed2", 5, "dreg", 2), ("iwae-k50", 50, "standard", 1), ("iwae-k50-dreg", 50, "dreg", 1)]
    assert p[0][3] == st.plan(3)[1][3] and p[4][3] == st.plan(3)[2][3]  # the IWAE part's runs, not retrained
    assert p[2][3] == st.torch_plan(3, [2])[0][3]  # the torch part's vae-dist seed 2
    assert p[3][3] == p[2][3] + ["--iwae-gradient", "dreg"]
    assert [r[1] for r in st.dreg_plan(3, [2])] == ["iwae-k5-seed2", "iwae-k5-dreg-seed2"]


def test_dreg_table_groups_by_k_and_gradient_with_a_mean_per_group():
    base = {"epochs": 10, "iw_samples": 5000, "iw_limit": 500, "train_seconds": 100.0, "samples_per_sec": 6000.0,
            "part": "dreg", "test_elbo": -111.0, "active_units": 48, "zdim": 50}
    rs = [dict(base, gradient=g, seed=s, samples=k, iw_bound=b) for g, s, k, b in
          (("standard", 1, 50, -100.0), ("dreg", 2, 5, -102.0), ("standard", 1, 5, -103.0), ("dreg", 1, 5, -101.0),
           ("dreg", 1, 50, -99.0))]
    lines = st.markdown(rs, "dreg").splitlines()
    assert lines[0].startswith("| IWAE k, gradient | seed |")
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| 5, DReG", "| 5, DReG", "| 5, standard", "| 50, DReG", "| 50, standard", "| 5, DReG, mean ± sd of 2"]
    assert lines[7].startswith("| 5, DReG, mean ± sd of 2 | | | −101.50 ± 0.71 |")


def test_a_run_shared_by_parts_is_measured_once_and_tagged_per_part(tmp_path):
    (tmp_path / "iwae-k5").mkdir()
    (tmp_path / "iwae-k5" / "row.json").write_text('{"part": "iwae", "name": "iwae-k5", "iw_bound": -102.0}')

    class A:
        out = str(tmp_path)
    row = st.measure(A, "dreg", "iwae-k5", "configs/iwae-mnist.yaml", [], "iwae", 5, 1.0, 50, "standard", 1)
    assert (row["part"], row["gradient"], row["seed"], row["iw_bound"]) == ("dreg", "standard", 1, -102.0)
    row = st.measure(A, "iwae", "iwae-k5", "configs/iwae-mnist.yaml", [], "iwae", 5, 1.0, 50)
    assert row["part"] == "iwae" and "gradient" not in row


def test_docs_rows_accumulate_budgets_and_a_rerun_replaces_its_own():
    ten = rows()
    fifty = [dict(r, epochs=50, iw_bound=r["iw_bound"] + 5) for r in ten if r["part"] == "iwae"]
    merged = st.merge_rows(ten, fifty)
    assert [(r["part"], r["name"], r["epochs"]) for r in merged] == [
        ("iwae", "vae", 10), ("iwae", "iwae-k5", 10), ("iwae", "vae", 50), ("iwae", "iwae-k5", 50),
        ("beta", "beta-0.25", 10), ("beta", "beta-4", 10)]
    again = st.merge_rows(merged, [dict(fifty[0], iw_bound=-1.0)])
    assert len(again) == 6 and [r["iw_bound"] for r in again if r["epochs"] == 50 and r["name"] == "vae"] == [-1.0]
    table = st.markdown(merged, "iwae").splitlines()
    assert table[2].startswith("| VAE (ELBO) | 10 |") and table[4].startswith("| VAE (ELBO) | 50 | −85.25")


def test_docs_merge_reads_the_committed_csv_as_text(tmp_path):
    st.write_csv(rows(), tmp_path / "s.csv")
    merged = st.merge_rows(st.read_csv(tmp_path / "s.csv"), [dict(rows()[0], epochs=50)])
    assert [(r["name"], int(r["epochs"])) for r in merged][:3] == [("vae", 10), ("iwae-k5", 10), ("vae", 50)]
