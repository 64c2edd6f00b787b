"""KL to the base model and the forgetting/cost columns, on numbers computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sweep_files import write_eval

from lamina.study.contribution import add_arm_details, contribution_table, details_markdown, load_scores
from lamina.study.forgetting import choice_kls, forward_kl, token_kls


def test_forward_kl_by_hand():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert float(forward_kl(p.log(), q.log())) == pytest.approx(expected)
    # p_i = 0 contributes nothing, even where q_i = 0 too.
    p0, q0 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.5, 0.5, 0.0])
    assert float(forward_kl(p0.log(), q0.log())) == pytest.approx(math.log(2))


def test_choice_and_token_kls_by_hand():
    trained = [torch.tensor([0.0, math.log(3.0)]), torch.tensor([1.0, 1.0, 1.0])]
    base = [torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0, 1.0])]
    fwd, rev = choice_kls(trained, base, temperature=1.0)
    # State 0: pi_trained = [1/4, 3/4], pi_base = [1/2, 1/2]; state 1: the same policy.
    assert fwd[0] == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert rev[0] == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(0.5 / 0.75))
    assert fwd[1] == pytest.approx(0.0) and rev[1] == pytest.approx(0.0)
    # At T = 2 the scores are halved: [0, ln 3] / 2 gives pi = [1, sqrt 3] / (1 + sqrt 3).
    hot, _ = choice_kls(trained[:1], base[:1], temperature=2.0)
    p = np.array([1.0, math.sqrt(3.0)]) / (1 + math.sqrt(3.0))
    assert hot[0] == pytest.approx(float((p * np.log(p / 0.5)).sum()))
    logits_t = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]])
    logits_b = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    tok_f, tok_r = token_kls(logits_t, logits_b, 1.0)
    assert (
        tok_f[0] == pytest.approx(fwd[0])
        and tok_r[0] == pytest.approx(rev[0])
        and tok_f[1] == pytest.approx(0)
    )


def _metrics(run_dir, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_forgetting_and_cost_columns(tmp_path):
    won = {"base": [0, 0, 1, 0], "full": [1, 1, 1, 0], "block01": [1, 0, 1, 0]}
    for arm, w in won.items():
        for seed in (0, 1):
            run = tmp_path / f"{arm}-seed{seed}"
            write_eval(run, w)
            kl = {"base": 0.0, "full": 0.4 + seed * 0.2, "block01": 0.1}[arm]
            other = {"base": [1, 1, 0, 0], "full": [0, 0, 0, 0], "block01": [1, 0, 0, 0]}[arm]
            (run / "forgetting.json").write_text(
                json.dumps(
                    {"episodes": 4, "kl_to_base": kl, "kl_base_to_trained": 2 * kl, "other_env": "frozenlake",
                     "other_seeds": [7, 8, 9, 10], "other_won": other}
                )
            )  # fmt: skip
            if arm != "base":
                params = 100 if arm == "full" else 25
                _metrics(
                    run,
                    [
                        {"iteration": i, "rollout_s": 2.0, "update_s": 1.0 + seed,
                         "peak_memory_mb": 100.0 + i, "trainable_parameters": params,
                         "update_flops_per_token": 6 * params}
                        for i in range(3)
                    ]
                    + [{"kind": "eval", "iteration": 3, "success_rate": 0.5}],
                )  # fmt: skip
    table = contribution_table(load_scores(tmp_path, "success"), 4, replicates=300)
    add_arm_details(table, tmp_path, replicates=300)
    full, block, base = table.row("full"), table.row(1), table.row("base")
    assert full.kl_to_base == pytest.approx(0.5) and full.kl_base_to_trained == pytest.approx(1.0)
    assert block.kl_to_base == pytest.approx(0.1) and base.kl_to_base == 0
    assert base.other_success == 0.5 and full.other_success == 0 and block.other_success == 0.25
    assert block.other_success_lo <= 0.25 <= block.other_success_hi
    # Per seed: wall 3 x (2 + 1 + seed) s, update 3 x (1 + seed) s; means over seeds 0 and 1.
    assert full.wall_s == pytest.approx(10.5) and full.update_s == pytest.approx(4.5)
    assert full.trainable_parameters == 100 and block.update_flops_per_token == 150
    assert full.peak_memory_mb == 102 and base.wall_s == 0 and math.isnan(base.peak_memory_mb)
    text = "\n".join(details_markdown(table))
    assert "| block 1 | 0.1000 | 0.2000 | 0.250 [" in text and "| full | 0.5000 |" in text
