"""What every `airoad export` target shares beyond its options (:class:`~airoad.export.schema.ExportKeys`)
and its staging (:func:`airoad.core.base.outputs.staged_dir`): the chats the export is checked on,
the system prompt the tune is deployed with, and the logit comparison of tuned and exported model."""

from __future__ import annotations

from typing import Any

from airoad.export.ollama import template_default_system

INFO = "export_info.json"
CHECK_CHATS = [
    [
        {"role": "user", "content": "Name three primary colours."},
        {"role": "assistant", "content": "Red, yellow and blue."},
    ],
    [
        {"role": "user", "content": "What is 12 times 7?"},
        {"role": "assistant", "content": "12 x 7 = 84."},
        {"role": "user", "content": "And divided by 4?"},
        {"role": "assistant", "content": "84 / 4 = 21."},
    ],
    [
        {"role": "user", "content": "Write one sentence about the sea, in Markdown with a heading."},
        {"role": "assistant", "content": "# The sea\n\nThe sea keeps moving, even when the wind is still."},
    ],
]


def chat_ids(tokenizer: Any, system: str | None) -> list[Any]:
    """Token ids [1, T] of each check chat rendered with the chat template (``system`` first if set)."""
    head = [{"role": "system", "content": system}] if system else []
    rendered = [tokenizer.apply_chat_template(head + c, tokenize=False) for c in CHECK_CHATS]
    return [tokenizer(t, add_special_tokens=False, return_tensors="pt")["input_ids"] for t in rendered]


def system_line(cfg: Any, source: Any, tokenizer: Any) -> str | None:
    """The system turn an export carries: --system_prompt, else the run's, else the chat
    template's default turn; ``--system_prompt ""`` means that default, as in every command."""
    if cfg.system_prompt:
        return cfg.system_prompt
    if cfg.system_prompt is None and source.system_prompt:
        return source.system_prompt
    return template_default_system(tokenizer)


def compare_logits(tuned: Any, exported: Any, ids: list[Any], device: str) -> dict[str, Any]:
    """Max |dlogit| and argmax agreement of two models over every position of ``ids``."""
    import torch

    diff, agree, positions, scale = 0.0, 0, 0, 0.0
    with torch.no_grad():
        for x in ids:
            a = tuned(input_ids=x.to(device)).logits.float()
            b = exported(input_ids=x.to(device)).logits.float()
            diff = max(diff, float((a - b).abs().max()))
            scale = max(scale, float(a.abs().max()))
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            positions += x.shape[1]
    return {
        "max_abs_dlogit": diff,
        "max_abs_logit": scale,
        "argmax_agreement": agree / positions,
        "positions": positions,
        "chats": len(ids),
    }
