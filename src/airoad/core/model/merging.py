"""An adapter folded into its base, in memory: the one path every command that needs a tuned
model as plain weights takes (``airoad merge`` writes it as a checkpoint, ``airoad export`` as
GGUF).

:func:`attach_adapters` wraps a loaded base with a run's adapters (``PeftModel.from_pretrained``,
safetensors only); :func:`merge_adapters` folds them in with PEFT's ``merge_and_unload``
(``safe_merge``: NaNs are refused; LoRA and DoRA alike); :func:`load_merged` does both from a
resolved :class:`~airoad.core.model.adapter_source.Source`, in float32 (merge arithmetic in bf16 would
round a small adapter update away).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airoad.core.model.adapter_source import ADAPTER_WEIGHTS, Source
from airoad.core.model.loading import (
    LoadError,
    first_line,
    load_causal_lm,
    load_tokenizer,
    quiet_renames,
    safetensors_header,
)
from airoad.core.model.model_source import resolve_model


def attach_adapters(model: Any, source: Source, trainable: bool = False) -> Any:
    """Wrap ``model`` with the adapters of ``source`` (inference mode, or ``trainable``): the one
    adapter load of every command and lane. LoadError (one line) if they do not fit the base: a
    module the base lacks, a shape from another model, or anything PEFT refuses."""
    from peft import PeftModel

    from airoad.core.kernels.dora_cache import cache_dora_norms

    label = f"{source.adapter_flag} {source.adapters}"
    if why := fit_problem(model, safetensors_header(Path(source.adapters) / ADAPTER_WEIGHTS)):
        raise LoadError(f"{label}: does not fit {source.base} ({why}); pass the base it was trained on")
    try:
        peft_model = PeftModel.from_pretrained(model, str(source.adapters), is_trainable=trainable)
    except Exception as e:  # PEFT raises many types for a bad config; all are the user's file
        raise LoadError(
            f"{label}: does not load onto {source.base} ({type(e).__name__}: {first_line(e)[:300]}); "
            "pass the base it was trained on, or restore the adapter the run wrote"
        ) from None
    if not trainable:
        cache_dora_norms(peft_model)  # DoRA decoding would otherwise recompute every norm per token
    return peft_model


def fit_problem(model: Any, header: dict[str, Any]) -> str | None:
    """The first adapter tensor that does not fit ``model`` (its module is missing, or its shape is
    another model's), as "q_proj of layer 0 is 896 -> 896 here, the adapter's 64 -> 64", or None."""
    shapes = {k: v.get("shape") for k, v in header.items() if isinstance(v, dict)}
    for key, a in shapes.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removesuffix(".lora_A.weight").removeprefix("base_model.model.")
        b = shapes.get(key.replace(".lora_A.", ".lora_B."))
        try:
            module = model.get_submodule(name)
        except AttributeError:
            return f"it adapts {name}, which this base does not have"
        have = (getattr(module, "in_features", None), getattr(module, "out_features", None))
        if None in have or not (isinstance(a, list) and isinstance(b, list)):
            continue
        if (a[-1], b[0]) != have:
            return f"{name} is {have[0]} -> {have[1]} in this base, {a[-1]} -> {b[0]} in the adapter"
    return None


def tied(model: Any) -> bool:
    """True when the output head and the input embeddings are the same tensor."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and head.weight.data_ptr() == emb.weight.data_ptr()


def merge_adapters(peft_model: Any, label: str) -> Any:
    """``peft_model.merge_and_unload(safe_merge=True)``: the plain model with the adapter update in
    its weights. LoadError naming ``label`` (the adapter dir) when the merge finds NaNs."""
    try:
        return peft_model.merge_and_unload(safe_merge=True)
    except ValueError as e:  # safe_merge found NaNs
        raise LoadError(f"--adapters {label}: merge failed ({first_line(e)})") from None


def load_merged(source: Source, device: str = "cpu", trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of ``source``: the base in float32 on ``device`` (eval mode), with the
    adapters merged in when ``source`` has them; the tokenizer the run trained with."""
    import torch

    quiet_renames()  # loading a model calls transformers' renamed checkpointing API
    base = resolve_model(source.base, key="base")  # an unreachable hub: one line, now
    tok_from = base if source.tokenizer_from == source.base else source.tokenizer_from
    tokenizer = load_tokenizer(tok_from, trust_remote_code, key="base")
    model = load_causal_lm(base, torch.float32, trust_remote_code=trust_remote_code, key="base")
    if source.adapters:
        model = merge_adapters(attach_adapters(model, source), str(source.adapters))
    return model.to(device).eval(), tokenizer
