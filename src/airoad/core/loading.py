"""The one loader of tokenizers and causal-LM weights, with one error path, for every command.

Weights load from safetensors only (a pickled ``.bin`` can run code), through
:func:`airoad.lean_load.load_widened` (a bf16 checkpoint widened to fp32 tensor by tensor, ~1 GB
lower peak). A model named by hub id is resolved first (:mod:`airoad.core.model_source`), so an
unreachable hub is one line in a second, not a minute of retries.
"""

from __future__ import annotations

from typing import Any

from airoad.core.model_source import ModelSource, resolve_model
from airoad.errors import UserError


class LoadError(UserError):
    """A model, adapter or tokenizer that cannot be used (one line each)."""


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(e).__name__


def _source(model: ModelSource | str, key: str) -> ModelSource:
    return model if isinstance(model, ModelSource) else resolve_model(model, key)


def load_tokenizer(model: ModelSource | str, trust_remote_code: bool = False, key: str = "base_model") -> Any:
    """A fast tokenizer with a chat template and a pad token (eos when the model has none)."""
    from transformers import AutoTokenizer

    src = _source(model, key)
    try:
        tok = AutoTokenizer.from_pretrained(src.path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise LoadError(
            f"{key} {src.name!r}: cannot load its tokenizer ({first_line(e)}); give a local model "
            "directory or a hub id that is in the local cache"
        ) from None
    if not getattr(tok, "chat_template", None):
        raise LoadError(f"{key} {src.name!r} has no chat template; use a chat/instruct model")
    if not tok.is_fast:
        raise LoadError(f"{key} {src.name!r} has no fast tokenizer (needed for exact loss masks)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    model: ModelSource | str,
    dtype: Any,
    *,
    trust_remote_code: bool = False,
    key: str = "base_model",
    **kwargs: Any,
) -> Any:
    """``AutoModelForCausalLM`` weights in ``dtype`` from safetensors; ``kwargs`` go to from_pretrained
    (quantization_config, device_map)."""
    from transformers import AutoModelForCausalLM

    from airoad.lean_load import load_widened

    src = _source(model, key)
    try:
        return load_widened(
            AutoModelForCausalLM,
            src.path,
            dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            **kwargs,
        )
    except (OSError, ValueError) as e:
        raise LoadError(
            f"{key} {src.name!r}: cannot load safetensors weights ({first_line(e)}); give a model "
            "directory with *.safetensors or a hub id in the local cache (pickled .bin weights are "
            "never loaded: they can run code)"
        ) from None
