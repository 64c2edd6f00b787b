# ruff: noqa: F811  (make_sweep is a fixture imported from sweep_files, used as a test argument)
"""lamina compare: rank correlations against scipy, block matching across depths, output files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr
from sweep_files import make_sweep  # noqa: F401  (fixture)

from lamina.cli import main
from lamina.study.compare import compare_sweeps, load_sweep, match_blocks


def arms(rates: dict, episodes: int = 40, seed: int = 0) -> dict[str, list[int]]:
    """Arm folders whose success rates are exactly ``rates`` (wins placed at random episodes)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, rate in rates.items():
        won = np.zeros(episodes, dtype=int)
        won[rng.permutation(episodes)[: round(rate * episodes)]] = 1
        out[name] = won.tolist()
    return out


A = {
    "base-seed0": 0.1,
    "full-seed0": 0.9,
    "block00-seed0": 0.2,
    "block01-seed0": 0.5,
    "block02-seed0": 0.8,
    "block03-seed0": 0.6,
    "block04-seed0": 0.4,
}
B = {
    "base-seed0": 0.0,
    "full-seed0": 0.8,
    "block00-seed0": 0.1,
    "block01-seed0": 0.6,
    "block02-seed0": 0.7,
    "block03-seed0": 0.3,
    "block04-seed0": 0.35,
}


def test_correlations_equal_scipy_on_the_contributions(make_sweep, tmp_path):
    a = make_sweep("grpo", arms(A), num_blocks=5)
    b = make_sweep("gigpo", arms(B, seed=1), num_blocks=5)
    result = compare_sweeps(a, b, tmp_path / "cmp")
    assert result["quantity"] == "C(k)"
    c_a = [(A[f"block0{k}-seed0"] - 0.1) / 0.8 for k in range(5)]
    c_b = [(B[f"block0{k}-seed0"] - 0.0) / 0.8 for k in range(5)]
    assert [p["value_a"] for p in result["pairs"]] == pytest.approx(c_a)
    assert [p["value_b"] for p in result["pairs"]] == pytest.approx(c_b)
    rho, tau = spearmanr(c_a, c_b), kendalltau(c_a, c_b)
    assert result["spearman"]["rho"] == pytest.approx(rho.statistic)
    assert result["spearman"]["p_value"] == pytest.approx(rho.pvalue)
    assert result["kendall"]["tau_b"] == pytest.approx(tau.statistic)
    assert result["kendall"]["p_value"] == pytest.approx(tau.pvalue)
    lo, hi = result["spearman"]["interval"]
    assert -1 <= lo <= result["spearman"]["rho"] <= hi <= 1
    for name in ("compare.json", "compare.md", "compare.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["pairs"][2]["block_a"] == 2


def test_a_degenerate_sweep_is_compared_on_s_and_says_so(make_sweep, tmp_path):
    flat = dict(A, **{"full-seed0": 0.1})  # full RL no better than the base
    a = make_sweep("flat", arms(flat), num_blocks=5)
    b = make_sweep("b", arms(B, seed=1), num_blocks=5)
    result = compare_sweeps(a, b, tmp_path / "cmp")
    assert result["quantity"] == "S(k)" and result["degenerate"] == {"a": True, "b": False}
    assert "C(k) is not defined in flat" in (tmp_path / "cmp" / "compare.md").read_text()


def test_blocks_of_models_with_other_depths_match_by_relative_depth(make_sweep):
    a = make_sweep(
        "l30",
        arms(
            {
                "base-seed0": 0,
                "full-seed0": 1,
                "block00-seed0": 0.5,
                "block07-seed0": 0.5,
                "block15-seed0": 0.5,
                "block29-seed0": 0.5,
            }
        ),
        num_blocks=30,
    )
    b = make_sweep(
        "l28",
        arms(
            {
                "base-seed0": 0,
                "full-seed0": 1,
                "block00-seed0": 0.5,
                "block07-seed0": 0.5,
                "block14-seed0": 0.5,
                "block20-seed0": 0.5,
                "block27-seed0": 0.5,
            }
        ),
        num_blocks=28,
    )
    assert match_blocks(load_sweep(a), load_sweep(b)) == [(0, 0), (7, 7), (15, 14), (29, 27)]


def test_compare_cli_needs_two_sweeps_and_three_shared_blocks(make_sweep, capsys, tmp_path):
    a = make_sweep("a", arms({"base-seed0": 0, "full-seed0": 1, "block00-seed0": 0.5, "block01-seed0": 0.2}))
    assert main(["compare", str(a), str(a), str(a)]) == 2
    assert "usage: lamina compare SWEEP_A SWEEP_B [out=DIR]" in capsys.readouterr().err
    assert main(["compare", str(a)]) == 2  # one sweep: across its seeds, and it has one
    assert "needs blocks finished with 2 or more seeds" in capsys.readouterr().err
    assert main(["compare", str(a), str(a), f"out={tmp_path / 'x'}"]) == 2
    assert "share 2 block(s)" in capsys.readouterr().err
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "is not a sweep folder" in capsys.readouterr().err


def test_rank_stability_across_seeds_of_one_sweep(make_sweep, tmp_path, capsys):
    per_seed = {0: [0.1, 0.5, 0.8, 0.6], 1: [0.2, 0.6, 0.7, 0.3], 2: [0.7, 0.5, 0.2, 0.4]}
    rates = {f"block0{k}-seed{s}": r for s, row in per_seed.items() for k, r in enumerate(row)}
    rates.update({f"{arm}-seed{s}": r for s in per_seed for arm, r in (("base", 0.0), ("full", 0.9))})
    sweep = make_sweep("seeds", arms(rates), num_blocks=4)
    result = main(["compare", str(sweep), f"out={tmp_path / 'stab'}"])
    assert result == 0 and "Rank stability of seeds" in capsys.readouterr().out
    saved = json.loads((tmp_path / "stab" / "rank_stability.json").read_text())
    expected = {(s, t): spearmanr(per_seed[s], per_seed[t]).statistic for s, t in ((0, 1), (0, 2), (1, 2))}
    got = {(p["seed_a"], p["seed_b"]): p["rho"] for p in saved["pairs"]}
    assert got == pytest.approx(expected)
    assert saved["mean_rho"] == pytest.approx(np.mean(list(expected.values())))
    assert saved["min_rho"] == pytest.approx(-1.0)  # seed 2 ranks the blocks in reverse of seed 0
    one_seed = make_sweep("one", arms({"base-seed0": 0, "full-seed0": 1, "block00-seed0": 0.5}), num_blocks=4)
    assert main(["compare", str(one_seed)]) == 2
    assert "needs blocks finished with 2 or more seeds" in capsys.readouterr().err
