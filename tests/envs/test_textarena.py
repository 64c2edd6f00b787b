"""TextArena's single-player games: which run offline, seeds (each environment its own random
streams), outcomes as rewards, invalid moves that change nothing and never end a game, the Tower of
Hanoi expert, and the runner."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("textarena", reason="env=textarena needs TextArena (pip install textarena==0.7.4)")

from textarena.envs.registration import ENV_REGISTRY  # noqa: E402

from lamina.envs import make  # noqa: E402
from lamina.envs.runner import EnvGroupRunner  # noqa: E402
from lamina.envs.textarena import (  # noqa: E402
    EXPERTS,
    LEGAL_MOVES,
    NEEDS_LLM_API,
    NEEDS_NLTK_DATA,
    OFFLINE_GAMES,
    TextArenaEnv,
    game_family,
    hanoi_move,
)

JUNK = ["", "x" * 1_001, "ünïcødé ☃", "<think>hmm</think><action>open the door</action>", "[zzz qqq]"]
# One id per offline family: its first registered id (the slow generators' big variants aside).
FAMILY_IDS = {
    family: next(g for g in ENV_REGISTRY if game_family(g) == family and not g.endswith(("-raw", "-train")))
    for family in OFFLINE_GAMES
}
HANOI_SOLUTION = ["A C", "A B", "C B", "A C", "B A", "B C", "A C"]


def test_registered_and_refuses_what_cannot_run_here():
    env = make("textarena", game="TowerOfHanoi-v0")
    assert env.spec.id == "lamina/TextArena-v0" and env.spec.max_episode_steps == 100
    with pytest.raises(ValueError, match="needs env.kwargs.game=<id>.*TowerOfHanoi-v0"):
        TextArenaEnv()
    with pytest.raises(ValueError, match="has no game 'Hanoi-v0'"):
        TextArenaEnv(game="Hanoi-v0")
    with pytest.raises(ValueError, match="Wordle-v0' needs NLTK data"):
        TextArenaEnv(game="Wordle-v0")
    with pytest.raises(ValueError, match="TwentyQuestions-v0' asks an LLM"):
        TextArenaEnv(game="TwentyQuestions-v0")
    with pytest.raises(ValueError, match="'TicTacToe-v0' is not a single-player game"):
        TextArenaEnv(game="TicTacToe-v0")
    assert set(NEEDS_NLTK_DATA).isdisjoint(OFFLINE_GAMES) and set(NEEDS_LLM_API).isdisjoint(OFFLINE_GAMES)
    assert TextArenaEnv(game="TowerOfHanoi-v0-train").game == "TowerOfHanoi-v0"  # wrappers dropped


@pytest.mark.parametrize("game", list(FAMILY_IDS.values()))
def test_every_offline_game_is_seeded_and_refuses_junk(game, capsys):
    a, b = TextArenaEnv(game=game), TextArenaEnv(game=game)
    first = a.reset(seed=5)
    assert first == b.reset(seed=5) and first[1]["task"].strip() and first[0].strip()
    for junk in JUNK:
        obs, reward, terminated, truncated, info = a.step(junk)
        assert (reward, terminated, truncated, info["action_valid"]) == (0.0, False, False, False), obs
        assert info["anchor"] == first[1]["anchor"] and obs.strip()
    assert capsys.readouterr().out == ""  # the games' own prints are silenced


def test_interleaved_environments_replay_their_own_seeds():
    moves = ["up", "left", "down", "right"] * 5
    solo = TextArenaEnv(game="2048-v0")
    solo.reset(seed=3)
    expected = [solo.step(m) for m in moves]
    a, b = TextArenaEnv(game="2048-v0"), TextArenaEnv(game="2048-v0")  # tiles spawn from `random`
    a.reset(seed=3)
    b.reset(seed=4)
    outer = random.getstate()
    got = []
    for move in moves:
        got.append(a.step(move))
        b.step(move)
        random.random()  # someone else drawing from the global generator in between
    assert got == expected
    random.setstate(outer)
    state = random.getstate()
    a.reset(seed=1)
    a.step("up")
    assert random.getstate() == state  # the caller's generator is left as it was


def test_solving_pays_1_and_wins():
    env = TextArenaEnv(game="TowerOfHanoi-v0")
    obs, info = env.reset(seed=0)
    assert obs.startswith("Current Board:") and "Tower of Hanoi with 3 disks" in info["task"]
    rewards = []
    for move in HANOI_SOLUTION:
        obs, reward, terminated, _, info = env.step(move)  # brackets added: "A C" -> "[A C]"
        assert info["action_valid"]
        rewards.append(reward)
    assert rewards == [0.0] * 6 + [1.0] and terminated and info["won"]
    assert "solved" in info["reason"] and "solved" in obs
    obs, reward, terminated, _, info = env.step("A B")
    assert terminated and reward == 0.0 and not info["action_valid"] and "over" in obs


def test_turn_limit_pays_the_partial_score_without_a_win():
    env = TextArenaEnv(game="TowerOfHanoi-v0")  # max_turns=14: the game ends after its 15th move
    env.reset(seed=0)
    moves = HANOI_SOLUTION[:4] + ["B A", "A B"] * 5 + ["B A"]  # the big disk on C (1 of 3), then dawdling
    assert len(moves) == 15
    for move in moves:
        obs, reward, terminated, _, info = env.step(move)
    assert terminated and reward == pytest.approx(1 / 3) and not info["won"] and "turn limit" in obs


def test_invalid_moves_change_nothing_and_never_end_the_game():
    env = TextArenaEnv(game="TowerOfHanoi-v0")
    _, start = env.reset(seed=0)
    for _ in range(5):  # TextArena alone would end the game, lost, at the second one
        obs, reward, terminated, _, info = env.step("A D")  # no tower D
        assert not terminated and not info["action_valid"] and info["anchor"] == start["anchor"]
        assert "invalid move" in obs
    assert env.step("B C")[4]["action_valid"] is False  # from an empty tower: a rule, not the syntax
    _, _, _, _, info = env.step("A C")
    assert info["action_valid"] and info["anchor"] != start["anchor"]
    strict = TextArenaEnv(game="TowerOfHanoi-v0", format_actions=False)
    strict.reset(seed=0)
    assert not strict.step("A C")[4]["action_valid"] and strict.step("[A C]")[4]["action_valid"]


LISTED_GAMES = [
    "GuessTheNumber-v0",
    "FrozenLake-v0-random",
    "TowerOfHanoi-v0",
    "ThreeCardMonte-v0",
    "Bandit-v0",
    "Blackjack-v0",
]


@pytest.mark.parametrize("game", LISTED_GAMES)
def test_legal_moves_are_exactly_valid_until_the_end(game):
    assert {game_family(g) for g in LISTED_GAMES} == set(LEGAL_MOVES)
    env, rng = TextArenaEnv(game=game), random.Random(0)
    for seed in range(5):
        _, info = env.reset(seed=seed)
        for _ in range(200):
            legal = info["admissible_actions"]
            assert legal and len(set(legal)) == len(legal), legal
            move = rng.choice(legal)
            _, _, terminated, _, info = env.step(move)
            assert info["action_valid"], (game, seed, move)
            if terminated:
                assert info["admissible_actions"] is None  # nothing is legal once the game is over
                break
        else:
            pytest.fail(f"{game} seed {seed} did not end in 200 listed moves")


def test_listed_moves_leave_out_what_the_game_refuses():
    guess = TextArenaEnv(game="GuessTheNumber-v0")
    _, info = guess.reset(seed=1)
    assert info["admissible_actions"] == [f"[{n}]" for n in range(1, 21)]
    _, _, _, _, info = guess.step("[7]")
    assert "[7]" not in info["admissible_actions"] and len(info["admissible_actions"]) == 19
    assert not guess.step("[7]")[4]["action_valid"]  # the game refuses a repeat, as the list says
    lake = TextArenaEnv(game="FrozenLake-v0")  # the player starts in the top-left corner
    _, info = lake.reset(seed=0)
    assert sorted(info["admissible_actions"]) == ["[down]", "[right]"]
    assert not lake.step("[up]")[4]["action_valid"]
    hanoi = TextArenaEnv(game="TowerOfHanoi-v0")
    _, info = hanoi.reset(seed=0)
    assert sorted(info["admissible_actions"]) == ["[A B]", "[A C]"]
    assert not hanoi.step("[B C]")[4]["action_valid"]  # from an empty peg
    assert TextArenaEnv(game="2048-v0").reset(seed=0)[1]["admissible_actions"] is None  # not listed


def test_hanoi_expert_solves_from_any_position():
    assert hanoi_move({"A": [3, 2, 1], "B": [], "C": []}) == ("A", "C")
    assert hanoi_move({"A": [], "B": [], "C": [3, 2, 1]}) is None
    assert set(EXPERTS) == {"TowerOfHanoi"}
    env = TextArenaEnv(game="TowerOfHanoi-v0-medium")  # 4 disks: 15 moves at best
    env.reset(seed=0)
    _, _, _, _, info = env.step("A B")  # off the optimal path first
    steps = 0
    while not info["won"] and steps < 30:
        _, _, terminated, _, info = env.step(env.expert_action())
        assert info["action_valid"]
        steps += 1
    assert info["won"] and terminated and steps <= 17 and env.expert_action() is None
    assert TextArenaEnv(game="Mastermind-v0").expert_action() is None


def test_runner_worker_plays_it():
    kwargs = {"game": "TowerOfHanoi-v0"}
    with EnvGroupRunner("textarena", 2, num_workers=1, env_kwargs=kwargs) as runner:
        observations, infos = runner.reset([0, 0])
        assert observations[0] == observations[1]
        assert runner.expert_actions() == ["[A C]", "[A C]"]
        _, _, _, _, infos = runner.step(["A C", "dance"])
        assert [i["action_valid"] for i in infos] == [True, False]
