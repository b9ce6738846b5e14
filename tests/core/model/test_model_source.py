"""Where a model comes from: a local dir, the hub cache, or the hub; an unreachable hub is one line
in seconds (transformers alone retries for ~50 s), and the CPU precision can be forced."""

from __future__ import annotations

import shutil
import time

import pytest
import torch
import yaml
from conftest import cfg_for

from airoad.cli import main as cli
from airoad.core.model.model_source import ModelSourceError, resolve_model

HUB_ID = "acme/tiny-chat"


@pytest.fixture()
def no_hub(monkeypatch):
    """The hub is not offline by setting but cannot be reached: a port on loopback nobody listens on."""
    for var in (
        "HF_HUB_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch, tiny_model_dir):
    """A Hugging Face cache holding HUB_ID's snapshot (the tiny model), as `hf download` leaves it."""
    import huggingface_hub.constants as hc

    root = tmp_path / "hf-cache"
    repo = root / f"models--{HUB_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    shutil.copytree(tiny_model_dir, repo / "snapshots" / "0123abc")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(root))
    return repo / "snapshots" / "0123abc"


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "unreachable"])
def test_an_uncached_hub_id_without_a_hub_is_one_line_in_seconds(
    offline, no_hub, chat_file, tmp_path, capsys, monkeypatch
):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    t0 = time.time()
    rc = cli(
        [
            "train",
            "--base_model",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "--dataset_path",
            str(chat_file),
            "--output_dir",
            str(out),
        ]
    )
    took = time.time() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and took < 10
    why = "HF_HUB_OFFLINE is set" if offline else "huggingface.co cannot be reached"
    assert (
        err[0].startswith("error: base_model 'Qwen/Qwen2.5-0.5B-Instruct' is not a local directory")
        and why in err[0]
    )
    assert "--base_model DIR" in err[0] and "hf download Qwen/Qwen2.5-0.5B-Instruct" in err[0]
    assert not out.exists()


def test_eval_with_an_uncached_base_is_one_line_too(no_hub, tmp_path, capsys):
    rc = cli(
        [
            "eval",
            "--base_model",
            "acme/nothing",
            "--prompts",
            str(tmp_path / "p.jsonl"),
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ")


def test_a_cached_hub_id_trains_from_the_cache_without_the_hub(hub_cache, no_hub, chat_file, tmp_path):
    assert resolve_model(HUB_ID) == resolve_model(HUB_ID)  # stable
    src = resolve_model(HUB_ID)
    assert (src.how, src.path) == ("cache", str(hub_cache))
    printed: list[str] = []
    from airoad.sft.run import train

    out, _ = train(cfg_for(HUB_ID, chat_file, tmp_path / "run", "--max_steps", "1"), printer=printed.append)
    assert f"loading model: {HUB_ID} (from the local Hugging Face cache)" in printed
    assert (
        yaml.safe_load((out / "run_config.yaml").read_text())["base_model"] == HUB_ID
    )  # as the user wrote it
    assert (out / "adapter_model.safetensors").is_file()


def test_local_paths_are_used_as_given_and_bad_ones_named(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir)).how == "local"
    with pytest.raises(ModelSourceError, match="no such directory"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ModelSourceError, match="is a file"):
        resolve_model(str(tmp_path / "f.txt"))


@pytest.mark.parametrize(
    "value, expected", [("0", torch.float32), ("1", torch.bfloat16), ("no", torch.float32)]
)
def test_airoad_cpu_bf16_forces_what_auto_picks_on_cpu(value, expected, monkeypatch):
    from airoad.core.model import devices

    monkeypatch.setenv("AIROAD_CPU_BF16", value)
    assert devices.pick_dtype("cpu", "auto") == expected
    assert devices.pick_dtype("cpu", "float32") == torch.float32  # an explicit dtype still wins
