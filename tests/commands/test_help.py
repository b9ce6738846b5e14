"""Every command's --help, rendered: exit 0, a usage line, every option with its text, defaults as a
user types them (no Python reprs), required options marked required; `airoad` alone exits 2."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from airoad.cli import main as cli
from airoad.core.run.command import GROUPS, module_name, names


def every_command() -> list[list[str]]:
    words = []
    for name in names():
        if name in GROUPS:
            words += [[name, tool] for tool in names(name)]
        else:
            words.append([name])
    return words


PYTHON_REPRS = (
    "default: None",
    "default: []",
    "default: ['",
    "default: True",
    "default: False",
    "default: {",
)


@pytest.mark.parametrize("words", every_command(), ids=" ".join)
def test_help_reads_as_a_user_types(words, capsys):
    try:
        rc = cli([*words, "--help"])
    except SystemExit as stop:  # argparse's own exit, where a command's parser prints the help
        rc = stop.code
    assert rc in (0, None)
    text = capsys.readouterr().out
    assert text.startswith(f"usage: airoad {' '.join(words)}")
    flat = " ".join(text.split())  # argparse wraps lines
    assert not [r for r in PYTHON_REPRS if r in flat], flat
    command = importlib.import_module(module_name(words)).COMMAND
    from airoad.core.base.options import _build_parser

    helps = {a.dest: a.help for a in _build_parser(command.schema, "airoad", "")._actions}
    for f in dataclasses.fields(command.schema):
        assert f"--{f.name}" in flat, f.name
        assert helps[f.name].endswith("(required)" if "required" in f.metadata else ")"), helps[f.name]
        assert f.metadata["help"].strip(), f.name  # every option says what it does


@pytest.mark.parametrize("words", [[], ["data"], ["export"]])
def test_a_bare_group_prints_its_usage_and_exits_2(words, capsys):
    assert cli(words) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: airoad")


def test_missing_required_options_are_reported_together_with_other_mistakes(capsys):
    assert cli(["data", "split", "--dev_fraction", "2", "--bogus", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5, err
    assert any("--bogus" in line for line in err) and any("--dev_fraction" in line for line in err)
    for key in ("dataset_path", "train_out", "dev_out"):
        assert f"error: --{key} is required; give " in "\n".join(err)


def schemas() -> list[tuple[str, type]]:
    found = []
    for words in every_command():
        found.append((" ".join(words), importlib.import_module(module_name(words)).COMMAND.schema))
    return found


# Words a new option might be tempted to use for a concept that already has a name everywhere.
SYNONYMS = {
    "base_model": {"base", "model", "base_path", "model_path", "model_name"},
    "dataset_path": {"infile", "input", "data", "data_path", "train_file", "dataset"},
    "adapters": {"adapter", "adapter_path", "adapter_dir", "run_dir", "lora"},
    "overwrite": {"force", "replace", "clobber"},
    "n": {"limit", "count", "num", "max_rows", "num_prompts"},
    "seed": {"random_seed", "rng_seed"},
}


def test_one_name_per_concept_across_every_command():
    from airoad.core.base.options import ALIASES

    for name, schema in schemas():
        fields = {f.name for f in dataclasses.fields(schema)}
        assert not fields & set(ALIASES), (name, fields & set(ALIASES))  # old spellings are aliases only
        for word, others in SYNONYMS.items():
            assert not fields & others, (name, word, fields & others)
    assert set(ALIASES.values()) <= set(SYNONYMS)


def test_old_spellings_still_work_and_name_the_new_one(tmp_path, capsys):
    from airoad.core.base.options import load_config
    from airoad.infer.schema import MergeConfig

    cfg, sources = load_config(MergeConfig, ["--base", "m", "--adapters", "a", "--out", "o"])
    assert cfg.base_model == "m" and sources["base_model"] == "--base"
    y = tmp_path / "merge.yaml"
    y.write_text("base: m2\nadapters: a\nout: o\n")
    cfg, sources = load_config(MergeConfig, ["--config", str(y)])
    assert cfg.base_model == "m2"
    y.write_text("base: m2\nbase_model: m3\nadapters: a\nout: o\n")  # both: the old one is unknown
    with pytest.raises(Exception, match="unknown key `base`; did you mean `base_model`"):
        load_config(MergeConfig, ["--config", str(y)])
    # through the CLI: a note on stderr, once, naming the name to use
    assert cli(["data", "stats", "--infile", str(tmp_path / "nope.jsonl"), "--base_model", "none"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "note: --infile is now --dataset_path (both work)" and len(err) == 2


def test_overwrite_has_one_meaning_in_every_command():
    from airoad.core.base.options import OVERWRITE_HELP

    for name, schema in schemas():
        helps = {f.metadata["help"] for f in dataclasses.fields(schema) if f.name == "overwrite"}
        assert helps <= {OVERWRITE_HELP}, name
