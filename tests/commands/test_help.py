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


PYTHON_REPRS = ("default: None", "default: []", "default: ['", "default: True", "default: False", "default: {")


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
    if command.schema is None:  # the probe parses its own argv
        return
    for f in dataclasses.fields(command.schema):
        assert f"--{f.name}" in flat, f.name
        if "required" in f.metadata:
            assert f"--{f.name} {f.metadata.get('metavar', '')}".strip() in flat
            marked = flat.split(f"--{f.name} ", 1)[1].split(" --", 1)[0]
            assert "(required)" in marked, (f.name, marked)


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
