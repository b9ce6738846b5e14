"""`airoad merge`: fold a LoRA/DoRA adapter into its base and write a plain transformers checkpoint.

    airoad merge --adapters outputs/qwen05b_fast_plain --out checkpoints/x_merged [--base_model B] [--dtype bfloat16]

1. Before any weights load: ``--out`` must be empty or absent (``--overwrite true`` replaces it),
   must not be or contain an input, and the adapter dir must be usable.
2. The base loads in float32 on ``--device`` (default cpu) and the adapters are attached: merge
   arithmetic in bf16 would round the small adapter update away.
3. Probe: logits of base+adapter (and of the base alone, to show the adapter's effect) on a short
   rendered chat. Then ``merge_and_unload(safe_merge=True)`` (PEFT; LoRA and DoRA).
4. Check: max |merged - (base+adapter)| over the probe's logits must be <= ``--tolerance``
   (default 1e-2, fp32). A correct merge differs by float rounding only (2e-7 on the tiny test
   model; expected, not yet measured, to stay far below 1e-2 on the real 0.5B); a merge that drops
   the scale or a module differs by about the adapter's own effect. Both numbers are printed.
   Tied input/output embeddings (Qwen2.5-0.5B ties lm_head to embed_tokens) must still be one tensor.
5. Cast to ``--dtype`` (auto: the base checkpoint's), save weights (safetensors), config, tokenizer
   with its chat template, generation config (eos = the model's eos ids + the tokenizer's eos + the
   template's end-of-turn token; pad set) and ``airoad_merge.json`` (inputs, check numbers,
   versions) into a temp dir beside ``--out``, then rename it into place (an old ``--out`` is moved
   aside whole first, so no stale shard of it survives).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airoad.core.base.commands import Invocation
from airoad.core.base.errors import UserError
from airoad.core.base.io import write_json
from airoad.core.base.outputs import staged_dir
from airoad.core.model.adapter_source import Source
from airoad.core.model.merging import merge_adapters, tied
from airoad.infer.loading import load
from airoad.infer.schema import MergeConfig

MERGE_INFO = "airoad_merge.json"
PROBE = [
    {"role": "user", "content": "Merge check: name three primary colours."},
    {"role": "assistant", "content": "Red, yellow and blue."},
]


class MergeError(UserError):
    """The merge cannot be written (bad --out, failed check); one line each."""


def saved_dtype(base: str, requested: str, trust_remote_code: bool) -> Any:
    """torch dtype to save in: ``requested``, or for "auto" the dtype the base checkpoint declares (else fp32)."""
    import torch
    from transformers import AutoConfig

    if requested != "auto":
        return getattr(torch, requested)
    cfg = AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code)
    declared = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared.replace("torch.", ""), None)
    return declared if isinstance(declared, torch.dtype) else torch.float32


def probe_logits(model: Any, ids: Any) -> Any:
    """Full fp32 logits [1, T, V] for the probe ids (T is a few dozen tokens)."""
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def merged_generation_config(model: Any, tokenizer: Any) -> Any:
    """The base's generation config with eos = its eos ids + tokenizer eos + end-of-turn, and pad set."""

    from airoad.core.model.generate import end_of_turn_id

    gen = copy.deepcopy(model.generation_config)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    ids = list(
        dict.fromkeys(i for i in [*eos, tokenizer.eos_token_id, end_of_turn_id(tokenizer)] if i is not None)
    )
    gen.eos_token_id = ids[0] if len(ids) == 1 else ids
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    return gen


def merge_and_check(loaded: Any, tolerance: float) -> tuple[Any, dict[str, Any]]:
    """Merge ``loaded.model`` (PeftModel, fp32); returns (merged model, check numbers). MergeError if off."""
    tok = loaded.tokenizer
    text = tok.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=False)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(loaded.device)
    peft_model = loaded.model
    was_tied = tied(peft_model.get_base_model())
    with_adapter = probe_logits(peft_model, ids)
    with peft_model.disable_adapter():
        effect = float((probe_logits(peft_model, ids) - with_adapter).abs().max())
    merged = merge_adapters(peft_model, str(loaded.source.adapters))
    diff = float((probe_logits(merged, ids) - with_adapter).abs().max())
    check = {
        "max_abs_diff": diff,
        "adapter_effect": effect,
        "tolerance": tolerance,
        "probe_tokens": ids.shape[1],
    }
    if not diff <= tolerance:  # also catches NaN
        raise MergeError(
            f"merge check failed: merged logits differ from base+adapter by {diff:.3g} > --tolerance "
            f"{tolerance:g} (the adapter itself moves them by {effect:.3g}); nothing written"
        )
    if was_tied and not tied(merged):
        raise MergeError(
            "merge check failed: the base ties lm_head to embed_tokens but the merged model does not "
            "(did the adapter train one of them?); nothing written"
        )
    return merged, check


def run(cfg: MergeConfig, inv: Invocation) -> None:
    """`airoad merge` as the core runs it (inputs resolved, ``--out`` checked and held)."""
    merge(cfg, inv.source, inv.printer)


def merge(cfg: MergeConfig, source: Source, printer: Callable[[str], None] = print) -> Path:
    """Run the merge (module docstring) of the resolved ``source``; returns the output directory."""
    from airoad.core.run.artifacts import library_versions

    out = Path(cfg.out).expanduser()
    for note in source.notes:
        printer(note)
    loaded = load(source, cfg.device, "float32", cfg.trust_remote_code)
    out_dtype = saved_dtype(source.base, cfg.dtype, cfg.trust_remote_code)
    printer(f"merge: {source.base} + {source.adapters} ({source.adapter_kind}) on {loaded.device} in float32")
    merged, check = merge_and_check(loaded, cfg.tolerance)
    printer(
        f"check: base+adapter vs merged logits on {check['probe_tokens']} tokens: max |diff| "
        f"{check['max_abs_diff']:.3g} <= {cfg.tolerance:g} (the adapter moves them by up to {check['adapter_effect']:.3g})"
    )
    merged.generation_config = merged_generation_config(merged, loaded.tokenizer)
    info = {
        "base": source.base,
        "adapters": str(source.adapters),
        "adapter": source.adapter_kind,
        "dtype": str(out_dtype).replace("torch.", ""),
        "check": check,
        "versions": library_versions(),
    }
    save_checkpoint(merged.to(out_dtype), loaded.tokenizer, info, out)
    printer(f"wrote {out} ({info['dtype']}): {', '.join(sorted(p.name for p in out.iterdir()))}")
    return out


def save_checkpoint(model: Any, tokenizer: Any, info: dict[str, Any], out: Path) -> None:
    """Weights, config, generation config, tokenizer and MERGE_INFO, staged beside ``out`` then renamed in."""

    with staged_dir(out, "merge", "airoad merge") as (stage, _):
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        write_json(stage / MERGE_INFO, info)
