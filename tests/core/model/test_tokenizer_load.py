"""load_tokenizer: one parse per unchanged tokenizer directory per process; a changed directory is
read again, refusals are never remembered, and the memory is bounded.

The cache's bookkeeping is tested with the reader replaced by a counter (a real parse is ~1 s);
the real reader runs in the first test and in the refusal test."""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest
from conftest import TOKENIZER_DIR

from airoad.core.model import loading


@pytest.fixture()
def reads():
    """The uncached reader replaced by one that counts its calls and returns a new object each time."""
    with mock.patch.object(loading, "_read_tokenizer", side_effect=lambda *a: object()) as read:
        yield read


def tokenizer_like_dir(path):
    path.mkdir()
    (path / "tokenizer_config.json").write_text('{"chat_template": "a"}')
    (path / "tokenizer.json").write_text("{}")
    return path


def test_an_unchanged_directory_is_parsed_once_and_shared(qwen_tokenizer):
    with mock.patch.object(loading, "_read_tokenizer", side_effect=loading._read_tokenizer) as read:
        first = loading.load_tokenizer(str(TOKENIZER_DIR))
        again = loading.load_tokenizer(str(TOKENIZER_DIR))
    assert again is first and read.call_count == 1
    assert first.pad_token is not None
    assert first("Hello <|im_end|>")["input_ids"] == qwen_tokenizer("Hello <|im_end|>")["input_ids"]


def test_an_edited_or_touched_file_is_read_again(tmp_path, reads):
    d = tokenizer_like_dir(tmp_path / "tok")
    first = loading.load_tokenizer(str(d))
    assert loading.load_tokenizer(str(d)) is first and reads.call_count == 1
    (d / "tokenizer_config.json").write_text('{"chat_template": "b"}')  # same size, new content
    st = (d / "tokenizer_config.json").stat()
    os.utime(d / "tokenizer_config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = loading.load_tokenizer(str(d))
    assert second is not first and reads.call_count == 2
    (d / "added_tokens.json").write_text(json.dumps({"<x>": 5}))  # a new file
    assert loading.load_tokenizer(str(d)) is not second and reads.call_count == 3


def test_refusals_are_not_remembered(tmp_path):
    d = tokenizer_like_dir(tmp_path / "tok")
    (d / "tokenizer.json").write_text("{broken")
    for _ in range(2):  # the real reader, each time
        with pytest.raises(loading.LoadError, match="cannot load its tokenizer"):
            loading.load_tokenizer(str(d))
    assert not any(key[0] == str(d.resolve()) for key in loading._TOKENIZERS)


def test_the_cache_is_bounded_and_keeps_the_recently_used(tmp_path, reads):
    dirs = [tokenizer_like_dir(tmp_path / f"t{i}") for i in range(loading._TOKENIZERS_KEPT + 1)]
    for d in dirs[:-1]:
        loading.load_tokenizer(str(d))
    loading.load_tokenizer(str(dirs[0]))  # used again: now the most recent
    loading.load_tokenizer(str(dirs[-1]))  # one too many: the least recently used goes
    kept = {key[0] for key in loading._TOKENIZERS}
    assert len(loading._TOKENIZERS) == loading._TOKENIZERS_KEPT
    assert str(dirs[0].resolve()) in kept and str(dirs[1].resolve()) not in kept
    assert reads.call_count == loading._TOKENIZERS_KEPT + 1


def test_a_hub_id_that_is_not_a_directory_is_not_cached(reads):
    assert loading._tokenizer_key("Qwen/Qwen2.5-0.5B-Instruct", False) is None
