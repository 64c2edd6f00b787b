"""The per-step rollout against a rollout-server client whose ``generate`` runs HF on the CPU
(verl's ``LLMServerClient.generate`` interface), on TextWorld and ALFWorld: one DataProto row per
(trajectory, step), with the right ids, masks, rewards, penalties and anchors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import shared_path
from verl_cpu import ActionFirstClient, first_admissible

from lamina.agents.parsing import parse_action
from lamina.agents.prompt import PromptConfig
from lamina.envs.registry import make
from lamina.envs.runner import EnvGroupRunner
from lamina.integrations.verl.rollout import play_steps, to_dataproto

PENALTY = 0.1
SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 6, "logprobs": True}


def play(env_name, env_kwargs, seeds, group_size, max_steps, client, tokenizer):
    with EnvGroupRunner(
        env_name, len(seeds) * group_size, num_workers=0, env_kwargs=env_kwargs, max_episode_steps=max_steps
    ) as runner:
        return asyncio.run(
            play_steps(
                client,
                tokenizer,
                runner,
                seeds,
                group_size,
                max_steps=max_steps,
                prompt_cfg=PromptConfig(history=2),
                sampling_params=SAMPLING,
                invalid_penalty=PENALTY,
                uid_prefix="it0-",
            )
        )


def check_rows(rows, batch, tokenizer, seeds, group_size):
    """What every per-step batch must satisfy, whatever the environment."""
    n_traj = len(seeds) * group_size
    assert len(batch) == len(rows) == int(rows.episode_lengths.sum())
    nt, tb = batch.non_tensor_batch, batch.batch
    for t in range(n_traj):
        mine = [i for i in range(len(rows)) if nt["traj_uid"][i] == f"it0-t{t}"]
        assert [nt["step_id"][i] for i in mine] == list(range(len(mine)))  # steps 0..len-1, in order
        assert {nt["uid"][i] for i in mine} == {f"it0-g{t // group_size}"}  # the group is the task
    # the copies of a task start in one state: one anchor at step 0 per group
    for g in range(len(seeds)):
        starts = {
            nt["anchor"][i] for i in range(len(rows)) if nt["uid"][i] == f"it0-g{g}" and nt["step_id"][i] == 0
        }
        assert len(starts) == 1
    for i in range(len(rows)):
        p, r = len(rows.prompt_ids[i]), len(rows.response_ids[i])
        assert int(tb["response_mask"][i].sum()) == r and int(tb["attention_mask"][i].sum()) == p + r
        width_p = tb["prompts"].shape[1]
        assert tb["input_ids"][i, width_p - p : width_p].tolist() == rows.prompt_ids[i]  # left-padded prompt
        assert tb["responses"][i, :r].tolist() == rows.response_ids[i]  # right-padded response
        assert tb["rm_scores"][i, r - 1].item() == pytest.approx(rows.rewards[i])  # reward on the last token
        assert tb["rm_scores"][i].abs().sum().item() == pytest.approx(abs(rows.rewards[i]))
        assert tb["position_ids"][i, width_p - p].item() == 0
        text = tokenizer.decode(rows.prompt_ids[i])
        assert "Your task:" in text and "Admissible actions:" in text
        valid = parse_action(rows.texts[i], None).valid
        assert nt["action_valid"][i] == rows.action_valid[i] and (valid or not rows.action_valid[i])
    assert "rollout_log_probs" in tb.keys()


@pytest.mark.slow
def test_textworld_rows_ids_masks_and_anchors(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    env_kwargs = {"challenge": "tw-treasure_hunter", "settings": {"level": 1}}
    seeds, group_size, max_steps = [0, 1], 2, 3
    client = ActionFirstClient(model, tokenizer, first_admissible)
    rows = play("textworld", env_kwargs, seeds, group_size, max_steps, client, tokenizer)
    batch = to_dataproto(rows, tokenizer.pad_token_id, max_prompt_length=4096, max_response_length=64)
    check_rows(rows, batch, tokenizer, seeds, group_size)
    assert rows.action_valid.any() and not rows.action_valid.all()
    # concurrency: each lock-step sent every active episode's request before any answer came back
    assert len(client.requests) == len(rows)
    # rewards: environment reward minus the penalty on invalid steps; anchors: replay each
    # trajectory's actions on a fresh environment and meet the same states and rewards
    env = make("textworld", max_episode_steps=max_steps, **env_kwargs)
    for t in range(len(seeds) * group_size):
        mine = [i for i in range(len(rows)) if rows.traj_uids[i] == f"it0-t{t}"]
        _, info = env.reset(seed=seeds[t // group_size])
        for i in mine:
            assert batch.non_tensor_batch["anchor"][i] == info["anchor"]
            parsed = parse_action(rows.texts[i], info["admissible_actions"])
            _, reward, _, _, info = env.step(parsed.action)
            expected = reward - (0.0 if parsed.valid and info["action_valid"] else PENALTY)
            assert rows.rewards[i] == pytest.approx(expected)
    env.close()


@pytest.mark.slow
def test_alfworld_rows_ids_masks_and_anchors(tiny_model_and_tokenizer):
    data = shared_path("alfworld", "json_2.1.1").parent
    model, tokenizer = tiny_model_and_tokenizer
    env_kwargs = {
        "data_path": str(data),
        "split": "eval_in_distribution",
        "task_types": ["pick_and_place_simple"],
    }
    seeds, group_size = [0], 2
    client = ActionFirstClient(model, tokenizer, first_admissible)
    rows = play("alfworld", env_kwargs, seeds, group_size, 2, client, tokenizer)
    batch = to_dataproto(rows, tokenizer.pad_token_id, max_prompt_length=4096, max_response_length=64)
    check_rows(rows, batch, tokenizer, seeds, group_size)
    anchors = batch.non_tensor_batch["anchor"]
    assert anchors.shape == (len(rows),)  # one object per row, however the anchor is built
    # an invalid action leaves the state unchanged: that trajectory's next row has the same anchor
    checked = 0
    for t in range(group_size):
        mine = [i for i in range(len(rows)) if rows.traj_uids[i] == f"it0-t{t}"]
        for i, j in zip(mine, mine[1:], strict=False):
            if not rows.action_valid[i]:
                assert anchors[i] == anchors[j]
                checked += 1
    assert checked >= 1
    assert np.isfinite(rows.rewards).all()


class _OverlapClient:
    """Answers every request with the first admissible action after a short await, counting how
    many requests are waiting at once: requests sent one after another never overlap."""

    def __init__(self, tokenizer):
        self.tokenizer, self.waiting, self.most_waiting = tokenizer, 0, 0

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl_cpu import TokenOutput

        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        await asyncio.sleep(0.01)
        self.waiting -= 1
        action = first_admissible(self.tokenizer.decode(prompt_ids))
        ids = self.tokenizer.encode(f"<action>{action}</action>", add_special_tokens=False)
        return TokenOutput(token_ids=ids, log_probs=[-1.0] * len(ids), stop_reason="completed")


def test_requests_of_a_lock_step_overlap_and_env_calls_leave_the_event_loop(tokenizer, monkeypatch):
    import threading

    loop_threads, env_threads = set(), set()
    for name in ("reset", "step"):
        original = getattr(EnvGroupRunner, name)

        def recording(self, *args, _original=original, **kwargs):
            env_threads.add(threading.get_ident())
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(EnvGroupRunner, name, recording)
    client = _OverlapClient(tokenizer)
    original_generate = client.generate

    async def generate(*args, **kwargs):
        loop_threads.add(threading.get_ident())
        return await original_generate(*args, **kwargs)

    client.generate = generate
    seeds, group_size = [0, 1, 2], 2
    rows = play("frozenlake", {}, seeds, group_size, 3, client, tokenizer)
    assert client.most_waiting == len(seeds) * group_size  # the first lock-step's requests all at once
    assert len(rows) > 0 and env_threads and not env_threads & loop_threads
