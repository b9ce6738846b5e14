"""`airoad export mlx`: a tune for mlx-lm (Apple silicon; MLX's CPU build elsewhere), checked by
mlx-lm itself before anything is kept.

    airoad export mlx --adapters outputs/my_run --out exports/my_run_mlx            # adapter folder
    airoad export mlx --adapters outputs/my_run --out exports/my_run_mlx_q4 --fuse --quant 4bit

1. Before any weights load: the adapter is one mlx-lm can hold (:mod:`airoad.export.mlx_adapter`
   refuses the rest in one line), ``--out`` is free (the core checked and holds it).
2. Default: ``adapters.safetensors`` + ``adapter_config.json`` in mlx-lm's format, for
   ``mlx_lm.* --model BASE --adapter-path OUT``. ``--fuse``: mlx-lm loads base + adapter, fuses
   each layer (its own ``fuse()``), optionally quantizes (``quantize_model``, group size 64) and
   saves an MLX model directory with the tokenizer and its chat template.
3. Check, by mlx-lm: it loads what was written and scores the check chats
   (:data:`airoad.export.common.CHECK_CHATS`); the tuned PyTorch model (PEFT, float32) scores them
   too, and so does its base (adapters off). Refused, exit 1, nothing written: argmax agreement
   below ``--min_argmax_agreement``, or (unquantized) max |dlogit| above
   ``--max_relative_dlogit`` x the adapter's own effect max |tuned - base|. Greedy generation of
   ``--greedy_tokens`` on each check chat's first question: identical tokens reported.
4. ``export_info.json`` (inputs, files, sizes, the check, the mlx_lm commands, versions) joins the
   files, and the staging dir becomes ``--out``.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airoad.core.base.commands import Invocation
from airoad.core.base.errors import CheckFailed, UserError
from airoad.core.base.io import write_json
from airoad.core.base.outputs import staged_dir
from airoad.core.model.adapter_source import ADAPTER_WEIGHTS, Source
from airoad.export.common import CHECK_CHATS, INFO, chat_ids, system_line
from airoad.export.mlx_adapter import MlxAdapter, convert
from airoad.export.schema import MlxConfig

MLX_INSTALL = 'pip install "mlx[cpu]" mlx-lm   (on a Mac: pip install mlx-lm)'
ADAPTER_FILES = ("adapters.safetensors", "adapter_config.json")
GROUP_SIZE = 64


def run(cfg: MlxConfig, inv: Invocation) -> None:
    if not all(importlib.util.find_spec(m) for m in ("mlx", "mlx_lm")):
        raise UserError(
            f"export mlx checks the export with mlx-lm itself, which is not installed: {MLX_INSTALL}"
        )
    export(cfg, inv.source, inv.printer)


def read_adapter(source: Source) -> MlxAdapter:
    """The run's PEFT adapter converted, or UserError naming what mlx-lm cannot hold."""
    from safetensors.numpy import load_file

    from airoad.core.model.model_source import resolve_model

    base_cfg = Path(resolve_model(source.base, key="base").path) / "config.json"
    try:
        n_layers = int(json.loads(base_cfg.read_text(encoding="utf-8"))["num_hidden_layers"])
    except (OSError, ValueError, KeyError) as e:
        raise UserError(
            f"--base_model {source.base}: no readable config.json with num_hidden_layers ({e})"
        ) from None
    weights = load_file(str(Path(source.adapters) / ADAPTER_WEIGHTS))
    return convert(source.adapter_config, weights, n_layers)


def export(cfg: MlxConfig, source: Source, printer: Callable[[str], None] = print) -> Path:
    from safetensors.numpy import save_file

    from airoad.core.model.model_source import resolve_model
    from airoad.core.run.artifacts import library_versions

    adapter = read_adapter(source)  # refusals come before anything loads or is written
    out = Path(cfg.out).expanduser()
    base = resolve_model(source.base, key="base").path  # a local dir: mlx-lm never goes to the hub
    kind = adapter.config["fine_tune_type"]
    what = "fused" + (f", {cfg.quant}" if cfg.quant != "none" else "") if cfg.fuse else "adapter folder"
    printer(f"export mlx: {source.base} + {source.adapters} ({source.adapter_kind}) as an mlx-lm {what}")
    tuned, tokenizer = load_tuned(source)
    system = system_line(cfg, source, tokenizer)
    started = time.perf_counter()
    with staged_dir(out, "export", "airoad export mlx") as (stage, scratch):
        adapter_dir = scratch if cfg.fuse else stage
        save_file(adapter.tensors, str(adapter_dir / ADAPTER_FILES[0]))
        write_json(adapter_dir / ADAPTER_FILES[1], adapter.config)
        if cfg.fuse:
            fuse(base, adapter_dir, stage, cfg.quant)
        model_dir, adapter_path = (stage, None) if cfg.fuse else (base, stage)
        check = verify(tuned, tokenizer, system, model_dir, adapter_path, cfg)
        printer(check_line(check))
        files = sorted(p.name for p in stage.iterdir())
        info = {
            "base": source.base,
            "adapters": str(source.adapters),
            "adapter": source.adapter_kind,
            "fine_tune_type": kind,
            "fused": cfg.fuse,
            "quant": cfg.quant,
            "files": {name: (stage / name).stat().st_size for name in files},
            "system_prompt": system,
            "check": check,
            "export_s": round(time.perf_counter() - started, 2),
            "run_it": commands(out, base, cfg.fuse, system),
            "versions": library_versions(extra=("mlx", "mlx-lm")),
        }
        write_json(stage / INFO, info)
    printer(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    for line in info["run_it"]:
        printer(f"run it: {line}")
    return out


def load_tuned(source: Source) -> tuple[Any, Any]:
    """The tuned PyTorch model (PEFT, adapters unmerged so they can be switched off) in float32 on
    the CPU, and its tokenizer."""
    import torch
    from transformers.utils import logging as hf_logging

    from airoad.core.model.loading import load_causal_lm, load_tokenizer
    from airoad.core.model.merging import attach_adapters
    from airoad.core.model.model_source import resolve_model

    hf_logging.disable_progress_bar()  # our own lines say what is loading
    base = resolve_model(source.base, key="base")
    tok_from = base if source.tokenizer_from == source.base else source.tokenizer_from
    tokenizer = load_tokenizer(tok_from, False, key="base")
    model = attach_adapters(load_causal_lm(base, torch.float32, key="base"), source)
    return model.eval(), tokenizer


def fuse(base: str, adapter_dir: Path, stage: Path, quant: str) -> None:
    """mlx-lm's own fuse (each LoRA/DoRA layer's ``fuse()``), then its quantization, saved to ``stage``."""
    import mlx_lm
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import quantize_model, save

    model, tokenizer, config = mlx_lm.load(base, adapter_path=str(adapter_dir), return_config=True)
    if hidden := nested_rope_theta(config):  # written where mlx-lm reads it (rope plays no part in fusing)
        config["rope_theta"] = hidden
    fused = [(n, m.fuse()) for n, m in model.named_modules() if hasattr(m, "fuse")]
    model.update_modules(tree_unflatten(fused))
    if quant != "none":
        model, config = quantize_model(model, config, GROUP_SIZE, int(quant.removesuffix("bit")))
    save(stage, base, model, tokenizer, config, donate_model=False)


def nested_rope_theta(config: dict) -> float | None:
    """rope_theta when a config holds it only under ``rope_parameters`` (transformers 5 writes it
    there), where mlx-lm 0.32's Qwen2 does not look: it then assumes 1e6, Qwen2.5's own value."""
    nested = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
    return nested.get("rope_theta") if "rope_theta" not in config and "rope_theta" in nested else None


def rope_hint(model_dir: Any) -> str:
    """A hint for a failed check whose cause may be the base config's nested rope_theta."""
    try:
        theta = nested_rope_theta(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return ""
    if theta is None or theta == 1e6:
        return ""
    return (
        f"; the base's config.json has rope_theta {theta:g} only under rope_parameters, which mlx-lm "
        "does not read (it assumes 1e6): export with --fuse (its config says it), or add "
        f'"rope_theta": {theta:g} to the base\'s config.json'
    )


def verify(
    tuned: Any, tokenizer: Any, system: str | None, model_dir: Any, adapter_path: Any, cfg: MlxConfig
) -> dict:
    """mlx-lm loads the export and is compared with the tuned and base PyTorch model (module docstring)."""
    import mlx.core as mx
    import mlx_lm
    import numpy as np
    import torch

    model, mlx_tok = mlx_lm.load(str(model_dir), adapter_path=str(adapter_path) if adapter_path else None)
    if cfg.quant != "none" and mx.default_device() == mx.cpu:
        # MLX's CPU quantized kernels take minutes per forward (215 s for 60 tokens of the 0.5B):
        # the check runs the written quantized weights dequantized (what a Mac's kernels compute,
        # up to their rounding)
        from mlx_lm.utils import dequantize_model

        model = dequantize_model(model)
    diff = effect = 0.0
    agree = positions = 0
    for ids in chat_ids(tokenizer, system):
        with torch.no_grad():
            t = tuned(input_ids=ids).logits[0].float().numpy()
            with tuned.disable_adapter():
                b = tuned(input_ids=ids).logits[0].float().numpy()
        m = np.array(model(mx.array(ids.tolist())).astype(mx.float32))[0]
        diff, effect = max(diff, float(np.abs(m - t).max())), max(effect, float(np.abs(t - b).max()))
        agree += int((m.argmax(-1) == t.argmax(-1)).sum())
        positions += ids.shape[1]
    check = {
        "max_abs_dlogit": diff,
        "adapter_effect": effect,
        "relative_dlogit": diff / effect if effect else float("inf"),
        "argmax_agreement": agree / positions,
        "positions": positions,
        "greedy": greedy_match(tuned, tokenizer, model, system, cfg.greedy_tokens),
        "min_argmax_agreement": cfg.min_argmax_agreement,
        "max_relative_dlogit": None if cfg.quant != "none" else cfg.max_relative_dlogit,
    }
    gate_relative = cfg.quant == "none" and not check["relative_dlogit"] <= cfg.max_relative_dlogit
    if check["argmax_agreement"] < cfg.min_argmax_agreement or gate_relative:
        raise CheckFailed(
            f"check failed: mlx-lm's logits differ from the tuned model's by up to {diff:.3g} "
            f"({check['relative_dlogit']:.1%} of the adapter's own effect {effect:.3g}; max {cfg.max_relative_dlogit:g}), "
            f"argmax agreement {check['argmax_agreement']:.1%} (min {cfg.min_argmax_agreement:g}); nothing written"
            + rope_hint(model_dir)
        )
    return check


def greedy_match(tuned: Any, tokenizer: Any, model: Any, system: str | None, n: int) -> dict:
    """Greedy tokens of PyTorch and mlx-lm on each check chat's first question: how many agree
    from the start, per chat."""
    import mlx_lm

    from airoad.core.model.generate import generate

    head = [{"role": "system", "content": system}] if system else []
    firsts = [head + chat[:1] for chat in CHECK_CHATS]
    ours = generate(tuned, tokenizer, firsts, max_new_tokens=n, batch_size=1)
    same = []
    for g in ours:
        theirs = [r.token for r in mlx_lm.stream_generate(model, tokenizer, g.prompt_ids, max_tokens=n)]
        k = 0
        while k < min(len(theirs), len(g.new_ids)) and theirs[k] == g.new_ids[k]:
            k += 1
        same.append(k)
    return {"tokens": n, "identical_from_start": same}


def commands(out: Path, base: str, fused: bool, system: str | None) -> list[str]:
    """What a Mac user types, with this export's paths and system prompt."""
    model = ["--model", str(out)] if fused else ["--model", base, "--adapter-path", str(out)]
    chat = ["mlx_lm.chat", *model] + (["--system-prompt", system] if system else [])
    return [shlex.join(chat), shlex.join(["mlx_lm.server", *model, "--port", "8080"])]


def check_line(check: dict) -> str:
    g = check["greedy"]
    return (
        f"verified by mlx-lm: on {check['positions']} positions max |dlogit| {check['max_abs_dlogit']:.3g} "
        f"({check['relative_dlogit']:.1%} of the adapter's effect {check['adapter_effect']:.3g}), argmax agreement "
        f"{check['argmax_agreement']:.1%}; greedy tokens identical from the start: {g['identical_from_start']} of {g['tokens']}"
    )
