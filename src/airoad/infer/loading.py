"""Where base, adapter, tokenizer and system prompt come from; one model in memory for both sides.

:func:`resolve_source` checks paths and reads the adapter dir's metadata without torch, so a wrong
path fails in a second with one line. :func:`load` then loads the base once and wraps it with
``PeftModel.from_pretrained`` (safetensors only); :meth:`Loaded.side` serves the "base" side of a
comparison from the same weights with the adapters disabled (peft ``disable_adapter``).

Base model, first found: ``--base_model``; the run's ``run_config.yaml`` (``base_model``);
``adapter_config.json`` (``base_model_name_or_path``). Tokenizer: the adapter dir's when it has
one (a run saves the tokenizer it trained with), else the base's.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any

from airoad.core.model.adapter_source import (  # noqa: F401  (re-exported: the tools' names for them)
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    RUN_CONFIG,
    Source,
    check_adapter_dir,
    resolve_source,
)
from airoad.core.model.loading import LoadError, first_line, load_causal_lm, load_tokenizer  # noqa: F401
from airoad.core.model.merging import attach_adapters
from airoad.core.model.model_source import resolve_model


@dataclass
class Loaded:
    """The model (a PeftModel when adapters were given; eval mode, on ``device``) and its tokenizer."""

    model: Any
    tokenizer: Any
    source: Source
    device: str
    dtype: Any

    @property
    def sides(self) -> list[str]:
        """Names of the sides this model can answer as: ["base", "tuned"], or ["base"] without adapters."""
        return ["base", "tuned"] if self.source.adapters else ["base"]

    def side(self, name: str) -> contextlib.AbstractContextManager:
        """Context in which ``self.model`` answers as side ``name`` ("base" disables the adapters)."""
        if name not in self.sides:
            raise ValueError(f"unknown side {name!r}; this model has {self.sides}")
        if name == "base" and self.source.adapters:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def system_prompt(self, override: str | None) -> str | None:
        """``override`` (the --system_prompt flag) if given, else the run's; "" means none."""
        chosen = override if override is not None else self.source.system_prompt
        return chosen or None


def load(
    source: Source, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
) -> Loaded:
    """Load tokenizer, base weights (once) and adapters; device/dtype per airoad.core.model.devices."""

    from transformers.utils import logging as hf_logging

    from airoad.core.model.devices import pick_device, pick_dtype

    hf_logging.disable_progress_bar()  # our own lines say what is loading
    # peft calls a transformers property deprecated in v5 when it wraps a model: harmless noise
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    base = resolve_model(source.base, key="base")  # an unreachable hub: one line, now
    tok_from = base if source.tokenizer_from == source.base else source.tokenizer_from
    tokenizer = load_tokenizer(tok_from, trust_remote_code, key="base")
    model = load_causal_lm(base, dt, trust_remote_code=trust_remote_code, key="base")
    if source.adapters:
        model = attach_adapters(model, source)
    model.to(dev).eval()
    return Loaded(model=model, tokenizer=tokenizer, source=source, device=dev, dtype=dt)
