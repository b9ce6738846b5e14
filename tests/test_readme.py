"""The README stays true: its commands name files that exist, and it documents every config key."""

from __future__ import annotations

import dataclasses
import re

from conftest import REPO

from airoad.sft.schema import TrainConfig

README = (REPO / "README.md").read_text()


def test_readme_leads_with_train_and_test_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    first = blocks[0]
    assert "airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml" in first
    assert first.rstrip().endswith("pytest")
    for path in re.findall(r"configs/slm/\S+\.yaml", README):
        assert (REPO / path).is_file(), path


def test_readme_documents_every_config_key():
    for f in dataclasses.fields(TrainConfig):
        assert f"| `{f.name}` |" in README, f.name


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci/run").read_text()
    assert "torch==2.13.0" in ci and re.search(r"^pytest$", ci, flags=re.M)
