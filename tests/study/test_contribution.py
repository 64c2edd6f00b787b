# ruff: noqa: F811  (make_sweep is a fixture imported from sweep_files, used as a test argument)
"""C(k) and its intervals on synthetic scores, checked by hand; the degenerate case; the files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sweep_files import make_sweep  # noqa: F401  (fixture)

from lamina.study.contribution import (
    Scores,
    arm_replicates,
    contribution_table,
    load_scores,
    markdown,
    write_csv,
)
from lamina.study.plots import arm_points, plot_arms, plot_contribution
from lamina.trainer.layers import parse_layers


def scores(arms: dict, episodes: int) -> Scores:
    return Scores(
        "success",
        {k: {s: np.asarray(v, float) for s, v in seeds.items()} for k, seeds in arms.items()},
        list(range(episodes)),
    )


def test_point_contribution_is_the_hand_computed_ratio():
    # base 1/4, full 3/4, block 0: 2/4, block 3: 1/4, block 2: 4/4 (one seed, 4 episodes x 5).
    arms = {"base": [1, 0, 0, 0], "full": [1, 1, 1, 0], 0: [1, 1, 0, 0], 3: [0, 0, 0, 1], 2: [1, 1, 1, 1]}
    table = contribution_table(scores({k: {0: v * 5} for k, v in arms.items()}, 20), num_blocks=4)
    got = {r.block: r.contribution for r in table.block_rows}
    assert not table.degenerate
    assert got[0] == pytest.approx((0.5 - 0.25) / 0.5)
    assert got[3] == pytest.approx(0.0)
    assert got[2] == pytest.approx((1.0 - 0.25) / 0.5)
    assert [r.depth for r in table.block_rows] == pytest.approx([0.0, 2 / 3, 1.0])
    assert table.best.block == 2
    assert table.gap == pytest.approx(0.5)
    assert table.row("base").contribution == 0.0 and table.row("full").contribution == 1.0


def test_a_tiny_evaluation_is_degenerate():
    # The same scores on 4 episodes only: a replicate drawing the two tied episodes four times
    # (probability 1/16 > 2.5%) has S_full = S_base, so the gap is not clearly above zero.
    arms = {"base": [1, 0, 0, 0], "full": [1, 1, 1, 0], 0: [1, 1, 0, 0]}
    table = contribution_table(scores({k: {0: v} for k, v in arms.items()}, 4), num_blocks=4)
    assert table.degenerate and table.gap_lo == 0.0


def test_intervals_over_seeds_by_hand():
    # Base always fails, full always wins, so C = S. The block wins every episode with seed 0 and
    # none with seed 1: a replicate draws seed 0 twice (1/4), once (1/2) or never (1/4), so S and C
    # take 1, 0.5, 0 with those probabilities and the 95% interval is [0, 1].
    e = 6
    table = contribution_table(
        scores(
            {"base": {0: [0] * e, 1: [0] * e}, "full": {0: [1] * e, 1: [1] * e}, 5: {0: [1] * e, 1: [0] * e}},
            e,
        ),
        num_blocks=8,
        replicates=4000,
    )
    row = table.row(5)
    assert row.score == pytest.approx(0.5) and row.contribution == pytest.approx(0.5)
    assert (row.score_lo, row.score_hi) == (0.0, 1.0)
    assert (row.contribution_lo, row.contribution_hi) == (0.0, 1.0)
    assert row.seeds == 2 and row.episodes == e
    _, reps = arm_replicates({0: np.ones(e), 1: np.zeros(e)}, [0, 1], 4000, 0)
    shares = [np.mean(reps == v) for v in (0.0, 0.5, 1.0)]
    assert shares == pytest.approx([0.25, 0.5, 0.25], abs=0.03)


def test_interval_over_episodes_matches_the_normal_width():
    # C = S_k here (base 0, full 1); S_k is a success rate of 100/200 with half-width 1.96 * sqrt(.25 / 200).
    e = 200
    table = contribution_table(
        scores({"base": {0: [0] * e}, "full": {0: [1] * e}, 1: {0: [1, 0] * (e // 2)}}, e),
        num_blocks=4,
        replicates=4000,
    )
    row = table.row(1)
    half = 1.96 * math.sqrt(0.25 / e)
    assert row.contribution_lo == pytest.approx(0.5 - half, abs=0.01)
    assert row.contribution_hi == pytest.approx(0.5 + half, abs=0.01)


def test_replicates_are_paired_across_arms():
    # A block scoring exactly like the base on every episode has C = 0 in every replicate.
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 50)
    full = np.ones(50)
    table = contribution_table(scores({"base": {0: base}, "full": {0: full}, 2: {0: base.copy()}}, 50), 4)
    row = table.row(2)
    assert row.contribution == 0.0 and (row.contribution_lo, row.contribution_hi) == (0.0, 0.0)
    assert row.score_lo < row.score < row.score_hi  # S itself is uncertain


def test_degenerate_gap_is_said_plainly_and_c_is_not_reported(tmp_path):
    # Full RL did no better than the base (3/8 vs 3/8 wins): no C, S only, and a plain sentence.
    won = [1, 1, 1, 0, 0, 0, 0, 0]
    table = contribution_table(
        scores({"base": {0: won}, "full": {0: won[::-1]}, 0: {0: [1] * 8}, 1: {0: [0] * 8}, 2: {0: won}}, 8),
        4,
    )
    assert table.degenerate
    assert all(math.isnan(r.contribution) for r in table.rows)
    verdict = table.verdict()
    assert "not clearly above zero" in verdict and "not reported" in verdict
    csv_path = write_csv(table, tmp_path / "contribution.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("block,depth,score,score_lo,score_hi,contribution,")
    assert lines[3].split(",")[:3] == ["0", "0.0000", "1.0000"] and lines[3].split(",")[5] == ""
    assert "not clearly above zero" in markdown(table)
    # top:K still ranks the blocks (by S, the order C would give).
    assert parse_layers(f"top:1@{tmp_path}", 4) == [0]
    plot_contribution(table, tmp_path / "contribution.png", "degenerate")
    assert (tmp_path / "contribution.png").stat().st_size > 10_000


def test_small_positive_gap_inside_noise_is_degenerate():
    # 9/40 vs 11/40: the gap's interval includes 0.
    base = [1] * 9 + [0] * 31
    full = [0] * 9 + [1] * 11 + [0] * 20  # other episodes than the base's wins
    table = contribution_table(scores({"base": {0: base}, "full": {0: full}, 0: {0: full}}, 40), 4)
    assert table.gap == pytest.approx(0.05) and table.gap_lo < 0 and table.degenerate


def test_csv_feeds_top_k_and_markdown(tmp_path):
    e = 20
    table = contribution_table(
        scores(
            {
                "base": {0: [0] * e},
                "full": {0: [1] * e},
                0: {0: [1] * 5 + [0] * 15},
                1: {0: [1] * 15 + [0] * 5},
                3: {0: [1] * 10 + [0] * 10},
            },
            e,
        ),
        num_blocks=4,
    )
    assert not table.degenerate
    write_csv(table, tmp_path / "contribution.csv")
    assert parse_layers(f"top:2@{tmp_path}", 4) == [1, 3]
    text = markdown(table)
    assert "| block 1 | 0.33 | 0.750 [" in text and "Best single block: 1" in text
    with pytest.raises(ValueError, match="K must be in 1..3"):
        parse_layers(f"top:4@{tmp_path}", 4)


def test_load_scores_aligns_episodes_and_seeds(make_sweep):
    sweep = make_sweep(
        "s",
        {
            "base-seed0": [0, 0, 1],
            "full-seed0": [1, 1, 1],
            "block02-seed0": [1, 0, 1],
            "block02-seed1": [0, 0, 0],
            "notes": [1],
        },
    )
    (sweep / "block03-seed0").mkdir()  # started, not finished: ignored
    got = load_scores(sweep, "success")
    assert set(got.arms) == {"base", "full", 2}
    assert set(got.arms[2]) == {0, 1} and got.episode_seeds == [100_000, 100_001, 100_002]
    table = contribution_table(got, 4)
    assert table.row(2).seeds == 1  # seed 1 has no base/full arm to pair with


def test_missing_base_is_a_clear_error(make_sweep):
    sweep = make_sweep("s", {"full-seed0": [1, 1], "block01-seed0": [1, 0]})
    with pytest.raises(ValueError, match="not finished yet: base"):
        contribution_table(load_scores(sweep, "success"), 4)


def test_arms_chart_has_every_arm_with_each_seeds_score(tmp_path):
    """The extra arms (LoRA, top-K) sit beside the blocks, and each seed's own S is a point."""
    won = [1, 1, 1, 0, 0, 0, 0, 0]
    arms = {
        "base": {0: [0] * 8, 1: [0] * 8},
        "full": {0: [1] * 8, 1: won},
        0: {0: won, 1: won},
        "lora1@all": {0: [0] * 8, 1: [1] * 8},
    }
    data = scores(arms, 8)
    table = contribution_table(data, 4)
    points = {name: (pooled, seeds) for name, pooled, seeds in arm_points(table, data)}
    assert list(points) == ["base", "full", "block 0", "lora1@all"]
    assert points["lora1@all"][1] == [0.0, 1.0] and points["lora1@all"][0] == pytest.approx(0.5)
    assert points["full"][1] == [1.0, 0.375] and points["block 0"][1] == [0.375, 0.375]
    assert plot_arms(table, data, tmp_path / "arms.png", "t").stat().st_size > 10_000
