"""reasoning-gym tasks as single-turn environments: seeds, the verifier's score as reward, won,
unreadable answers, the expert on every task, composite mixes, configs and the runner."""

from __future__ import annotations

import pytest

pytest.importorskip("reasoning_gym", reason="env=rg needs reasoning-gym (pip install reasoning-gym==0.1.25)")

import reasoning_gym  # noqa: E402

from lamina.envs import make  # noqa: E402
from lamina.envs.reasoning_gym import (  # noqa: E402
    BROKEN_VERIFIERS,
    CHUNK_SIZE,
    ReasoningGymEnv,
    task_names,
)
from lamina.envs.runner import EnvGroupRunner  # noqa: E402

HELD_OUT = 100_000  # configs/env/rg.yaml's eval_seed_offset
# Tasks whose items carry no reference answer: the verifier checks the answer itself.
NO_REFERENCE = {"boxnet", "graph_color", "propositional_logic", "rubiks_cube", "rush_hour"}


def answer(env: ReasoningGymEnv, seed: int, text: str) -> tuple[str, float, dict]:
    env.reset(seed=seed)
    obs, reward, terminated, truncated, info = env.step(text)
    assert terminated and not truncated  # one attempt, whatever it is
    return obs, reward, info


def test_registered_as_rg_and_needs_a_known_task():
    assert make("rg", task="chain_sum").spec.id == "lamina/ReasoningGym-v0"
    with pytest.raises(ValueError, match=r"needs env.kwargs.task.*chain_sum"):
        ReasoningGymEnv()
    with pytest.raises(ValueError, match=r"no task 'chain_summ'.*basic_arithmetic"):
        ReasoningGymEnv(task="chain_summ")


def test_same_seed_same_item_in_fresh_envs_and_across_chunks():
    a, b = ReasoningGymEnv(task="chain_sum"), ReasoningGymEnv(task="chain_sum")
    seeds = [0, 7, CHUNK_SIZE - 1, CHUNK_SIZE, 5 * CHUNK_SIZE + 3, HELD_OUT + 7]
    questions = []
    for seed in seeds:
        obs, info = a.reset(seed=seed)
        assert (obs, info) == b.reset(seed=seed) == a.reset(seed=seed)
        assert info["anchor"] == info["task"] == obs and info["admissible_actions"] is None
        questions.append(obs)
    assert len(set(questions)) == len(seeds)
    # Seed s is reasoning-gym's item s of one big dataset seeded 0 (generators draw Random(seed + i)).
    whole = reasoning_gym.create_dataset("chain_sum", seed=0, size=HELD_OUT + 10)
    assert questions == [whole[s]["question"] for s in seeds]


def test_held_out_seeds_pose_other_items():
    env = ReasoningGymEnv(task="leg_counting")
    train = {env.reset(seed=s)[0] for s in range(200)}
    held_out = {env.reset(seed=HELD_OUT + s)[0] for s in range(200)}
    assert len(train) == len(held_out) == 200 and not train & held_out


def test_reset_without_a_seed_draws_from_np_random():
    env = ReasoningGymEnv(task="chain_sum")
    env.reset(seed=3)
    first = env.reset()[0]
    env.reset(seed=3)
    assert env.reset()[0] == first


def test_right_answer_wins_with_reward_1():
    env = ReasoningGymEnv(task="chain_sum")
    env.reset(seed=4)
    right = env.expert_action()
    assert right is not None and right.lstrip("-").isdigit()
    obs, reward, info = answer(env, 4, f"  {right} ")
    assert (reward, info["won"], info["action_valid"], info["score"]) == (1.0, True, True, 1.0)
    assert obs == "Correct." and env.expert_action() is None
    obs, reward, terminated, _, info = env.step(right)  # a second answer: over, nothing more
    assert terminated and reward == 0.0 and not info["action_valid"] and "reset" in obs


def test_wrong_answer_is_valid_and_scores_what_the_verifier_says():
    env = ReasoningGymEnv(task="chain_sum")
    env.reset(seed=4)
    wrong = str(int(env.expert_action()) + 1)
    obs, reward, info = answer(env, 4, wrong)
    assert (reward, info["won"], info["action_valid"]) == (0.0, False, True) and "Incorrect" in obs


def test_partial_credit_is_the_reward_and_does_not_win():
    env = ReasoningGymEnv(task="prime_factorization")
    env.reset(seed=2)
    assert env.expert_action() == "2 × 2 × 5 × 7 × 7"
    # The right product with a factor that is not prime: reasoning-gym gives 0.5 (1.0 needs primes).
    _, reward, info = answer(env, 2, "4 × 5 × 7 × 7")
    assert reward == info["score"] == 0.5 and not info["won"] and info["action_valid"]


def test_answer_tags_are_read_as_reasoning_gym_does():
    env = ReasoningGymEnv(task="chain_sum")
    env.reset(seed=4)
    right = env.expert_action()
    _, reward, info = answer(
        env, 4, f"<think>1 + 1 = 2</think> so <answer>0</answer> no: <answer>{right}</answer>"
    )
    assert reward == 1.0 and info["won"]


@pytest.mark.parametrize(
    ("task", "text", "why"),
    [
        ("chain_sum", "", "empty"),
        ("chain_sum", "   <answer> </answer>", "empty"),
        ("chain_sum", "ünïcødé ☃", "no number"),
        ("chain_sum", "<think>hmm</think><action>open the door</action>", "no number"),
        ("chain_sum", "7" * 10_001, "longer than"),
        ("prime_factorization", "abc", "verifier could not read it"),  # its verifier raises
    ],
)
def test_unreadable_answers_are_invalid_and_earn_nothing(task, text, why):
    obs, reward, info = answer(ReasoningGymEnv(task=task), 1, text)
    assert reward == 0.0 and info["score"] == 0.0 and not info["action_valid"] and not info["won"]
    assert why in obs and len(obs) < 200


def test_credited_text_is_valid_even_without_a_number():
    # countdown's verifier gives 0.01 to any text it cannot use: credit, so a valid answer.
    _, reward, info = answer(ReasoningGymEnv(task="countdown"), 1, "no idea")
    assert reward == info["score"] == 0.01 and info["action_valid"] and not info["won"]


def test_broken_verifier_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="any non-empty answer scores 1.0"):
        ReasoningGymEnv(task="game_of_life_halting")


@pytest.mark.parametrize("task", [t for t in task_names() if t not in BROKEN_VERIFIERS and t != "composite"])
def test_expert_wins_every_task_with_a_reference(task):
    env = ReasoningGymEnv(task=task)
    _, info = env.reset(seed=HELD_OUT + 7)
    assert info["task"].strip() and info["task_type"] == task and info["rg_index"] == 7
    expert = env.expert_action()
    if task in NO_REFERENCE:
        assert expert is None
        return
    assert expert is not None
    _, reward, terminated, _, info = env.step(expert)
    assert (reward, terminated, info["won"], info["action_valid"]) == (1.0, True, True, True)


def test_config_reaches_the_generator_and_bad_configs_fail_at_construction():
    env = ReasoningGymEnv(task="chain_sum", config={"min_terms": 5, "max_terms": 5, "min_digits": 1})
    question, _ = env.reset(seed=0)
    assert question.count("+") + question.count("-") >= 4  # five terms
    with pytest.raises(ValueError, match=r"unknown config keys \['min_term'\].*min_terms"):
        ReasoningGymEnv(task="chain_sum", config={"min_term": 5})
    with pytest.raises(ValueError, match="draws reasoning-gym's seed and size"):
        ReasoningGymEnv(task="chain_sum", config={"seed": 1})
    with pytest.raises(ValueError, match="refused config"):
        ReasoningGymEnv(task="chain_sum", config={"min_terms": 5, "max_terms": 2})


def test_composite_mixes_tasks_and_names_each_item_s_type():
    config = {
        "datasets": [
            {"name": "chain_sum", "weight": 1, "config": {}},
            {"name": "gcd", "weight": 1, "config": {"min_numbers": 2, "max_numbers": 2}},
        ]
    }
    env = ReasoningGymEnv(task="composite", config=config)
    types = set()
    for seed in range(12):
        _, info = env.reset(seed=seed)
        types.add(info["task_type"])
        _, reward, _, _, info = env.step(env.expert_action())
        assert reward == 1.0 and info["won"]
    assert types == {"chain_sum", "gcd"}


def test_runner_workers_give_the_in_process_results():
    seeds, kwargs = [3, 3, 100_003], {"task": "basic_arithmetic"}
    with EnvGroupRunner("rg", 3, num_workers=0, env_kwargs=kwargs) as local:
        expected = local.reset(seeds), local.expert_actions()
        expected_step = local.step(expected[1])
    with EnvGroupRunner("rg", 3, num_workers=1, env_kwargs=kwargs) as workers:
        assert (workers.reset(seeds), workers.expert_actions()) == expected
        assert workers.step(expected[1]) == expected_step
    assert expected_step[1] == [1.0, 1.0, 1.0] and all(i["won"] for i in expected_step[4])
