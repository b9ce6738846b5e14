"""`airoad compare`: base and tuned answers to the same prompts, side by side.

    airoad compare --adapters outputs/qwen05b_fast_plain [--prompts FILE] [--n N] [--out DIR]
    airoad compare --base_model checkpoints/x_merged            # one column: sample a (merged) model

Prints each prompt with every side's answer. ``--out DIR`` writes DIR/compare.md and
DIR/compare.json; ``--out FILE.md`` or ``--out FILE.json`` writes just that file. The JSON holds
the settings (:func:`airoad.infer.sides.report_header`) and ``samples``: one record per prompt
with ``source``, ``system``, ``prompt`` and, per side, ``answer``, ``n_tokens``, ``stopped``,
``seconds``, ``tokens_per_s``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airoad.core.base.commands import Invocation
from airoad.core.base.errors import UserError
from airoad.core.base.io import write_json, write_text
from airoad.core.model.adapter_source import Source
from airoad.infer.schema import CompareConfig
from airoad.infer.sides import answer_all, report_header, sample_records


def report_paths(out: str | None) -> tuple[Path | None, Path | None]:
    """(markdown path, json path) for ``--out``; checked before any model loads."""
    if not out or not out.strip():
        return None, None
    p = Path(out).expanduser()
    if p.suffix == ".md":
        return p, None
    if p.suffix == ".json":
        return None, p
    if p.exists() and not p.is_dir():
        raise UserError(f"--out {p}: is a file; give a directory, or a path ending in .md or .json")
    return p / "compare.md", p / "compare.json"


def fenced(text: str) -> str:
    """``text`` in a fenced block whose fence is longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def one_line(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def side_summary(rec: dict[str, Any]) -> str:
    end = "" if rec["stopped"] else ", cut at max_new_tokens"
    return f"{rec['n_tokens']} tokens, {rec['tokens_per_s']:.1f} tok/s{end}"


def to_markdown(report: dict[str, Any]) -> str:
    adapters = f"`{report['adapters']}` ({report['adapter']})" if report["adapters"] else "none"
    dec = report["decoding"]
    how = "greedy" if dec["temperature"] == 0 else f"temperature {dec['temperature']:g}, seed {dec['seed']}"
    lines = [
        "# airoad compare",
        "",
        f"- base: `{report['base']}`",
        f"- adapters: {adapters}",
        f"- prompts: {report['prompts']} ({report['n_prompts']})",
        f"- system prompt: {report['system_prompt'] or 'chat template default'} (unless the prompt row has one)",
        f"- decoding: {how}, max_new_tokens {dec['max_new_tokens']}; {report['device']}, {report['dtype']}",
    ]
    for k, s in enumerate(report["samples"], start=1):
        lines += ["", f"## {k}. {one_line(s['prompt'])}", "", f"Source: `{s['source']}`"]
        if s["system"]:
            lines += ["", f"System: {one_line(s['system'], 200)}"]
        lines += ["", "**Prompt**", "", fenced(s["prompt"])]
        for side in report["sides"]:
            lines += ["", f"**{side}** ({side_summary(s[side])})", "", fenced(s[side]["answer"])]
    return "\n".join(lines) + "\n"


def to_terminal(report: dict[str, Any]) -> str:
    width = max(map(len, report["sides"]))
    blocks = []
    for k, s in enumerate(report["samples"], start=1):
        head = f"=== [{k}/{len(report['samples'])}] {s['source']}\nprompt: {s['prompt']}"
        if s["system"]:
            head += f"\nsystem: {one_line(s['system'], 120)}"
        parts = [head]
        for side in report["sides"]:
            parts.append(f"--- {side:<{width}}  ({side_summary(s[side])})\n{s[side]['answer'].rstrip()}")
        blocks.append("\n".join(parts))
    return "\n\n".join(blocks)


def report_outputs(cfg: CompareConfig) -> list[tuple[str, Path | None, str]]:
    """The report files ``--out`` names, as outputs for the core to check and hold."""
    return [("--out", p, "file") for p in report_paths(cfg.out) if p]


def run(cfg: CompareConfig, inv: Invocation) -> None:
    """`airoad compare` as the core runs it (inputs resolved, report paths checked and held)."""
    compare(cfg, inv.source, inv.printer)


def compare(cfg: CompareConfig, source: Source, printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate every side's answers, print them, write the reports asked for; returns the report."""

    md_path, json_path = report_paths(cfg.out)
    ans = answer_all(cfg, source, printer)
    report = {**report_header("compare", cfg, ans), "samples": sample_records(ans)}
    printer("")
    printer(to_terminal(report))
    written = []
    if md_path:
        write_text(md_path, to_markdown(report))
        written.append(str(md_path))
    if json_path:
        write_json(json_path, report)
        written.append(str(json_path))
    if written:
        printer(f"\nwrote {', '.join(written)}")
    return report
