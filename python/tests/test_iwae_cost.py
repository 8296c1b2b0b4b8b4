"""vae_dist.iwae_cost apart from measuring: the configs it writes, its steps, medians and ratios."""

from vae_dist import iwae_cost as ic

BASE = "name: x\nmodel:\n  zdim: 50\ntrain:\n  batch: 100\n  lr: 0.001\n"


def test_variant_config_adds_the_objective_under_train():
    assert ic.variant_config(BASE, None) == BASE
    text = ic.variant_config(BASE, 5)
    assert "train:\n  objective: iwae\n  samples: 5\n  batch: 100\n" in text


def test_steps_shrink_with_k_but_not_below_ten():
    assert [ic.steps_for(k, 400) for k in (None, 1, 5, 50, 500)] == [400, 400, 160, 16, 10]


def test_summary_takes_medians_and_each_rounds_own_ratio():
    def m(sps):
        return {"samples_per_sec": sps, "batch": 100, "kernel": "Haswell", "steps": 10}
    measured = {}
    for r, (elbo, k5) in enumerate([(1000, 300), (500, 160), (900, 270)]):  # round 2: a slow machine
        measured[(r, 1, None)] = m(elbo)
        measured[(r, 1, 5)] = m(k5)
    rows = ic.summarise(measured, [1], [None, 5])
    assert [(x["objective"], x["samples"]) for x in rows] == [("elbo", 1), ("iwae", 5)]
    assert rows[0]["samples_per_sec"] == 900 and rows[0]["ratio_to_elbo"] == 1
    assert rows[1]["samples_per_sec"] == 270 and rows[1]["ratio_to_elbo"] == 0.3  # 0.3, 0.32, 0.3
    assert rows[1]["ratio_max"] == 0.32 and rows[1]["rounds"] == 3
    table = ic.markdown(rows).splitlines()
    assert table[3] == "| 1 | iwae | 5 | 270 | 160 … 300 | 0.300 | 0.300 … 0.320 |"
