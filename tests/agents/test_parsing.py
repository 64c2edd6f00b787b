from lamina.agents.parsing import parse_action, parse_step_action

ADMISSIBLE = ["go north", "take passkey", "look"]


def test_plain_action():
    p = parse_action("<think>north is open</think><action>go north</action>", ADMISSIBLE)
    assert p.valid and p.action == "go north"


def test_missing_tags():
    p = parse_action("go north", ADMISSIBLE)
    assert not p.valid and p.action == "" and "missing" in p.reason


def test_unclosed_tag_is_missing():
    assert not parse_action("<action>go north", ADMISSIBLE).valid


def test_several_blocks_take_the_last():
    p = parse_action("<action>look</action> hmm, better: <action>take passkey</action>", ADMISSIBLE)
    assert p.valid and p.action == "take passkey"


def test_empty_action():
    p = parse_action("<action>   </action>", ADMISSIBLE)
    assert not p.valid and p.reason == "empty action"


def test_junk_is_not_admissible():
    p = parse_action("<action>dance wildly</action>", ADMISSIBLE)
    assert not p.valid and p.action == "dance wildly" and "not admissible" in p.reason


def test_case_and_spacing_map_to_admissible_spelling():
    p = parse_action("<ACTION>  Take   Passkey\n</ACTION>", ADMISSIBLE)
    assert p.valid and p.action == "take passkey"


def test_open_action_space_accepts_any_text():
    p = parse_action("<action>search[red shoes]</action>", None)
    assert p.valid and p.action == "search[red shoes]"


def test_tag_soup():
    p = parse_action("<action><action>look</action></action><think>", ADMISSIBLE)
    assert not p.valid  # the last block's text is "<action>look"


def test_open_search_needs_a_search_entry_and_a_query():
    admissible = ["search[red shoes]", "click[search]"]
    p = parse_action("<action>  Search[ Blue   running shoes ] </action>", admissible)
    assert p.valid and p.action == "search[Blue running shoes]"
    assert not parse_action("<action>search[]</action>", admissible).valid
    assert not parse_action("<action>search[   ]</action>", admissible).valid
    assert not parse_action("<action>search[shoes]</action>", ["click[back to search]"]).valid
    assert not parse_action("<action>find[shoes]</action>", admissible).valid
    # an environment's open_commands decide where it says them, whatever the list offers
    assert parse_action("<action>search[shoes]</action>", ["click[back to search]"], ("search",)).valid
    assert not parse_action("<action>search[shoes]</action>", admissible, ()).valid


def test_overlong_action_is_never_sent():
    p = parse_action("<action>" + "x" * 100_000 + "</action>", None)
    assert not p.valid and p.action == "" and "limit" in p.reason
    assert not parse_action(None, None).valid  # type: ignore[arg-type]


# --------------------------------------------------------------------------- WebShop, both modes


def _webshop():
    from lamina.envs.webshop import WebShopEnv

    return WebShopEnv(catalog="procedural", num_products=200)


def _walk_pages(env):
    """(page, info) on the search page, results, an item with options, and a sub-page."""
    _, info = env.reset(seed=2)
    yield "search", info
    query = next(a for a in info["admissible_actions"] if a.startswith("search["))
    _, _, _, _, info = env.step(query)
    yield "results", info
    item = next(a for a in info["admissible_actions"] if a.startswith("click[b0"))
    _, _, _, _, info = env.step(item)
    yield "item", info
    _, _, _, _, info = env.step("click[features]")
    yield "features", info


def test_webshop_choose_mode_every_admissible_action_parses_and_is_valid():
    env, probe = _webshop(), _webshop()
    for page, info in _walk_pages(env):
        admissible = info["admissible_actions"]
        assert admissible, page
        for action in admissible:  # choose mode: the policy returns one candidate, in tags
            parsed = parse_action(f"<action>{action}</action>", admissible)
            assert parsed.valid and parsed.action == action, (page, action)
            # the environment accepts it in the same state
            probe.reset(seed=2)
            for _, state_info in _walk_pages(probe):
                if state_info["anchor"] == info["anchor"]:
                    break
            assert probe.step(parsed.action)[4]["action_valid"], (page, action)
    searches = [a for a in _first_admissible(env) if a.startswith("search[")]
    assert len(searches) == 3  # choose mode can search: K concrete queries


def _first_admissible(env):
    return env.reset(seed=2)[1]["admissible_actions"]


def test_webshop_generate_mode_action_forms():
    env = _webshop()
    _, info = env.reset(seed=2)
    # free search on the search page
    p = parse_action(
        "<think>look for tea</think><action>search[Herbal  TEA bags]</action>", info["admissible_actions"]
    )
    assert p.valid and p.action == "search[Herbal TEA bags]"  # the env lower-cases queries
    _, _, _, _, info = env.step(p.action)
    assert info["action_valid"] and info["anchor"][:2] == ("results", "herbal tea bags")
    # clicks in any case and spacing map to the admissible spelling
    p = parse_action("<action>CLICK[Next  >]</action>", info["admissible_actions"])
    assert p.valid and p.action == "click[next >]"
    _, _, _, _, info = env.step(p.action)
    assert info["action_valid"]
    # WebShop searches from any page: a search on the results page is valid, through the
    # environment's open_commands (the admissible list alone offers no search there)
    assert info["open_commands"] == ("search",)
    assert not parse_action("<action>search[tea]</action>", info["admissible_actions"]).valid
    p = parse_step_action("<action>search[green tea]</action>", info)
    assert p.valid and p.action == "search[green tea]"
    _, _, _, _, after = env.step(p.action)
    assert after["action_valid"] and after["anchor"][:2] == ("results", "green tea")
    env.reset(seed=2)
    env.step("search[herbal tea bags]")
    _, _, _, _, info = env.step("click[next >]")
    # unknown buttons and junk are not admissible; the environment then rejects them too
    for text in ["<action>click[add to cart]</action>", "<action>buy it</action>", "click[next >]"]:
        p = parse_action(text, info["admissible_actions"])
        assert not p.valid
        _, _, _, _, after = env.step(p.action)
        assert not after["action_valid"] and after["anchor"] == info["anchor"]
