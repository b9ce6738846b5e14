"""The lane `airoad compare` and `airoad eval` share: inputs -> prompts -> one model -> answers per side.

Sides: "base" (the --base_model model; with --adapters, the same PEFT model with its adapters disabled)
and "tuned" (adapters on), or just "base" when no adapters are given (e.g. a merged checkpoint).
Every side answers the same prompts with the same decoding settings and seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airoad.core.model.adapter_source import Source
from airoad.infer.loading import Loaded, load
from airoad.infer.prompts import Prompt, load_prompts
from airoad.infer.schema import GenerateOptions


@dataclass
class Answers:
    loaded: Loaded
    prompts: list[Prompt]
    prompts_from: str  # the prompt file, or "bundled"
    system_prompt: str | None  # the system turn given to prompts without their own (None: template default)
    by_side: dict[str, list[Any]]  # side -> [Generation], one per prompt, in prompt order


def answer_all(cfg: GenerateOptions, source: Source, printer: Callable[[str], None] = print) -> Answers:
    """Read prompts (user errors surface before any weights load), load ``source`` (the core
    resolved it), then generate every side's answers."""
    from airoad.core.model.generate import generate

    path = prompt_path(cfg, source)
    prompts = load_prompts(path, cfg.n, cfg.seed)
    for note in source.notes:
        printer(note)
    if path and not cfg.prompts:
        printer(f"prompts: the run's dev set {path} (its dev_path); --prompts FILE for others")
    loaded = load(source, cfg.device, cfg.dtype, cfg.trust_remote_code)
    printer(model_line(loaded, len(prompts), cfg))
    system = loaded.system_prompt(cfg.system_prompt)
    messages = [p.messages(system) for p in prompts]
    # An untimed warm-up, so the first side's tokens/s does not pay one-time kernel/allocator costs.
    generate(loaded.model, loaded.tokenizer, messages[:1], max_new_tokens=2)
    by_side = {side: answer_as(loaded, side, messages, cfg, printer) for side in loaded.sides}
    return Answers(loaded, prompts, path or "bundled", system, by_side)


def prompt_path(cfg: GenerateOptions, source: Source) -> str | None:
    """Where the prompts come from: --prompts; else the run's own dev set (judge a tune on its
    held-out rows); else None, airoad's bundled prompts."""
    return cfg.prompts or source.dev_path


def model_line(loaded: Loaded, n_prompts: int, cfg: Any) -> str:
    """ "model: BASE + ADAPTERS (LoRA r=16) on cpu (float32); N prompts, greedy, ..." """
    source = loaded.source
    tuned = f" + {source.adapters} ({source.adapter_kind})" if source.adapters else ""
    dtype = str(loaded.dtype).replace("torch.", "")
    return (
        f"model: {source.base}{tuned} on {loaded.device} ({dtype}); {n_prompts} prompts, {decoding_text(cfg)}"
    )


def answer_as(
    loaded: Loaded, side: str, messages: list[Any], cfg: Any, printer: Callable[[str], None]
) -> list[Any]:
    """Side ``side``'s answers to ``messages`` (one Generation each, in order), decoded as ``cfg`` says."""
    from airoad.core.model.generate import generate

    with loaded.side(side):
        return generate(
            loaded.model,
            loaded.tokenizer,
            messages,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            progress=lambda done, total: printer(f"  {side}: {done}/{total} prompts answered"),
        )


def decoding_text(cfg: GenerateOptions) -> str:
    how = "greedy" if cfg.temperature == 0 else f"temperature {cfg.temperature:g} (seed {cfg.seed})"
    return f"{how}, max_new_tokens {cfg.max_new_tokens}, batch {cfg.batch_size}"


def side_record(gen: Any) -> dict[str, Any]:
    """The JSON record of one answer (a :class:`~airoad.core.model.generate.Generation`)."""
    return {
        "answer": gen.text,
        "n_tokens": gen.n_tokens,
        "stopped": gen.stopped,
        "seconds": round(gen.seconds, 4),
        "tokens_per_s": round(gen.tokens_per_s, 3),
    }


def report_header(command: str, cfg: GenerateOptions, ans: Answers) -> dict[str, Any]:
    """What every compare/eval report starts with: inputs, settings and the sides present."""
    src = ans.loaded.source
    return {
        "command": command,
        "base": src.base,
        "adapters": str(src.adapters) if src.adapters else None,
        "adapter": src.adapter_kind or None,
        "prompts": ans.prompts_from,
        "n_prompts": len(ans.prompts),
        "system_prompt": ans.system_prompt,
        "decoding": {
            "temperature": cfg.temperature,
            "max_new_tokens": cfg.max_new_tokens,
            "seed": cfg.seed,
            "batch_size": cfg.batch_size,
        },
        "device": ans.loaded.device,
        "dtype": str(ans.loaded.dtype).replace("torch.", ""),
        "sides": list(ans.by_side),
    }


def sample_records(ans: Answers, extra: Callable[[str, int], dict[str, Any]] | None = None) -> list[dict]:
    """One record per prompt: source, system (None: template default), prompt, then one entry per side
    (plus ``extra(side, i)``)."""
    rows = []
    for i, p in enumerate(ans.prompts):
        system = p.system if p.system is not None else ans.system_prompt  # what the model saw
        row: dict[str, Any] = {"source": p.source, "system": system, "prompt": p.user}
        for side, gens in ans.by_side.items():
            row[side] = {**side_record(gens[i]), **(extra(side, i) if extra else {})}
        rows.append(row)
    return rows
