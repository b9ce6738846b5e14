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

from typing import Any

from airoad.core.model.adapter_source import Source
from airoad.core.model.loading import LoadError, first_line, load_causal_lm, load_tokenizer, quiet_renames


def attach_adapters(model: Any, source: Source) -> Any:
    """Wrap ``model`` with the adapters of ``source`` (inference mode); LoadError if they do not fit."""
    from peft import PeftModel

    from airoad.core.kernels.dora_cache import cache_dora_norms

    try:
        peft_model = PeftModel.from_pretrained(model, str(source.adapters), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise LoadError(
            f"--adapters {source.adapters}: does not load onto {source.base} ({first_line(e)[:300]}); "
            "pass the --base it was trained on"
        ) from None
    cache_dora_norms(peft_model)  # DoRA decoding would otherwise recompute every norm per token
    return peft_model


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

    from airoad.core.model.model_source import resolve_model

    quiet_renames()  # loading a model calls transformers' renamed checkpointing API
    base = resolve_model(source.base, key="base")  # an unreachable hub: one line, now
    tok_from = base if source.tokenizer_from == source.base else source.tokenizer_from
    tokenizer = load_tokenizer(tok_from, trust_remote_code, key="base")
    model = load_causal_lm(base, torch.float32, trust_remote_code=trust_remote_code, key="base")
    if source.adapters:
        model = merge_adapters(attach_adapters(model, source), str(source.adapters))
    return model.to(device).eval(), tokenizer
