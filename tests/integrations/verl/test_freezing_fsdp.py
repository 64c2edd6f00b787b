"""Layer selection inside verl's FSDP2 actor: a real ``update_actor`` on the CPU test platform.

Each case runs ``actor_update_scenario.py`` in its own process (its own gloo group and verl
platform), on a random 3-block Llama.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.integrations.verl.freezing import LayerSelection, freeze_module

SCENARIO = Path(__file__).parent / "actor_update_scenario.py"


def run_scenario(tmp_path: Path, layers, modules: str = "all") -> dict:
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCENARIO), str(out), json.dumps(layers), modules],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_update_actor_trains_only_the_selected_block(tmp_path):
    result = run_scenario(tmp_path, [1])
    assert result["engine"] == "LayerSelectingFSDPEngine"
    block = [n for n in result["names"] if n.startswith("model.layers.1.")]
    assert result["trainable"] == block and len(block) == 9
    # the optimizer holds exactly the trainable tensors
    assert result["optimizer_params"] == block and result["optimizer_tensors"] == len(block)
    # every trained tensor moved; every other tensor (embeddings, blocks 0 and 2, norm, head) is
    # bit-identical after the update
    assert sorted(result["changed"]) == sorted(block)
    assert result["grad_norm"] > 0
    assert result["old_log_probs_shape"] == [4, 5]
    # what the driver checks to know the update ran on lamina's engine (never all blocks silently)
    assert result["trainable_metric"] == [float(len(block))]


def test_selection_travels_as_json_and_maps_through_lamina_grammar(tiny_model):
    selection = LayerSelection(layers="middle:2", modules="attn", lr_multipliers={1: 2.0})
    back = LayerSelection.from_env({"LAMINA_VERL_LAYERS": selection.to_env()})
    assert back == selection
    names = freeze_module(tiny_model, back)  # tiny model: 4 blocks -> middle:2 = blocks 1, 2
    assert names and all(n.split(".")[2] in ("1", "2") and ".self_attn." in n for n in names)
    assert [n for n, p in tiny_model.named_parameters() if p.requires_grad] == names
    assert LayerSelection.from_env({}) is None


def test_bad_layer_spec_names_the_depth(tiny_model):
    with pytest.raises(ValueError, match="L=4"):
        freeze_module(tiny_model, LayerSelection(layers=[9]))
