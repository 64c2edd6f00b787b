from lamina.agents.parsing import parse_action

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
