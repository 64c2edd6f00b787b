"""Tests of the WebShop environment: pages, actions in both agent modes, goals, splits, search.

The reward is tested against WebShop's own code in ``test_webshop_reward.py``."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.envs.webshop import (
    WebShopEnv,
    load_catalog,
    load_webshop_files,
    parse_action,
    search_queries,
    shared_webshop_dir,
)
from lamina.envs.webshop.goals import SHUFFLE_SEED, combinations_of, shuffled_order, split_order
from lamina.envs.webshop.procedural import procedural_catalog
from lamina.envs.webshop.search import analyze

PROCEDURAL = {"catalog": "procedural", "num_products": 300}
BROAD_QUERY = "search[everyday use]"  # every procedural product's bullet points say it


def _shared_or_skip() -> None:
    if shared_webshop_dir() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but the shared WebShop data (../shared/webshop) is missing")
        pytest.skip("shared WebShop data (../shared/webshop or $LAMINA_SHARED/webshop) not found")


@pytest.fixture
def env() -> WebShopEnv:
    return WebShopEnv(**PROCEDURAL)


def _play_expert(env: WebShopEnv, seed: int) -> tuple[float, dict, int]:
    env.reset(seed=seed)
    for steps in range(1, 16):
        _, reward, terminated, truncated, info = env.step(env.expert_action())
        assert info["action_valid"]
        if terminated:
            return reward, info, steps
    raise AssertionError(f"expert did not buy within 15 steps (seed {seed})")


# --------------------------------------------------------------------------- environment basics


def test_reset_observation_and_info(env):
    obs, info = env.reset(seed=0)
    assert obs.startswith("WebShop [SEP] Instruction: [SEP] ")
    assert obs.endswith(" [SEP] Search")
    assert info["task"] == env.goal.instruction_text and info["task"] in obs
    queries = search_queries(env.goal, 3)
    assert info["admissible_actions"] == [f"search[{q}]" for q in queries] + ["click[search]"]
    assert queries[0] == " ".join(env.goal.instruction_text.lower().split())
    assert info["available_actions"] == {"has_search_bar": True, "clickables": ["search"]}
    assert info["anchor"] == ("search", "", 0, "", ())
    assert info["won"] is False and info["action_valid"] is True
    hash(info["anchor"])


def test_reset_is_deterministic_by_seed(env):
    other = WebShopEnv(**PROCEDURAL)
    obs_a, info_a = env.reset(seed=7)
    obs_b, info_b = other.reset(seed=7)
    assert obs_a == obs_b and info_a == info_b and env.goal == other.goal
    rng_a, rng_b = random.Random(1), random.Random(1)
    for _ in range(12):
        action = rng_a.choice(info_a["admissible_actions"])
        assert action == rng_b.choice(info_b["admissible_actions"])
        step_a, step_b = env.step(action), other.step(action)
        assert step_a == step_b
        info_a, info_b = step_a[4], step_b[4]
        if step_a[2]:
            break
    goals = {WebShopEnv(**PROCEDURAL).reset(seed=s)[1]["task"] for s in range(10)}
    assert len(goals) >= 8


def test_random_admissible_actions_are_always_valid(env):
    rng = random.Random(0)
    _, info = env.reset(seed=3)
    for _ in range(300):
        _, _, terminated, _, info = env.step(rng.choice(info["admissible_actions"]))
        assert info["action_valid"]
        if terminated:
            _, info = env.reset(seed=rng.randrange(1000))


def test_expert_buys_the_goal_and_wins_where_webshop_allows():
    env = WebShopEnv(**PROCEDURAL)
    won = 0
    for seed in range(12):
        reward, info, steps = _play_expert(env, seed)
        assert steps <= 6 and info["anchor"][3] == env.goal.asin
        assert dict(info["anchor"][4]) == env.goal.options
        parts = info["reward_breakdown"]
        assert parts["r_type"] == 1.0 and parts["r_att"] == 1.0 and parts["r_price"] is True
        won += info["won"]
        # WebShop's matcher can refuse the exact goal value: "peppermint" is colour-normalised to
        # "mint" on the bought side only, so that goal option never matches.
        assert info["won"] == (parts["num_option_matches"] == len(env.goal.options))
        assert reward == pytest.approx(info["score"])
    assert won >= 9


def test_expert_wins_on_shared_catalogue():
    _shared_or_skip()
    env = WebShopEnv(catalog="shared")
    assert len(env.catalog) == 100 and len(env.catalog.goals) == 501
    won = 0
    for seed in range(10):
        reward, info, _ = _play_expert(env, seed)
        parts = info["reward_breakdown"]
        assert parts["r_att"] == 1.0 and parts["r_price"] is True
        # seed 3 wants colour "sunflowers": the bought value normalises to "sunflower", the goal pair not
        assert info["won"] == (parts["num_option_matches"] == len(env.goal.options)), seed
        won += info["won"]
    assert won >= 8


def test_default_catalogue_is_shared_when_present():
    _shared_or_skip()
    assert WebShopEnv().catalog is WebShopEnv(catalog="shared").catalog


def test_reward_scale_and_imperfect_purchase():
    env = WebShopEnv(reward_scale=10.0, **PROCEDURAL)
    seed = 0
    while env.reset(seed=seed) and not env.goal.options:
        seed += 1
    reward, info, _ = _play_expert(env, seed)
    assert reward == 10.0 and info["won"]
    # the goal product without its options: WebShop's score, not a win
    env.reset(seed=seed)
    for _ in range(2):
        env.step(env.expert_action())  # search the title, open the product
    _, reward, terminated, _, info = env.step("click[buy now]")
    goal = env.goal
    expected = (len(goal.attributes) + 1) / (len(goal.attributes) + len(goal.options) + 1)
    assert terminated and not info["won"]
    assert info["score"] == pytest.approx(expected) and reward == pytest.approx(10 * expected)


# --------------------------------------------------------------------------- pages and navigation


def test_results_paging(env):
    env.reset(seed=0)
    page1, _, _, _, info = env.step(BROAD_QUERY)
    assert "Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP] " in page1
    assert "< Prev" not in page1
    assert info["anchor"] == ("results", "everyday use", 1, "", ())
    asins_1 = [c for c in info["available_actions"]["clickables"] if c.startswith("b0")]
    assert len(asins_1) == 10
    assert info["admissible_actions"][:2] == ["click[back to search]", "click[next >]"]
    page2, _, _, _, info = env.step("click[Next >]")
    assert "Page 2 (Total results: 50) [SEP] < Prev [SEP] Next > [SEP] " in page2
    asins_2 = [c for c in info["available_actions"]["clickables"] if c.startswith("b0")]
    assert len(asins_2) == 10 and not set(asins_1) & set(asins_2)
    for _ in range(3):
        obs, _, _, _, info = env.step("click[next >]")
    assert "Page 5 (Total results: 50) [SEP] < Prev [SEP] Next > [SEP] B0" in obs
    # "Next >" is always shown (WebShop's template); past the last page the list is empty.
    assert "click[next >]" in info["admissible_actions"]
    obs, _, _, _, info = env.step("click[next >]")
    assert info["action_valid"] and info["anchor"][2] == 6
    assert obs.endswith("Page 6 (Total results: 50) [SEP] < Prev [SEP] Next >")
    for _ in range(5):
        obs, _, _, _, info = env.step("click[< prev]")
    assert obs == page1 and info["anchor"][2] == 1


@pytest.mark.parametrize("show_clicked", [False, True])
def test_item_sub_pages_and_back_navigation(show_clicked):
    env = WebShopEnv(show_clicked_options=show_clicked, **PROCEDURAL)
    start, _ = env.reset(seed=0)
    env.step(BROAD_QUERY)
    results_2, _, _, _, info = env.step("click[next >]")
    asin = next(c for c in info["available_actions"]["clickables"] if c.startswith("b0"))
    product = env.catalog.by_asin[asin.upper()]
    item, _, _, _, info = env.step(f"click[{asin}]")
    assert info["anchor"] == ("item", "everyday use", 2, asin.upper(), ())
    assert "Back to Search [SEP] < Prev [SEP] " in item
    assert item.endswith(
        f"{product.title} [SEP] Price: {product.price_tag} [SEP] Rating: {product.rating} "
        "[SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now"
    )
    name, values = next(iter(product.options.items())) if product.options else ("", [])
    if values:
        item, _, _, _, info = env.step(f"click[{values[0]}]")
        assert (f"You have clicked {values[0]}." in item) == show_clicked
        assert info["anchor"][4] == ((name, values[0]),)
        item, _, _, _, info = env.step(f"click[{values[-1]}]")  # same option: replaced
        assert info["anchor"][4] == ((name, values[-1]),)
    description, _, _, _, info = env.step("click[description]")
    assert description.endswith("< Prev [SEP] " + product.description)
    assert info["admissible_actions"] == ["click[back to search]", "click[< prev]"]
    env.step("click[< prev]")
    features, _, _, _, _ = env.step("click[features]")
    assert features.endswith(" [SEP] ".join(product.bullet_points))
    obs, _, _, _, info = env.step("click[< prev]")
    assert obs == item  # chosen options kept
    obs, _, _, _, info = env.step("click[< prev]")
    assert obs == results_2 and info["anchor"] == ("results", "everyday use", 2, "", ())
    obs, _, _, _, info = env.step("click[back to search]")
    assert obs == start and info["anchor"] == ("search", "", 0, "", ())


def test_no_results_page(env):
    env.reset(seed=0)
    obs, _, _, _, info = env.step("search[zzzz qqqq]")
    assert obs.endswith("Back to Search [SEP] Page 1 (Total results: 0) [SEP] Next >")
    assert info["admissible_actions"] == ["click[back to search]", "click[next >]"]


def test_steps_after_the_purchase_are_invalid(env):
    _play_expert(env, 0)
    obs, reward, terminated, _, info = env.step("click[back to search]")
    assert obs.startswith("Invalid action: the episode is over")
    assert reward == 0.0 and terminated and not info["action_valid"]
    assert env.expert_action() is None


# --------------------------------------------------------------------------- invalid actions

JUNK = [
    "",
    "   ",
    "x" * 100_000,
    "click[" + "y" * 100_000 + "]",
    "buy the red shoes please",
    "click[nonexistent button]",
    "click[search]",
    "click[buy now]",  # no such button on a results page
    "search[]",
    "search[   ]",  # an empty query
    "购买[红鞋] 🛒",
    "<html><body><button>click[next >]</button></body></html>",
    "click[next >",
    "<action>click[next >]</action>",
    None,
    42,
]


@pytest.mark.parametrize("action", JUNK, ids=range(len(JUNK)))
def test_invalid_actions_change_nothing(env, action):
    env.reset(seed=0)
    page, _, _, _, before = env.step(BROAD_QUERY)
    obs, reward, terminated, truncated, info = env.step(action)
    assert isinstance(obs, str) and obs.startswith("Invalid action: ")
    assert obs.endswith(page) and len(obs) < len(page) + 400
    assert (reward, terminated, truncated, info["action_valid"]) == (0.0, False, False, False)
    assert info["anchor"] == before["anchor"]
    assert info["admissible_actions"] == before["admissible_actions"]
    reference = WebShopEnv(**PROCEDURAL)
    reference.reset(seed=0)
    reference.step(BROAD_QUERY)
    assert env.step("click[next >]") == reference.step("click[next >]")


def test_search_from_any_page_and_the_search_button(env):
    start, _ = env.reset(seed=0)
    obs, _, _, _, info = env.step("click[search]")  # WebShop ignores it: a valid no-op
    assert info["action_valid"] and obs == start and info["anchor"][0] == "search"
    for action in ("search[]", "search[  ]"):
        obs, _, _, _, info = env.step(action)
        assert not info["action_valid"] and "empty search query" in obs
    obs, _, _, _, info = env.step("search[Café  crème 🛒]")  # unicode is a valid query
    assert info["action_valid"] and info["anchor"][:3] == ("results", "café crème 🛒", 1)
    assert info["available_actions"]["has_search_bar"] is False
    assert not any(a.startswith("search[") for a in info["admissible_actions"])
    env.step("click[next >]")
    env.step(f"click[{env._state.results[10].lower()}]" if len(env._state.results) > 10 else "click[< prev]")
    obs, _, _, _, info = env.step("search[shoes]")  # WebShop's text env searches from any page
    assert info["action_valid"] and info["anchor"] == ("results", "shoes", 1, "", ())


def test_candidate_queries_count_and_content():
    env = WebShopEnv(search_candidates=6, **PROCEDURAL)
    _, info = env.reset(seed=4)
    goal = env.goal
    searches = [a for a in info["admissible_actions"] if a.startswith("search[")]
    expected = [goal.instruction_text, goal.base_instruction, ", ".join(goal.attributes), *goal.attributes]
    expected = list(dict.fromkeys(" ".join(t.lower().split()) for t in expected))[:6]
    assert searches == [f"search[{q}]" for q in expected]
    assert "price lower than" in searches[0] and "price lower than" not in searches[1]
    assert len(WebShopEnv(search_candidates=1, **PROCEDURAL).reset(seed=4)[1]["admissible_actions"]) == 2
    with pytest.raises(ValueError, match="search_candidates=0"):
        WebShopEnv(search_candidates=0, **PROCEDURAL)


def test_parse_action():
    assert parse_action("  Click[ Buy   Now ] ") == ("click", "buy now")
    assert parse_action("search[Red Shoes [2 pack]]") == ("search", "red shoes [2 pack]")
    assert isinstance(parse_action("clicks[x]"), str)
    assert isinstance(parse_action(b"click[x]"), str)


_BUTTONS = ["search", "buy now", "< prev", "next >", "back to search", "description", "reviews", "features"]
_JUNK_TEXT = st.one_of(
    st.text(max_size=80),
    st.text(max_size=40).map(lambda s: f"click[{s}]"),
    st.text(max_size=40).map(lambda s: f"search[{s}]"),
    st.sampled_from(
        [f"click[{b}]" for b in _BUTTONS] + ["click[", "]", "[]", "click[]", "\x00click[next >]"]
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.integers(0, 30), _JUNK_TEXT), max_size=10), st.integers(0, 20))
def test_mixed_valid_and_junk_actions_never_raise(actions, seed):
    env = WebShopEnv(**PROCEDURAL)
    _, info = env.reset(seed=seed)
    for choice in actions:
        if isinstance(choice, int):  # an admissible action
            admissible = info["admissible_actions"] or ["click[back to search]"]
            action = admissible[choice % len(admissible)]
        else:
            action = choice
        before = info["anchor"]
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(obs, str) and not truncated
        if info["action_valid"]:
            assert not obs.startswith("Invalid action")
            assert terminated == (info["anchor"][0] == "done") and (reward > 0) <= terminated
        else:
            assert obs.startswith("Invalid action: ") and info["anchor"] == before and reward == 0.0


# --------------------------------------------------------------------------- checker, catalogues


@pytest.mark.filterwarnings("ignore:.*render:UserWarning")
def test_gymnasium_env_checker(env):
    check_env(env, skip_render_check=True)
    check_env(WebShopEnv(render_mode="ansi", **PROCEDURAL))


def test_gymnasium_env_checker_shared():
    _shared_or_skip()
    check_env(WebShopEnv(catalog="shared"), skip_render_check=True)


def test_procedural_catalogue_is_deterministic_and_unique():
    a, b, c = (
        procedural_catalog(200, seed=1),
        procedural_catalog(200, seed=1),
        procedural_catalog(200, seed=2),
    )
    assert [p.title for p in a.products] == [p.title for p in b.products]
    assert [g.instruction_text for g in a.goals] == [g.instruction_text for g in b.goals]
    assert [p.asin for p in a.products] != [p.asin for p in c.products]
    assert len({p.asin for p in a.products}) == len({p.title for p in a.products}) == 200
    assert all(re.fullmatch(r"B0[A-Z0-9]{8}", p.asin) for p in a.products)


def test_shared_catalogue_search():
    _shared_or_skip()
    catalog = WebShopEnv(catalog="shared").catalog
    results = catalog.search("dining table")
    assert results and len(results) <= 50
    assert "table" in catalog.by_asin[results[0]].title.lower()
    assert catalog.search("dining table") == results


def _write_official_files(folder: Path) -> tuple[Path, Path, Path]:
    raw = [
        {
            "asin": "B000TEST01",
            "name": "Cozy Knit Beanie Hat for Women",
            "full_description": "A warm hat.",
            "small_description": ["Soft acrylic knit", "One size fits most"],
            "pricing": "$12.99",
            "customization_options": {
                "Color": [{"value": "Black/White", "image": None}, {"value": "Red", "image": None}],
                "Size": None,
            },
            "category": "fashion",
            "query": "Beanies ",
            "product_category": "Clothing › Women › Accessories › Hats",
            "images": ["x.jpg"],
        },
        {
            "asin": "B000TEST02",
            "name": "Steel Water Bottle 32 oz",
            "full_description": "",
            "small_description": "Keeps drinks cold",
            "pricing": "$19.99 - $27.99",
            "customization_options": "",
            "category": "garden",
            "query": "water bottles",
            "product_category": "Home › Kitchen › Bottles",
            "images": ["y.jpg"],
        },
        {"asin": "nan", "name": "skipped", "category": "", "query": "", "product_category": "", "images": []},
        {"asin": "B000TEST01", "name": "duplicate, skipped", "images": []},
    ]
    synthetic = {
        "B000TEST01": {
            "attributes": ["acrylic knit", "warm"],
            "instruction": "i want a warm acrylic knit beanie",
            "instruction_attributes": ["acrylic knit", "warm"],
        },
        "B000TEST02": {"attributes": []},
    }
    human = {
        "B000TEST01": [
            {
                "instruction": "i need a red beanie with acrylic knit.",
                "attributes": ["acrylic knit"],
                "instruction_attributes": ["acrylic knit"],
                "instruction_options": ["red"],
            }
        ]
    }
    paths = folder / "items_shuffle_test.json", folder / "items_ins_v2_test.json", folder / "human.json"
    for path, data in zip(paths, (raw, synthetic, human), strict=True):
        path.write_text(json.dumps(data), encoding="utf-8")
    return paths


def test_official_file_formats(tmp_path):
    products_path, synthetic_path, human_path = _write_official_files(tmp_path)
    catalog = load_webshop_files(products_path, synthetic_path)
    assert [p.asin for p in catalog.products] == ["B000TEST01", "B000TEST02"]
    hat, bottle = catalog.products
    assert hat.options == {"color": ["black | white", "red"]} and hat.query == "beanies"
    assert hat.attributes == ["acrylic knit", "warm"] and bottle.attributes == ["DUMMY_ATTR"]
    assert bottle.pricing == (19.99, 27.99) and bottle.price_tag == "$19.99 to $27.99"
    assert bottle.bullet_points == ["Keeps drinks cold"] and 19.99 <= bottle.price <= 27.99
    assert [g.options for g in catalog.goals] == [{"color": "black | white"}, {"color": "red"}]

    env = WebShopEnv(catalog_path=str(products_path), instructions_path=str(synthetic_path))
    for seed in range(4):
        reward, info, _ = _play_expert(env, seed)
        assert reward == 1.0 and info["won"]
        assert env.goal.instruction_text.startswith("i want a warm acrylic knit beanie with color: ")

    human_env = WebShopEnv(catalog_path=str(products_path), instructions_path=str(human_path), split="all")
    _, info = human_env.reset(seed=0)
    assert human_env.goal.options == {"color": "red"} and human_env.goal.option_terms == ("red",)
    assert info["task"].startswith("i need a red beanie with acrylic knit, and price lower than")
    reward, info, _ = _play_expert(human_env, 0)
    assert reward == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid: 'auto'"):
        WebShopEnv(catalog="amazon")
    with pytest.raises(ValueError, match="needs both"):
        WebShopEnv(catalog="files", catalog_path="x.json")
    with pytest.raises(FileNotFoundError):
        WebShopEnv(catalog_path="/nonexistent/items.json", instructions_path="/nonexistent/ins.json")


def test_no_model_libraries_under_envs():
    folder = Path(__file__).parents[2] / "lamina" / "envs" / "webshop"
    names = sorted(path.name for path in folder.glob("*.py"))
    assert names == [
        "__init__.py",
        "catalogue.py",
        "engine.py",
        "goals.py",
        "pages.py",
        "procedural.py",
        "products.py",
        "reward.py",
        "search.py",
    ]
    for name in names:
        source = (folder / name).read_text()
        assert not re.search(r"^\s*(import|from)\s+(torch|transformers)\b", source, re.M), name


# --------------------------------------------------------------------------- goals, splits, search


def test_goals_are_one_per_option_combination():
    catalog = procedural_catalog(120, seed=3)
    expected = []
    for product in catalog.products:  # one template per product, in product order
        expected += [(product.asin, combo) for combo in combinations_of(product.options)]
    assert [(g.asin, g.options) for g in catalog.goals] == expected
    with_options = [g for g in catalog.goals if g.options]
    assert len(with_options) / len(catalog.goals) > 0.9  # as in WebShop, few goals lack options
    goal = with_options[0]
    assert goal.option_terms == tuple(goal.options.items())
    text = ", and ".join(f"{k}: {v}" for k, v in goal.options.items())
    assert goal.instruction_text.startswith(f"{goal.base_instruction} with {text}")
    # one price bound per product, shared by all its combinations
    bounds = {(g.asin, g.price_upper) for g in catalog.goals}
    assert len(bounds) == len({g.asin for g in catalog.goals})


def test_shared_goal_distribution_matches_webshops_rule():
    _shared_or_skip()
    catalog = WebShopEnv(catalog="shared").catalog
    assert len(catalog.goals) == 501 and catalog.goals.products_with_goals() == 44
    without = sum(not g.options for g in catalog.goals)
    assert without == 21  # 4% of goals, as WebShop builds them (lamina had 48% before)


def test_splits_are_disjoint_and_follow_the_seed_233_shuffle():
    count = 2000
    order = shuffled_order(count)
    reference = list(range(count))
    random.seed(SHUFFLE_SEED)  # WebShop's SimServer: random.seed(233); random.shuffle(goals)
    random.shuffle(reference)
    assert order == reference
    test, train = split_order(count, "test"), split_order(count, "train")
    assert test == order[:500] and train == order[500:]  # verl-agent: the first 500 are the test set
    assert not set(test) & set(train) and len(test) + len(train) == count
    assert split_order(100, "test") == shuffled_order(100)[:20]  # small catalogues: a fifth
    with pytest.raises(ValueError, match="split='dev'"):
        split_order(100, "dev")
    with pytest.raises(ValueError, match="test_goals=100"):
        split_order(100, "train", test_goals=100)


def test_env_splits_play_disjoint_goals():
    train, test = WebShopEnv(split="train", **PROCEDURAL), WebShopEnv(split="test", **PROCEDURAL)
    assert len(train.goal_order) + len(test.goal_order) == len(train.catalog.goals)
    played_test = set()
    for seed in range(len(test.goal_order)):
        test.reset(seed=seed)
        played_test.add(test.goal_index)
    assert played_test == set(test.goal_order)
    for seed in range(0, 3000, 7):
        train.reset(seed=seed)
        assert train.goal_index not in played_test


def test_reward_mode_success_pays_only_a_perfect_purchase():
    env = WebShopEnv(reward_mode="success", **PROCEDURAL)
    reward, info, _ = _play_expert(env, 0)
    assert info["won"] and reward == 10.0 and info["score"] == 1.0
    env.reset(seed=0)
    for _ in range(2):
        env.step(env.expert_action())  # search the title, open the product
    _, reward, terminated, _, info = env.step("click[buy now]")  # no options chosen
    assert terminated and reward == 0.0 and 0.0 < info["score"] < 1.0
    with pytest.raises(ValueError, match="reward_mode='money'"):
        WebShopEnv(reward_mode="money", **PROCEDURAL)


def test_stemmed_search_over_contents():
    assert analyze("Women's Dresses, X-Large") == ["women", "dress", "x", "larg"]
    catalog = procedural_catalog(300, seed=0)
    assert catalog.search("dresses") == catalog.search("dress") and catalog.search("dress")
    assert catalog.search("running shoe") == catalog.search("running shoes")
    # a word that only an option value holds is found (WebShop indexes the options)
    for product in catalog.products:
        text = " ".join([product.title, product.description, *product.bullet_points]).lower()
        words = [w for vs in product.options.values() for v in vs for w in v.split() if w.isalpha()]
        only_in_options = [w for w in words if w not in text and len(w) > 3]
        if only_in_options:
            break
    assert only_in_options, "no product with an option-only word"
    assert product.asin in catalog.search(only_in_options[0])  # the option word alone


def test_shared_search_finds_dress_and_dresses_alike():
    _shared_or_skip()
    catalog = WebShopEnv(catalog="shared").catalog
    assert catalog.search("dresses") == catalog.search("dress") != ()


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=60))
def test_search_never_raises(query):
    catalog = load_catalog("procedural", num_products=100)  # cached
    results = catalog.search(query)
    assert len(results) <= 50 and all(asin in catalog.by_asin for asin in results)


def test_one_letter_queries_whose_stem_is_empty():
    catalog = procedural_catalog(100, seed=0)
    assert catalog.search("S") == () and catalog.search("s s") == ()
