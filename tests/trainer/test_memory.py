"""Memory over a long run: metrics.jsonl records ``rss_mb`` (resident now) and ``max_rss_mb`` (the
peak so far) per iteration, and a 60-iteration run of the tiny model does not grow.

A leak of a few MB per iteration ends a three-day run; over 50 iterations it shows here as 100+ MB.
Each iteration is made as small as the loop allows (one step, two copies, three new tokens) so
that 60 of them take about a minute per agent mode on two cores.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

ITERATIONS = 60
BOUND_MB = 64
TINY = [
    "model=tiny-random",
    "env=frozenlake",
    "env.max_steps=1",
    "rollout.group_size=2",
    "rollout.batch_size=1",
    "rollout.max_new_tokens=3",
    "layers=[3]",
    "eval.episodes=0",
    "trainer.progress=false",
    "logging.tensorboard=false",
    "logging.curves=false",
]


def rss_growth(rows: list[dict]) -> float:
    """Resident MB around iteration 60 minus around iteration 10: medians of five iterations each,
    so that a transient peak (an allocator's arena for one batch) is not taken for a leak."""
    rss = [r["rss_mb"] for r in rows]
    return statistics.median(rss[-5:]) - statistics.median(rss[8:13])


def test_rss_growth_uses_medians():
    flat = [{"rss_mb": 500.0} for _ in range(ITERATIONS)]
    assert rss_growth(flat) == 0
    spiky = [{"rss_mb": 500.0 + (80 if i % 20 == 11 else 0)} for i in range(ITERATIONS)]
    assert rss_growth(spiky) == 0
    leaking = [{"rss_mb": 500.0 + 2 * i} for i in range(ITERATIONS)]
    assert rss_growth(leaking) == 2 * (ITERATIONS - 3) - 2 * 10  # iterations 57 and 10


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["choose", "generate"])
def test_memory_stays_flat_over_60_iterations(tmp_path, mode):
    run = tmp_path / "run"
    args = [*TINY, f"agent.mode={mode}", f"trainer.iterations={ITERATIONS}", f"trainer.output_dir={run}"]
    subprocess.run([sys.executable, "-m", "lamina.cli", "train", *args], check=True, capture_output=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(ITERATIONS))
    peaks = [r["max_rss_mb"] for r in rows]
    assert all(r["rss_mb"] > 50 and r["max_rss_mb"] >= r["rss_mb"] - 1 for r in rows)
    assert peaks == sorted(peaks)  # a high-water mark
    growth = rss_growth(rows)
    assert growth < BOUND_MB, f"{mode}: resident memory grew {growth:.1f} MB from iteration 10 to 60"
