"""`airoad eval`: style scores of base and tuned answers, and how far the tuned model drifted.

    airoad eval --adapters outputs/qwen05b_fast_plain --prompts data/sft/x.jsonl --n 60 --out outputs/style.json

Per sample and side: ``answer``, ``has_list``, ``has_heading``, ``banned_hits`` (the banned strings
found), ``n_tokens``, ``stopped``, ``seconds``, ``tokens_per_s`` (see :mod:`airoad.core.model.generate`
for the timing contract); the tuned side adds ``drift``. Per side, ``summary``:

- ``pct_list`` / ``pct_heading``: percent of answers with a Markdown list / heading
  (:mod:`airoad.core.data.text_checks`, outside code fences);
- ``avg_banned_hits``: mean number of distinct banned strings per answer;
- ``avg_len_tokens``: mean answer length in tokens (stop token not counted);
- ``avg_tokens_per_s``: mean of the samples' ``tokens_per_s``;
- ``pct_expect`` (only with ``--expect REGEX``): percent of answers in which ``re.search`` finds the
  pattern; each sample then carries ``expect_match``, and the report ``expect`` (the pattern).

With adapters, ``drift`` is the mean per-token KL(tuned || base) over the tuned answers
(:mod:`airoad.infer.drift`; ``drift_tokens`` tokens scored); without, both are null.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airoad.core.base.commands import Invocation
from airoad.core.base.io import write_json
from airoad.core.base.textargs import UserRegex, user_regex
from airoad.core.data.text_checks import banned_hits, has_heading, has_list, load_banned
from airoad.core.model.adapter_source import Source
from airoad.infer.schema import EvalConfig
from airoad.infer.sides import answer_all, report_header, sample_records

# in table order; pct_expect only when --expect is given
METRICS = (
    "n",
    "pct_list",
    "pct_heading",
    "pct_expect",
    "avg_banned_hits",
    "avg_len_tokens",
    "avg_tokens_per_s",
)


def style_scores(text: str, banned: tuple[str, ...], expect: UserRegex | None = None) -> dict[str, Any]:
    scores = {
        "has_list": has_list(text),
        "has_heading": has_heading(text),
        "banned_hits": banned_hits(text, banned),
    }
    if expect is not None:
        scores["expect_match"] = expect.search(text)
    return scores


def summarize(records: list[dict[str, Any]], expect: bool = False) -> dict[str, float]:
    """The summary of one side's sample records (each with the style scores and side_record keys);
    ``expect``: the records carry ``expect_match`` and the summary gets ``pct_expect``."""
    n = len(records)

    def mean(values: list[float]) -> float:
        return round(sum(values) / n, 4) if n else 0.0

    summary = {
        "n": n,
        "pct_list": mean([100.0 * r["has_list"] for r in records]),
        "pct_heading": mean([100.0 * r["has_heading"] for r in records]),
        "avg_banned_hits": mean([len(r["banned_hits"]) for r in records]),
        "avg_len_tokens": mean([r["n_tokens"] for r in records]),
        "avg_tokens_per_s": mean([r["tokens_per_s"] for r in records]),
    }
    if expect:
        summary["pct_expect"] = mean([100.0 * r["expect_match"] for r in records])
    return summary


def table(report: dict[str, Any]) -> str:
    """The summary as an aligned text table (one column per side), plus the drift line."""
    sides = report["sides"]
    lines = [f"{'metric':<18}" + "".join(f"{s:>12}" for s in sides)]
    for m in (m for m in METRICS if m in report["summary"][sides[0]]):
        cells = "".join(
            f"{report['summary'][s][m]:>12.2f}" if m != "n" else f"{report['summary'][s][m]:>12}"
            for s in sides
        )
        lines.append(f"{m:<18}{cells}")
    if report["drift"] is not None:
        lines.append(
            f"drift: {report['drift']:.5f} nats = mean KL(tuned || base) per answer token, "
            f"over {report['drift_tokens']:,} tuned answer tokens"
        )
    return "\n".join(lines)


def run(cfg: EvalConfig, inv: Invocation) -> None:
    """`airoad eval` as the core runs it (inputs resolved, ``--out`` checked and held)."""
    evaluate(cfg, inv.source, inv.printer)


def evaluate(cfg: EvalConfig, source: Source, printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate, score, summarise, measure drift; print the table, write ``cfg.out``; returns the report."""

    banned = load_banned(cfg.banned)  # a bad --banned file fails before any model loads
    expect = user_regex("--expect", cfg.expect)  # matched under a time budget
    ans = answer_all(cfg, source, printer)

    def extra(side: str, i: int) -> dict[str, Any]:
        return style_scores(ans.by_side[side][i].text, banned, expect)

    samples = sample_records(ans, extra)
    drift = None
    if "tuned" in ans.by_side:
        from airoad.infer.drift import answer_drift

        printer("  drift: teacher-forcing the tuned answers through both sides")
        pad = ans.loaded.tokenizer.pad_token_id
        drift = answer_drift(ans.loaded.model, ans.by_side["tuned"], pad, cfg.batch_size)
        for s, d in zip(samples, drift.per_sample, strict=True):
            s["tuned"]["drift"] = d
    report = {
        **report_header("eval", cfg, ans),
        "banned": list(banned),
        **({"expect": cfg.expect} if expect else {}),
        "summary": {side: summarize([s[side] for s in samples], bool(expect)) for side in ans.by_side},
        "drift": drift.mean if drift else None,
        "drift_tokens": drift.tokens if drift else None,
        "samples": samples,
    }
    printer("")
    printer(table(report))
    if cfg.out:
        write_json(cfg.out, report)
        printer(f"wrote {cfg.out} ({len(samples)} samples)")
    return report
