"""ALFWorldEnv on the real ALFWorld games of the shared folder (read in place, never copied).

The fast tests use a handful of small games picked by measuring (load + reset + plan under ~3 s
each); the ``slow`` test runs the planner expert on 30 games of both splits.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
from conftest import shared_path

from lamina.envs.alfworld import SPLITS, TASK_TYPES, ALFWorldEnv, grammar_version
from lamina.envs.registry import register

# One quick game per task type (under json_2.1.1/), picked by timing load + reset + plan: about 1 s
# each, 3 s for the kitchen ones (heat, cool), where other games take up to minutes to plan.
FAST_GAMES = {
    "pick_and_place_simple": "valid_seen/pick_and_place_simple-ToiletPaper-None-ToiletPaperHanger-406/"
    "trial_T20190908_122858_883968",
    "look_at_obj_in_light": "valid_seen/look_at_obj_in_light-CD-None-DeskLamp-314/"
    "trial_T20190907_114323_767231",
    "pick_clean_then_place_in_recep": "valid_train/pick_clean_then_place_in_recep-Cloth-None-Toilet-406/"
    "trial_T20190908_102735_461565",
    "pick_heat_then_place_in_recep": "valid_seen/pick_heat_then_place_in_recep-Mug-None-SideTable-21/"
    "trial_T20190909_090729_088825",
    "pick_cool_then_place_in_recep": "valid_train/pick_cool_then_place_in_recep-Mug-None-CoffeeMachine-14/"
    "trial_T20190906_182932_157770",
    "pick_two_obj_and_place": "valid_seen/pick_two_obj_and_place-SprayBottle-None-GarbageCan-419/"
    "trial_T20190908_164236_518264",
}
QUICK = FAST_GAMES["pick_and_place_simple"]
# 30 games of both splits, five per task type, each under ~8 s to load, reset and plan. Measured
# here on 123 games: the planner's walkthrough won all 122 it planned for (one kitchen took 248 s
# to plan); one more kitchen did not finish planning in 30 s. The sample leaves such games out.
SLOW_GAMES = [
    "valid_seen/look_at_obj_in_light-Bowl-None-DeskLamp-316/trial_T20190908_230702_962704",
    "valid_seen/look_at_obj_in_light-Laptop-None-DeskLamp-328/trial_T20190908_201550_622420",
    "valid_seen/pick_and_place_simple-Candle-None-Cart-401/trial_T20190909_081908_677973",
    "valid_seen/pick_and_place_simple-Mug-None-SideTable-329/trial_T20190909_032340_274147",
    "valid_seen/pick_and_place_simple-SprayBottle-None-Toilet-418/trial_T20190906_190942_706186",
    "valid_seen/pick_clean_then_place_in_recep-Cloth-None-Cabinet-405/trial_T20190907_080903_889497",
    "valid_seen/pick_clean_then_place_in_recep-DishSponge-None-Cart-401/trial_T20190907_024634_972453",
    "valid_seen/pick_clean_then_place_in_recep-SoapBar-None-Toilet-428/trial_T20190907_041436_588106",
    "valid_seen/pick_cool_then_place_in_recep-Apple-None-GarbageCan-2/trial_T20190906_195943_081289",
    "valid_seen/pick_cool_then_place_in_recep-Cup-None-SideTable-21/trial_T20190906_192823_237997",
    "valid_seen/pick_cool_then_place_in_recep-Pot-None-DiningTable-21/trial_T20190909_004531_429065",
    "valid_seen/pick_heat_then_place_in_recep-Apple-None-DiningTable-26/trial_T20190907_060234_011675",
    "valid_seen/pick_heat_then_place_in_recep-Mug-None-Cabinet-3/trial_T20190909_014639_335717",
    "valid_seen/pick_two_obj_and_place-SoapBar-None-GarbageCan-418/trial_T20190909_055649_717880",
    "valid_seen/pick_two_obj_and_place-SprayBottle-None-Toilet-429/trial_T20190907_033843_707544",
    "valid_train/look_at_obj_in_light-CD-None-DeskLamp-307/trial_T20190906_200435_424001",
    "valid_train/look_at_obj_in_light-CreditCard-None-DeskLamp-314/trial_T20190906_201548_667159",
    "valid_train/look_at_obj_in_light-Pen-None-DeskLamp-316/trial_T20190908_061847_951064",
    "valid_train/pick_and_place_simple-Book-None-Desk-313/trial_T20190909_140606_239445",
    "valid_train/pick_and_place_simple-SprayBottle-None-GarbageCan-428/trial_T20190909_101522_923920",
    "valid_train/pick_clean_then_place_in_recep-SoapBar-None-GarbageCan-416/trial_T20190907_024728_127108",
    "valid_train/pick_clean_then_place_in_recep-SoapBar-None-Toilet-420/trial_T20190908_043134_210616",
    "valid_train/pick_cool_then_place_in_recep-Cup-None-Cabinet-26/trial_T20190909_085908_816209",
    "valid_train/pick_cool_then_place_in_recep-Tomato-None-Microwave-14/trial_T20190907_024221_811233",
    "valid_train/pick_heat_then_place_in_recep-Mug-None-CoffeeMachine-21/trial_T20190908_113549_665152",
    "valid_train/pick_heat_then_place_in_recep-Mug-None-SideTable-21/trial_T20190909_090802_375850",
    "valid_train/pick_heat_then_place_in_recep-Tomato-None-Fridge-14/trial_T20190908_091828_220110",
    "valid_train/pick_two_obj_and_place-Candle-None-CounterTop-406/trial_T20190908_045958_916084",
    "valid_train/pick_two_obj_and_place-CreditCard-None-DiningTable-329/trial_T20190918_154222_318527",
    "valid_train/pick_two_obj_and_place-SprayBottle-None-GarbageCan-420/trial_T20190907_174658_354066",
]
BAD_ACTIONS = [
    "",
    "   ",
    "x" * 100_000,
    "aller à la salle de bain 🚽 ünïcødé",
    "<think>hmm</think><action>go to <b>toilet 1</b></action></action>",
    "help",
    "go to toilet 99",
    "GO TO TOILET 1",
    None,
    42,
]


@pytest.fixture(scope="module")
def data() -> Path:
    return shared_path("alfworld", "json_2.1.1").parent


@pytest.fixture(scope="module")
def env(data):
    """One env (one engine) for the module: games are pinned by path, loads are reused."""
    env = ALFWorldEnv(data_path=data, split="eval_in_distribution")
    yield env
    env.close()


def game_dir(data: Path, name: str) -> Path:
    """A game folder from its path under json_2.1.1/."""
    return data / "json_2.1.1" / name


def play_expert(env: ALFWorldEnv, game: Path, max_steps: int = 50) -> tuple[list[float], dict]:
    """Plays the planner expert from the start of ``game``; returns the rewards and the last info."""
    _, info = env.reset(options={"game": game})
    rewards = []
    for _ in range(max_steps):
        action = env.expert_action()
        assert action is not None and action in info["admissible_actions"], (action, game)
        _, reward, terminated, truncated, info = env.step(action)
        assert info["action_valid"] and not truncated
        rewards.append(reward)
        if terminated:
            break
    return rewards, info


# -- expert ------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_expert_wins_each_task_type(env, data, task_type):
    rewards, info = play_expert(env, game_dir(data, FAST_GAMES[task_type]))
    assert info["won"] and info["task_type"] == task_type
    assert rewards[-1] == 10.0 and sum(rewards) == 10.0
    assert env.expert_action() is None


def test_expert_recovers_after_the_agent_diverges(env, data):
    _, info = env.reset(options={"game": game_dir(data, QUICK)})
    planned = env.expert_action()
    detour = next(a for a in info["admissible_actions"] if a.startswith("go to") and a != planned)
    _, _, _, _, info = env.step(detour)
    _, _, _, _, info = env.step("inventory")
    for _ in range(20):
        action = env.expert_action()
        assert action in info["admissible_actions"]
        _, reward, terminated, _, info = env.step(action)
        if terminated:
            break
    assert info["won"] and reward == 10.0


# -- Gymnasium semantics -----------------------------------------------------------------------
def test_rewards_are_per_step_and_scaled(data):
    env = ALFWorldEnv(data_path=data, split="eval_in_distribution", won_reward=2.5)
    rewards, info = play_expert(env, game_dir(data, QUICK))
    assert rewards == [0.0] * (len(rewards) - 1) + [2.5]
    # After the end nothing changes: no second reward, still terminated, the engine is not touched.
    anchor = info["anchor"]
    obs, reward, terminated, truncated, info = env.step(info["admissible_actions"][0])
    assert (reward, terminated, truncated, info["action_valid"]) == (0.0, True, False, False)
    assert info["anchor"] == anchor and info["won"] and "reset" in obs
    env.close()


def test_reset_info_and_task(env, data):
    obs, info = env.reset(options={"game": game_dir(data, QUICK)})
    assert info["task"] == "put a toiletpaper in toiletpaperhanger."
    assert obs.startswith("You are in the middle of a room") and obs.endswith(info["task"])
    assert "help" not in info["admissible_actions"] and "look" in info["admissible_actions"]
    assert info["won"] is False and info["action_valid"] is True
    assert isinstance(info["anchor"], tuple) and hash(info["anchor"])
    assert any(fact.startswith("atlocation(agent1") for fact in info["anchor"])
    assert not any(fact.startswith("not_") for fact in info["anchor"])


def test_invalid_actions_change_nothing(env, data):
    _, info = env.reset(options={"game": game_dir(data, QUICK)})
    obs, _, _, _, info = env.step("go to toilet 1")
    before = info
    for action in BAD_ACTIONS:
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["action_valid"] is False, action
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert info["anchor"] == before["anchor"]
        assert info["admissible_actions"] == before["admissible_actions"]
        assert "not an admissible action" in obs and len(obs) < 120
    # The engine never saw them: the next valid step behaves as in an untouched episode.
    obs_after, *_ = env.step("look")
    env.reset(options={"game": game_dir(data, QUICK)})
    env.step("go to toilet 1")
    assert env.step("look")[0] == obs_after
    assert env.step("  look \n")[4]["action_valid"]  # surrounding whitespace is ignored


def test_equal_states_give_equal_anchors(env, data):
    _, info = env.reset(options={"game": game_dir(data, QUICK)})
    looked = [env.step("look")[4]["anchor"] for _ in range(2)]
    assert looked[0] == looked[1] == info["anchor"]  # look and inventory change nothing
    assert env.step("inventory")[4]["anchor"] == info["anchor"]
    goto = env.expert_action()  # "go to <where the toilet paper is>"
    there = env.step(goto)[4]
    assert there["anchor"] != info["anchor"]
    elsewhere = next(a for a in there["admissible_actions"] if a.startswith("go to") and a != goto)
    env.step(elsewhere)
    assert env.step(goto)[4]["anchor"] == there["anchor"]  # same place again, same state
    acted = env.step(env.expert_action())[4]  # "open cabinet 1": the world changes
    assert acted["action_valid"] and acted["anchor"] != there["anchor"]


def test_seed_picks_the_game_deterministically(data):
    kwargs = dict(data_path=data, split="eval_in_distribution", task_types=["look_at_obj_in_light"])
    first, second = ALFWorldEnv(**kwargs), ALFWorldEnv(**kwargs)
    index = first.games.index(game_dir(data, FAST_GAMES["look_at_obj_in_light"]))
    seed = index + len(first.games)  # seed s plays game s % len(games)
    runs = []
    for env in (first, second):
        obs, info = env.reset(seed=seed)
        trace = [(obs, info["task"], info["game"], info["anchor"])]
        for step in range(4):
            action = info["admissible_actions"][(7 * step + 3) % len(info["admissible_actions"])]
            obs, reward, _, _, info = env.step(action)
            trace.append((obs, reward, info["anchor"]))
        runs.append(trace)
        env.close()
    assert runs[0] == runs[1]
    assert runs[0][0][2] == str(game_dir(data, FAST_GAMES["look_at_obj_in_light"]))


def test_game_option_and_task_type_filter(data):
    env = ALFWorldEnv(data_path=data, split="eval_in_distribution", task_types=["pick_two_obj_and_place"])
    assert env.games and all(g.parent.name.startswith("pick_two_obj_and_place-") for g in env.games)
    everything = ALFWorldEnv(data_path=data, split="eval_in_distribution")
    assert len(everything.games) > len(env.games)
    with pytest.raises(ValueError, match="out of range"):
        env.reset(options={"game": len(env.games)})
    with pytest.raises(ValueError, match="not a game folder"):
        env.reset(options={"game": str(data)})


def test_gymnasium_registration_and_truncation(data):
    env_id = register("ALFWorld-v0", "lamina.envs.alfworld:ALFWorldEnv", max_episode_steps=50)
    env = gym.make(env_id, data_path=data, split="eval_in_distribution")
    assert env.spec.max_episode_steps == 50
    env.close()
    env = gym.make(env_id, data_path=data, split="eval_in_distribution", max_episode_steps=3)
    env.reset(options={"game": game_dir(data, QUICK)})
    truncated = [env.step("look")[3] for _ in range(3)]
    assert truncated == [False, False, True]
    env.close()


def test_passes_gymnasium_env_checker(data):
    from gymnasium.utils.env_checker import check_env

    env = ALFWorldEnv(data_path=data, split="eval_in_distribution")
    env.games = [game_dir(data, QUICK)]  # every seed plays the quick game
    check_env(env, skip_render_check=True)
    env.close()


# -- data path and arguments -------------------------------------------------------------------
def test_train_split_falls_back_to_valid_train(data):
    env = ALFWorldEnv(data_path=data, split="train")
    expected = "train" if (data / "json_2.1.1" / "train").is_dir() else "valid_train"
    assert env.split_dir.name == expected and env.games
    # data_path may also name the json_2.1.1 folder itself.
    assert ALFWorldEnv(data_path=data / "json_2.1.1", split="train").games == env.games


def test_missing_data_names_paths_and_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as error:
        ALFWorldEnv(data_path=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "json_2.1.1" / "valid_seen") in message and "alfworld-download" in message
    assert "ALFWORLD_DATA" in message

    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "from_env"))
    with pytest.raises(FileNotFoundError, match="from_env.*ALFWORLD_DATA"):
        ALFWorldEnv()

    monkeypatch.delenv("ALFWORLD_DATA")
    monkeypatch.setenv("LAMINA_SHARED", str(tmp_path / "shared"))
    (tmp_path / "shared" / "alfworld").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"shared/alfworld \(shared data folder"):
        ALFWorldEnv()  # the shared data folder comes before alfworld's own default

    monkeypatch.setenv("LAMINA_SHARED", str(tmp_path / "no_shared"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match=r"home/\.cache/alfworld"):
        ALFWorldEnv()


def test_missing_split_names_the_present_ones(data, tmp_path):
    # A data folder holding only one valid_seen game, linked from the shared folder.
    name = FAST_GAMES["pick_and_place_simple"]
    link = tmp_path / "json_2.1.1" / name
    link.parent.mkdir(parents=True)
    link.symlink_to(game_dir(data, name), target_is_directory=True)
    assert ALFWorldEnv(data_path=tmp_path, split="eval_in_distribution").games == [link]
    for split in ("train", "eval_out_of_distribution"):
        with pytest.raises(FileNotFoundError, match="present there: eval_in_distribution$"):
            ALFWorldEnv(data_path=tmp_path, split=split)


def test_bad_arguments_list_the_valid_values(data):
    with pytest.raises(ValueError, match=", ".join(SPLITS)):
        ALFWorldEnv(data_path=data, split="valid_seen")
    with pytest.raises(ValueError, match="pick_two_obj_and_place"):
        ALFWorldEnv(data_path=data, task_types=["pick_and_place", "look_at_obj_in_light"])


# -- slow ----------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_GAMES)
def test_expert_wins_sample_of_both_splits(env, data, name):
    rewards, info = play_expert(env, game_dir(data, name))
    assert info["won"] and rewards[-1] == 10.0 and sum(rewards) == 10.0


# --------------------------------------------------------------------------- both data layouts

PUT_211 = ('template :: "put {o} in/on {r}";', '"You put the {o.name} in/on the {r.name}."')
MOVE_213 = ('template :: "move {o} to {r}";', '"You move the {o.name} to the {r.name}."')


def _to_213(source: Path, root: Path, relative: str) -> Path:
    """Writes game ``relative`` of the 2.1.1 folder ``source`` as a json_2.1.3 game under ``root``:
    the same PDDL, with the grammar's ``put X in/on Y`` turned into ``move X to Y`` as the
    ``alfworld`` package's own ``alfred.twl2`` has it."""
    import json

    game = json.loads((source / relative / "game.tw-pddl").read_text())
    for old, new in zip(PUT_211, MOVE_213, strict=True):
        assert old in game["grammar"]
        game["grammar"] = game["grammar"].replace(old, new)
    target = root / "json_2.1.3" / relative
    target.mkdir(parents=True)
    (target / "game.tw-pddl").write_text(json.dumps(game))
    (target / "traj_data.json").write_text((source / relative / "traj_data.json").read_text())
    return target


def test_installed_alfworld_grammar_is_the_213_command_set():
    import alfworld.info

    grammar = (Path(alfworld.info.ALFRED_TWL2_PATH)).read_text()
    assert all(text in grammar for text in MOVE_213) and not any(text in grammar for text in PUT_211)


def test_both_layouts_load_and_play(tmp_path):
    data = shared_path("alfworld", "json_2.1.1")
    _to_213(data, tmp_path, QUICK)
    old = ALFWorldEnv(data_path=data, split="eval_in_distribution", task_types=["pick_and_place_simple"])
    new = ALFWorldEnv(data_path=tmp_path, split="eval_in_distribution")
    assert (old.data_version, new.data_version) == ("json_2.1.1", "json_2.1.3")
    assert (
        ALFWorldEnv(data_path=tmp_path / "json_2.1.3", split="eval_in_distribution").data_version
        == "json_2.1.3"
    )
    plays = {}
    for env, game in ((old, data / QUICK), (new, 0)):
        _, info = env.reset(options={"game": game})
        actions = []
        while not info["won"] and len(actions) < 30:
            action = env.expert_action()
            assert action is not None and action in info["admissible_actions"]
            _, reward, terminated, _, info = env.step(action)
            actions.append(action)
        assert info["won"] and terminated and reward == 10.0
        plays[env.data_version] = actions
    assert any(a.startswith("put ") and " in/on " in a for a in plays["json_2.1.1"])
    # the same walkthrough, in each layout's words
    as_213 = [a.replace("put ", "move ", 1).replace(" in/on ", " to ") for a in plays["json_2.1.1"]]
    assert plays["json_2.1.3"] == as_213


def test_data_version_follows_the_games_grammar_not_the_folder_name(tmp_path):
    data = shared_path("alfworld", "json_2.1.1")
    _to_213(data, tmp_path / "download", QUICK)
    (tmp_path / "download" / "json_2.1.3").rename(tmp_path / "json_2.1.1")  # move grammar, 2.1.1 name
    env = ALFWorldEnv(data_path=tmp_path, split="eval_in_distribution")
    assert env.data_version == "json_2.1.3"
    assert grammar_version(data / QUICK / "game.tw-pddl") == "json_2.1.1"


def test_data_version_picks_a_layout_and_is_checked(tmp_path):
    data = shared_path("alfworld", "json_2.1.1")
    _to_213(data, tmp_path, QUICK)
    (tmp_path / "json_2.1.1").symlink_to(data)
    assert ALFWorldEnv(data_path=tmp_path, split="eval_in_distribution").data_version == "json_2.1.1"
    env = ALFWorldEnv(data_path=tmp_path, split="eval_in_distribution", data_version="json_2.1.3")
    assert env.data_version == "json_2.1.3" and len(env.games) == 1
    with pytest.raises(ValueError, match="data_version='2.1.3'"):
        ALFWorldEnv(data_path=tmp_path, data_version="2.1.3")
