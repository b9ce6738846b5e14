"""Config schema: precedence, coercion, checks, every problem at once, shipped YAMLs load."""

from __future__ import annotations

import pytest
from conftest import REPO

from airoad.core.base.options import ConfigError, load_config
from airoad.sft.schema import TrainConfig


def load(argv):
    return load_config(TrainConfig, argv)[0]


def test_defaults_yaml_flags_precedence(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("max_steps: 7\nlearning_rate: 1e-5\nlora_r: 8\n")
    cfg, sources = load_config(TrainConfig, ["--config", str(y), "--lora_r", "4"])
    assert cfg.max_steps == 7 and cfg.lora_r == 4 and cfg.seed == 42
    assert isinstance(cfg.learning_rate, float) and cfg.learning_rate == 1e-5  # PyYAML reads it as a str
    assert (
        sources["max_steps"] == f"{y}:1" and sources["lora_r"] == "--lora_r" and sources["seed"] == "default"
    )


def test_unknown_key_names_closest_and_line(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("max_steps: 7\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load(["--config", str(y)])
    assert e.value.problems == [f"{y}:2: unknown key `learning_rat`; did you mean `learning_rate`?"]


def test_every_problem_reported_at_once(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text(
        "lora_r: 0\nlearning_rate: -1\nkl_tau: 0\nkl_lambda: -0.5\nmax_seq_len: 4\ngrad_accum: 0\nuse_dora: maybe\nlora_rr: 3\n"
    )
    with pytest.raises(ConfigError) as e:
        load(["--config", str(y), "--max_steps", "ten"])
    text = "\n".join(e.value.problems)
    assert len(e.value.problems) == 9
    for needle in (
        f"{y}:1: `lora_r` = 0 must be > 0",
        f"{y}:2: `learning_rate` = -1.0 must be > 0",
        f"{y}:3: `kl_tau` = 0.0 must be > 0",
        f"{y}:4: `kl_lambda` = -0.5 must be >= 0",
        f"{y}:5: `max_seq_len` = 4 must be >= 16",
        f"{y}:6: `grad_accum` = 0 must be >= 1",
        f"{y}:7: `use_dora` = 'maybe' must be true or false",
        "did you mean `lora_r`?",
        "--max_steps = 'ten' must be an integer",
    ):
        assert needle in text


def test_unknown_flag_and_choices():
    with pytest.raises(ConfigError) as e:
        load(["--lora_rank", "8", "--lora_target_mode", "everything"])
    assert "unknown flag --lora_rank; did you mean --lora_r?" in e.value.problems
    assert any("must be one of attn, attn_mlp, auto" in p for p in e.value.problems)


def test_flag_without_value_is_one_line():
    with pytest.raises(ConfigError) as e:
        load(["--seed"])
    assert len(e.value.problems) == 1 and "--seed" in e.value.problems[0]


def test_bad_yaml_and_missing_file(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("max_steps: [1,\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: invalid YAML"):
        load(["--config", str(y)])
    with pytest.raises(ConfigError, match="no such file"):
        load(["--config", str(tmp_path / "nope.yaml")])


def test_cross_field_check():
    with pytest.raises(ConfigError, match="eval_early_stop: true` needs `dev_path"):
        load(["--eval_early_stop", "true"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path):
    if "accelerate" in path.parts:
        pytest.skip("accelerate launcher config, not an airoad schema")
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and str(path.relative_to(REPO)) in first  # opens with its command
    if "pref" in path.parts:  # `airoad pref` configs
        from airoad.pref.schema import PrefConfig

        cfg = load_config(PrefConfig, ["--config", str(path)])[0]
        assert first == f"# airoad pref --config {path.relative_to(REPO)}" and cfg.method in path.stem
    else:
        cfg = load(["--config", str(path)])
    readme = (REPO / "README.md").read_text()
    for key in ("dataset_path", "dev_path", "kl_anchor_path"):  # every data file it names is shipped...
        if value := getattr(cfg, key, None):
            if value.startswith("data/my_"):  # ...or written by the README's `airoad data split` line
                assert f"_out {value}" in readme.split("## Your own data", 1)[1], key
            else:
                assert (REPO / value).is_file(), key
    if cfg.use_dora:
        assert cfg.lora_dropout == 0.0


def test_the_shipped_anchors_load_and_share_no_prompt_with_the_general_eval_prompts():
    import json

    from airoad.core.data.chat_data import load_conversations

    convs, stats = load_conversations(REPO / "data/anchor/self_instruct_anchors.jsonl")
    assert stats.loaded == stats.chatml == 175
    assert all(c.messages[-1]["role"] == "assistant" and c.messages[-1]["content"] for c in convs)
    general = {
        json.loads(line)["prompt"].strip().lower()
        for line in (REPO / "data/eval/general_prompts.jsonl").read_text().splitlines()
    }
    users = {c.messages[-2]["content"].strip().lower() for c in convs}
    assert not any(g in u or u in g for g in general for u in users)
