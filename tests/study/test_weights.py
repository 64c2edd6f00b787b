"""Weight change per block of a run, against a hand-made change of one tensor."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from lamina.agents.models import ModelConfig
from lamina.cli import main
from lamina.study.weights import weight_change
from lamina.trainer.checkpoint import save_checkpoint
from lamina.trainer.config import RunConfig


def test_one_changed_tensor(tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        OmegaConf.to_yaml(OmegaConf.structured(RunConfig(model=ModelConfig(name="tiny-random"))))
    )
    params = dict(tiny_model.named_parameters())
    names = [n for n in params if n.startswith("model.layers.2.")]
    block_norm = math.sqrt(sum(float(params[n].detach().pow(2).sum()) for n in names))
    block_size = sum(params[n].numel() for n in names)
    target = "model.layers.2.mlp.down_proj.weight"
    with torch.no_grad():
        params[target][:3] += 0.5  # 3 rows changed by 0.5 each
    changed = 3 * params[target].shape[1]
    optimizer = torch.optim.AdamW([params[n] for n in names])
    save_checkpoint(run, 0, tiny_model, names, optimizer, {})
    rows, num_blocks, _ = weight_change(run)
    by_block = {r["block"]: r for r in rows}
    assert num_blocks == 4 and set(by_block) == {0, 1, 2, 3}
    assert by_block[2]["relative_change"] == pytest.approx(math.sqrt(changed * 0.25) / block_norm, rel=1e-5)
    assert by_block[2]["fraction_changed"] == pytest.approx(changed / block_size)
    assert by_block[2]["trained_tensors"] == len(names)
    assert all(
        by_block[k]["relative_change"] == 0 and by_block[k]["fraction_changed"] == 0 for k in (0, 1, 3)
    )
    telemetry = {"grad_norm": {"2": 0.5}, "update_ratio": {"2": 1e-3}, "relative_change": {"2": 2e-3}}
    records = [{"iteration": i, "telemetry": telemetry} for i in range(3)] + [
        {"kind": "eval", "iteration": 3}
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["weights", str(run)]) == 0
    lines = (run / "telemetry.csv").read_text().splitlines()
    assert lines[0] == "iteration,block,depth,grad_norm,update_ratio,relative_change"
    assert lines[1:] == [f"{i},2,0.666667,0.5,0.001,0.002" for i in range(3)]
    for name in ("weight_change.csv", "weight_change.md", "weight_change.png", "telemetry.png"):
        assert (run / name).stat().st_size > 0
    assert main(["weights", str(tmp_path / "nothing")]) == 2
    assert "neither a run folder" in capsys.readouterr().err
