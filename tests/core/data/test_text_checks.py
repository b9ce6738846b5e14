"""The shared text detectors on hand-written answers, including ones that must not match."""

from __future__ import annotations

import pytest

from airoad.core.base.errors import UserError
from airoad.core.data.text_checks import (
    DEFAULT_BANNED,
    banned_hits,
    has_heading,
    has_list,
    is_code,
    load_banned,
)

LISTS = [
    "Steps:\n- open the lid\n- pour the water",
    "* one\n* two",
    "+ a\n+ b",
    "1. First\n2. Second\n3. Third",
    "1) First\n2) Second",
    "Intro line.\n\n  - indented item\n  - another",
    "Mixed:\n- a bullet\n1. a number",
]
NOT_LISTS = [
    "",
    "- only one item",
    "Plain prose, no structure at all.",
    "-5 degrees overnight\n-3 degrees by noon",  # negative numbers, no space after the dash
    "**bold** start\n**bold** again",  # emphasis, not bullets
    "*italic* start\n*italic* again",
    "* * *\nSection two\n* * *",  # thematic breaks
    "- - -\ntext\n- - -",
    "In 2020. Things changed.\nIn 2021. Again.",  # four-digit 'numbers' are years, not items
    "    - indented four spaces is a code block\n    - still code",
    "```\n- a in code\n- b in code\n```",
    "~~~\n1. code\n2. code\n~~~",
    "````md\n```\n- nested fence\n- still inside\n```\n````",
]
HEADINGS = [
    "# Title\ntext",
    "### Steps\n1. go",
    "  ## Indented up to three spaces",
    "Overview\n========\nBody text.",  # setext
    "**Steps:**\n- a\n- b",
    "**Why it works**\nBecause the water boils.",
]
NOT_HEADINGS = [
    "",
    "#hashtag is not a heading",
    "####### seven hashes is not a heading",
    "#",
    "**Note:** the bold lead-in of a sentence",
    "The total is 42.\n\n**Answer: 42**",  # a closing bold line is emphasis
    "```python\n# a comment in code\nx = 1\n```",
    "    # indented four spaces: code",
    "a == b\nx = 3",
    "Line one\n=== not an underline (text after)",
]


@pytest.mark.parametrize("text", LISTS)
def test_has_list_matches(text):
    assert has_list(text)


@pytest.mark.parametrize("text", NOT_LISTS)
def test_has_list_does_not_match(text):
    assert not has_list(text)


@pytest.mark.parametrize("text", HEADINGS)
def test_has_heading_matches(text):
    assert has_heading(text)


@pytest.mark.parametrize("text", NOT_HEADINGS)
def test_has_heading_does_not_match(text):
    assert not has_heading(text)


def test_structure_after_a_closed_fence_counts():
    text = "```\n# code\n```\n## Real heading\n- a\n- b"
    assert has_heading(text) and has_list(text)
    unclosed = "Intro\n```\n## inside an unclosed fence\n- a\n- b"
    assert not has_heading(unclosed) and not has_list(unclosed)


def test_banned_hits_role_tags_only_at_line_start():
    assert banned_hits("Sure.\nHuman: and now me") == ["Human:"]
    assert banned_hits("  User: hi") == ["User:"]
    assert banned_hits("Read 'The Human: Fall of Rome' tonight.") == []
    assert banned_hits("the Assistant: column") == []


def test_banned_hits_template_tokens_anywhere_each_once_in_list_order():
    text = "Answer<|im_end|> more <|im_start|>assistant\n<|im_end|>"
    assert banned_hits(text) == ["<|im_start|>", "<|im_end|>"]
    assert banned_hits("As an AI language model, I cannot.") == ["As an AI language model"]
    assert banned_hits("A clean answer with <b>HTML</b> and [links](x).") == []


def test_banned_hits_custom_list():
    assert banned_hits("I love Python and python.", ("Python", "Rust")) == ["Python"]
    assert banned_hits("anything", ()) == []


def test_load_banned(tmp_path):
    assert load_banned(None) == DEFAULT_BANNED
    f = tmp_path / "banned.txt"
    f.write_text("# comments and blank lines are skipped\n\nFoo\n  Bar baz\n")
    assert load_banned(f) == ("Foo", "  Bar baz")
    with pytest.raises(UserError, match="no such file"):
        load_banned(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(UserError, match="no entries"):
        load_banned(tmp_path / "empty.txt")


def test_is_code():
    assert is_code("Use this:\n```python\nprint(1)\n```")
    assert is_code("def f(x):\n    return x + 1\n")
    assert not is_code("A prose answer.\nWith two lines.")
    assert not is_code("")


def test_gsm8k_answer_line_is_not_a_heading():
    from airoad.core.data.text_checks import has_heading

    assert not has_heading("She sold 48 + 24 = 72 clips.\n#### 72")
    assert not has_heading("#### 1,250.5")
    assert has_heading("#### Step 2\nAdd them.")
