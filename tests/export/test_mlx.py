"""`airoad export mlx` on the tiny model, checked by mlx-lm itself: LoRA and DoRA on attention and
attention+MLP reproduce PEFT's logits, a deliberately untransposed adapter fails the check, fused
and 4-bit fused models load and generate, and every refusal is one line that writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import RUN_SYSTEM, make_adapter_run

from airoad.cli import main as cli

pytest.importorskip("mlx.core", reason='mlx is not installed (pip install "mlx[cpu]" mlx-lm)')
pytest.importorskip("mlx_lm", reason='mlx-lm is not installed (pip install "mlx[cpu]" mlx-lm)')
torch = pytest.importorskip("torch")

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
ATTN_MLP = [*ATTN, "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def base(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with rope_theta at the top of config.json, as hub configs have it (mlx-lm
    reads it only there)."""
    out = tmp_path_factory.mktemp("mlx-base") / "base"
    shutil.copytree(tiny_model_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def adapter_run(base: Path, out: Path, targets: list[str], dora: bool) -> Path:
    """A run dir with an adapter on ``targets`` that moves the logits (conftest's, seeded 3)."""
    return make_adapter_run(base, out, dora, seed=3, targets=targets)


def errors(capsys) -> list[str]:
    """The command's stderr lines that are not progress bars (the fixtures load models too)."""
    return [line for line in capsys.readouterr().err.strip().splitlines() if "Loading weights" not in line]


def export(run: Path, out: Path, *flags: str) -> int:
    return cli(["export", "mlx", "--adapters", str(run), "--out", str(out), *flags])


@pytest.mark.parametrize("targets", [ATTN, ATTN_MLP], ids=["attn", "attn_mlp"])
@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_mlx_lm_reproduces_the_tune_from_the_exported_adapter(base, tmp_path, targets, dora, capsys):
    run = adapter_run(base, tmp_path / "run", targets, dora)
    out = tmp_path / "mlx"
    assert export(run, out) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "adapters.safetensors", "airoad_manifest.json", "export_info.json",
    ]  # fmt: skip
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == ("dora" if dora else "lora") and config["num_layers"] == 2
    assert config["lora_parameters"]["scale"] == 2.0 and len(config["lora_parameters"]["keys"]) == len(
        targets
    )
    check = json.loads((out / "export_info.json").read_text())["check"]
    assert check["adapter_effect"] > 0.1  # the adapter moved the logits...
    assert check["relative_dlogit"] < 1e-3  # ...and mlx-lm's logits are PEFT's within float32 rounding
    assert check["argmax_agreement"] == 1.0 and check["greedy"]["identical_from_start"] == [16, 16, 16]
    run_it = capsys.readouterr().out
    assert f"run it: mlx_lm.chat --model {base} --adapter-path {out} --system-prompt '{RUN_SYSTEM}'" in run_it


def test_an_untransposed_adapter_fails_the_check_and_nothing_is_written(base, tmp_path, monkeypatch, capsys):
    """The classic hand conversion: B into lora_a and A into lora_b, untransposed. On square
    projections (q_proj, o_proj) mlx-lm's shape check passes; the check must not."""
    import airoad.export.mlx_run as mlx_run
    from airoad.export import mlx_adapter

    def swapped(acfg, weights, n_layers):
        converted = mlx_adapter.convert(acfg, weights, n_layers)
        for name in list(converted.tensors):
            if name.endswith(".lora_a"):
                b = name[: -len("lora_a")] + "lora_b"
                converted.tensors[name], converted.tensors[b] = (
                    converted.tensors[b].T,
                    converted.tensors[name].T,
                )
        return converted

    run = adapter_run(base, tmp_path / "run", ["q_proj", "o_proj"], dora=False)
    monkeypatch.setattr(mlx_run, "convert", swapped)
    assert export(run, tmp_path / "mlx") == 1
    err = errors(capsys)
    assert len(err) == 1 and err[0].startswith("error: check failed: mlx-lm's logits differ")
    assert not (tmp_path / "mlx").exists() and not list(tmp_path.glob(".mlx.export-*"))


def test_fused_and_4bit_fused_models_load_and_generate_in_mlx_lm(base, tmp_path, capsys):
    import mlx_lm

    run = adapter_run(base, tmp_path / "run", ATTN_MLP, dora=True)
    assert export(run, tmp_path / "fused", "--fuse", "true") == 0, capsys.readouterr().err
    check = json.loads((tmp_path / "fused/export_info.json").read_text())["check"]
    assert check["relative_dlogit"] < 1e-3 and check["argmax_agreement"] == 1.0
    # 4-bit on a hidden size of 32 is rounding of random weights: the check reports it, no bar here
    assert (
        export(run, tmp_path / "q4", "--fuse", "true", "--quant", "4bit", "--min_argmax_agreement", "0") == 0
    )
    info = json.loads((tmp_path / "q4/export_info.json").read_text())
    assert info["quant"] == "4bit" and info["check"]["max_relative_dlogit"] is None
    assert json.loads((tmp_path / "q4/config.json").read_text())["quantization"]["bits"] == 4
    for d in ("fused", "q4"):
        model, tok = mlx_lm.load(str(tmp_path / d))
        assert len(list(mlx_lm.stream_generate(model, tok, "Hello", max_tokens=4))) == 4


@pytest.mark.parametrize(
    "edit, flags, message",
    [
        ({"modules_to_save": ["lm_head"]}, [], "modules_to_save"),
        ({"rank_pattern": {"q_proj": 8}}, [], "their own ranks"),
        ({"bias": "lora_only"}, [], "trains biases"),
        ({}, ["--quant", "4bit"], "--quant 4bit quantizes the fused model: add --fuse true"),
    ],
)
def test_what_mlx_lm_cannot_hold_is_one_line_and_nothing_is_written(
    base, tmp_path, edit, flags, message, capsys
):
    run = adapter_run(base, tmp_path / "run", ATTN, dora=False)
    cfg = json.loads((run / "adapter_config.json").read_text())
    (run / "adapter_config.json").write_text(json.dumps({**cfg, **edit}))
    assert export(run, tmp_path / "mlx", *flags) == 2
    err = errors(capsys)
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "mlx").exists()


def test_a_base_whose_rope_theta_mlx_lm_cannot_read_is_named_in_the_failed_check(
    tiny_model_dir, tmp_path, capsys
):
    run = adapter_run(tiny_model_dir, tmp_path / "run", ATTN_MLP, dora=False)  # rope_theta only nested
    assert export(run, tmp_path / "mlx") == 1
    err = capsys.readouterr().err
    assert "has rope_theta 10000 only under rope_parameters, which mlx-lm does not read" in err
    assert export(run, tmp_path / "fused", "--fuse", "true") == 0  # the fused config says it
