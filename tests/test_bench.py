"""`lamina bench --quick` (what CI runs): the table is produced and every ratio is finite."""

from __future__ import annotations

import math
import re

import pytest

from lamina.commands.benchmark import parse_bench_args, run_bench


def test_bad_arguments_name_the_valid_ones():
    with pytest.raises(ValueError, match="unknown module 'speed'; valid: update, iteration"):
        parse_bench_args(["only=speed"])
    with pytest.raises(ValueError, match="valid: --quick, only="):
        parse_bench_args(["--fast"])
    assert parse_bench_args(["--quick", "only=update,envs"])[:2] == (True, ["update", "envs"])


@pytest.mark.slow
def test_quick_bench_writes_a_table_with_finite_ratios(tmp_path):
    out = tmp_path / "bench.md"
    table = run_bench(["--quick", f"out={out}"])
    assert out.read_text().strip() == table
    lines = table.splitlines()
    assert lines[0] == "| what | baseline | lamina | ratio | target | met | machine |"
    rows = [line.split(" | ") for line in lines[2:]]
    # update 3, iteration 1, rollout 2, envs 1, and trl 2 where TRL is installed (lamina[bench])
    assert len(rows) >= 7
    for cells in rows:
        ratio = re.fullmatch(r"([0-9.e+-]+)x", cells[3])
        assert ratio and math.isfinite(float(ratio.group(1))) and float(ratio.group(1)) > 0, cells
