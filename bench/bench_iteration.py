"""A default-job iteration (rollout + update) before and after issue 9's optimizations.

    python -m bench.bench_iteration [--quick]

Both sides run the default job (SmolLM2-135M, TextWorld, 2 tasks x 4 copies, choose mode, block 15
alone, GRPO with its KL reference) for two iterations with the same seeds, in fresh processes; the
second iteration is timed (the first also builds games and warms caches). The "before" side is the
same code with the frozen prefix off and every row scored on its own (``bench.workload.build``).
"""

from __future__ import annotations

import argparse

from bench.common import Row, in_fresh_process
from bench.workload import ONE_BLOCK, timed_iterations


def iteration_seconds(quick: bool, optimized: bool) -> tuple[float, float]:
    row = timed_iterations(quick, optimized, 2, f"layers={ONE_BLOCK[quick]}")[-1]
    return row["rollout_s"], row["update_s"]


def rows(quick: bool) -> list[Row]:
    (b_roll, b_upd), _ = in_fresh_process(iteration_seconds, quick, False)
    (a_roll, a_upd), _ = in_fresh_process(iteration_seconds, quick, True)
    before, after = b_roll + b_upd, a_roll + a_upd
    return [
        Row(
            "default-job iteration (rollout + update), after vs before",
            f"{before:.1f} s ({b_roll:.1f} + {b_upd:.1f})",
            f"{after:.1f} s ({a_roll:.1f} + {a_upd:.1f})",
            after / before,
            "<= 0.5x",
            after / before <= 0.5,
        )
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in rows(parser.parse_args().quick):
        print(" | ".join(row.cells()))
