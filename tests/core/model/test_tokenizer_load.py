"""load_tokenizer: one parse per unchanged tokenizer directory per process; a changed directory, a
broken one and a template-less one are read (and refused) again every time."""

from __future__ import annotations

import json
import os
import shutil
from unittest import mock

import pytest
from conftest import TOKENIZER_DIR

from airoad.core.model import loading


def copy_tokenizer(out):
    """The fixture tokenizer copied to ``out``, writable (../shared's files are read-only)."""
    shutil.copytree(TOKENIZER_DIR, out, copy_function=shutil.copyfile)
    out.chmod(0o755)
    return out


@pytest.fixture()
def tok_dir(tmp_path, qwen_tokenizer):
    return copy_tokenizer(tmp_path / "tok")


def counted_reads():
    """A patch of the uncached reader that counts its calls (and still reads)."""
    return mock.patch.object(loading, "_read_tokenizer", side_effect=loading._read_tokenizer)


def test_an_unchanged_directory_is_parsed_once_and_shared(tok_dir):
    with counted_reads() as read:
        first = loading.load_tokenizer(str(tok_dir))
        again = loading.load_tokenizer(str(tok_dir))
    assert again is first and read.call_count == 1
    assert first.pad_token is not None and first("Hello")["input_ids"]


def test_an_edited_tokenizer_is_read_again(tok_dir):
    first = loading.load_tokenizer(str(tok_dir))
    cfg_path = tok_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = "{{ messages[0]['content'] }}"
    cfg_path.write_text(json.dumps(cfg))
    (tok_dir / "chat_template.jinja").unlink(missing_ok=True)  # the template file would win
    with counted_reads() as read:
        edited = loading.load_tokenizer(str(tok_dir))
    assert read.call_count == 1 and edited is not first
    assert edited.chat_template == "{{ messages[0]['content'] }}" != first.chat_template


def test_a_touched_file_of_the_same_size_is_read_again(tok_dir):
    first = loading.load_tokenizer(str(tok_dir))
    path = tok_dir / "tokenizer_config.json"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert loading.load_tokenizer(str(tok_dir)) is not first


def test_refusals_are_not_cached(tok_dir):
    (tok_dir / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = tok_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    for _ in range(2):
        with pytest.raises(loading.LoadError, match="has no chat template"):
            loading.load_tokenizer(str(tok_dir))
    (tok_dir / "tokenizer.json").write_text("{broken")
    with pytest.raises(loading.LoadError, match="cannot load its tokenizer"):
        loading.load_tokenizer(str(tok_dir))


def test_the_cache_is_bounded(tmp_path, qwen_tokenizer):
    dirs = []
    for i in range(loading._TOKENIZERS_KEPT + 1):
        dirs.append(copy_tokenizer(tmp_path / f"t{i}"))
        loading.load_tokenizer(str(dirs[-1]))
    assert len(loading._TOKENIZERS) == loading._TOKENIZERS_KEPT
    kept = {key[0] for key in loading._TOKENIZERS}
    assert str(dirs[0].resolve()) not in kept and str(dirs[-1].resolve()) in kept
