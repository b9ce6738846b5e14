"""``probe_report.md``: the page a probe's user decides from, rendered from what the steps wrote.

Sections, in order: the one-paragraph summary ("At a glance": loss, dev loss, style change, drift),
the run (base, adapter, steps, learning rate, KL, data and its sha256), the loss (``loss_curve.png``
and a table of training and dev loss at a few steps), base vs tuned (the eval summary of each side,
the change, drift; the same for the general prompts when they were scored), the first
:data:`~airoad.probe.schema.SHOWN_ANSWERS` side-by-side answers of compare, the commands that
reproduce each step, and the files written.

Pure: dicts in (run_config.yaml, run_info.json, time_metrics.json, train_log.json, compare.json,
eval.json as those commands write them), Markdown out; a missing value shows as ``?`` or ``-``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from airoad.infer.compare import fenced, one_line, side_summary
from airoad.infer.style_eval import METRICS
from airoad.probe.schema import SHOWN_ANSWERS

LOSS_ROWS = 6  # evenly spaced training-loss rows; rows with a dev loss are added (as many again)
FORMATS = {"n": "{:.0f}", "avg_banned_hits": "{:.2f}"}  # the others: one decimal
MEANING = {
    "n": "prompts scored",
    "pct_list": "% of answers with a Markdown list",
    "pct_heading": "% of answers with a heading (or a bold label line)",
    "pct_expect": "% of answers matching {expect}",
    "avg_banned_hits": "banned strings (chat tags, template tokens) per answer",
    "avg_len_tokens": "answer length, tokens",
    "avg_tokens_per_s": "generation speed, tokens/s",
}
FILES = {
    "probe_report.md": "this page",
    "probe_compare.md": "every compare prompt with both answers",
    "probe_compare.json": "the same as JSON (`airoad compare` layout)",
    "probe_eval.json": "eval on the dev prompts: summary per side, drift, every sample (`airoad eval` layout)",
    "probe_eval_general.json": "eval on the general prompts, same layout",
}


@dataclass
class ReportInputs:
    """Everything the page shows; the dicts are the files the steps wrote, as parsed."""

    out: str
    run_config: dict[str, Any]
    run_info: dict[str, Any]
    timing: dict[str, Any]
    rows: list[dict[str, Any]]
    compare: dict[str, Any]
    dev: dict[str, Any]
    general: dict[str, Any] | None = None
    commands: list[tuple[str, str]] = field(default_factory=list)  # (what it does, command line)
    files: list[str] = field(default_factory=list)


def cell(value: Any) -> str:
    """A value as one Markdown table cell (pipes escaped, one line)."""
    return " ".join(str(value).split()).replace("|", "\\|")


def code(text: Any) -> str:
    """``text`` as an inline code span that survives backticks inside it."""
    text = " ".join(str(text).split())
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}".replace("|", "\\|")


def num(value: Any, spec: str = "{:.4f}") -> str:
    return "-" if value is None else spec.format(value)


def render(r: ReportInputs) -> str:
    """The whole page (Markdown, ends with a newline)."""
    cfg = r.run_config
    adapter = f"{'DoRA' if cfg.get('use_dora') else 'LoRA'} r={cfg.get('lora_r', '?')}"
    lines = [
        f"# Probe report: {code(r.out)}",
        "",
        f"{code(cfg.get('base_model', '?'))} tuned with {adapter} on {code(cfg.get('dataset_path', '?'))}, "
        f"then asked the same prompts with the adapter off (base) and on (tuned). Decide from the loss "
        "(did it fall, did the dev loss follow), the metrics (did the answers move the way you want) "
        "and the drift (how far the tuned model left its base).",
    ]
    for section in (glance, run_table, loss_section, metrics_section, answers_section, repro_section):
        lines += ["", *section(r)]
    return "\n".join(lines) + "\n"


def glance(r: ReportInputs) -> list[str]:
    """The few numbers a decision starts from, one bullet each."""
    lines = ["## At a glance", ""]
    rows = [x for x in r.rows if x.get("loss") is not None]
    if rows:
        first, last = rows[0]["loss"], rows[-1]["loss"]
        change = f" ({(last - first) / first:+.1%})" if first else ""
        lines.append(
            f"- Training loss {first:.4f} -> {last:.4f}{change} over {r.timing.get('steps', rows[-1]['step'])} "
            f"steps; stopped by `{r.timing.get('stop_reason', '?')}`."
        )
    lines.append(f"- {dev_loss_line(r.rows)}")
    lines.append(f"- {style_line(r.dev)}")
    drift = (
        f"- Drift, mean KL(tuned || base) per answer token: {num(r.dev.get('drift'))} nats on the dev prompts"
    )
    if r.general is not None:
        drift += f", {num(r.general.get('drift'))} on the general prompts."
    else:
        drift += "; add `--general_prompts data/eval/general_prompts.jsonl` to measure it away from the data."
    return [*lines, drift]


def dev_loss_line(rows: list[dict[str, Any]]) -> str:
    ev = [(x["step"], x["eval_loss"]) for x in rows if x.get("eval_loss") is not None]
    if not ev:
        return "No dev loss was logged (no dev_path, or eval_every_steps above the steps run)."
    best_step, best = min(ev, key=lambda e: e[1])
    line = f"Dev loss {ev[0][1]:.4f} -> {ev[-1][1]:.4f} over {len(ev)} evaluations (step {ev[0][0]} -> {ev[-1][0]})"
    if best_step != ev[-1][0] and ev[-1][1] > best + 1e-4:
        return line + f"; its best, {best:.4f}, was at step {best_step}: the later steps may overfit."
    return line + "."


def style_line(report: dict[str, Any]) -> str:
    base, tuned = (report.get("summary", {}).get(s, {}) for s in ("base", "tuned"))
    parts = [
        f"{m} {num(base.get(m), FORMATS.get(m, '{:.1f}'))} -> {num(tuned.get(m), FORMATS.get(m, '{:.1f}'))}"
        for m in ("pct_list", "pct_heading", "pct_expect", "avg_banned_hits", "avg_len_tokens")
        if m in tuned
    ]
    return f"Base -> tuned on {report.get('n_prompts', '?')} dev prompts: {', '.join(parts)}."


def run_table(r: ReportInputs) -> list[str]:
    """The run's settings that decide what it learnt, with the data hashes (run_config + run_info)."""
    cfg, info, timing = r.run_config, r.run_info, r.timing
    data = info.get("data", {})
    kl = f"kl_lambda {cfg.get('kl_lambda', '?')}"
    if (cfg.get("kl_lambda") or 0) > 0 or cfg.get("kl_anchor_path"):
        kl += f", kl_tau {cfg.get('kl_tau', '?')}"
    if cfg.get("kl_anchor_path"):
        n_anchor = data.get("stats", {}).get("extra", {}).get("anchor", {}).get("kept", "?")
        kl += (
            f"; anchors {code(cfg['kl_anchor_path'])} ({n_anchor} conversations, KL only), "
            f"kl_anchor_lambda {cfg.get('kl_anchor_lambda', '?')}, sha256 {code(data.get('kl_anchor_path_sha256', '?'))}"
        )
    kept = data.get("stats", {}).get("kept", "?")
    subset = f" (ablate_examples {cfg['ablate_examples']})" if cfg.get("ablate_examples") else ""
    dev = (
        f"{code(cfg['dev_path'])}, sha256 {code(data.get('dev_sha256', '?'))}"
        if cfg.get("dev_path")
        else "none"
    )
    rows = [
        ("base model", code(cfg.get("base_model", "?"))),
        (
            "adapter",
            f"{'DoRA' if cfg.get('use_dora') else 'LoRA'} r={cfg.get('lora_r', '?')}, alpha {cfg.get('lora_alpha', '?')}, "
            f"dropout {cfg.get('lora_dropout', '?')}, targets {cfg.get('lora_target_mode', '?')}; "
            f"{info.get('trainable_params', '?')} trainable parameters",
        ),
        (
            "steps",
            f"{timing.get('steps', '?')} of max_steps {cfg.get('max_steps', '?')} (stop: {timing.get('stop_reason', '?')}); "
            f"global batch {info.get('global_batch', '?')} = {cfg.get('per_device_batch_size', '?')} x "
            f"grad_accum {cfg.get('grad_accum', '?')} x {info.get('world_size', '?')} process(es)",
        ),
        (
            "learning rate",
            f"{cfg.get('learning_rate', '?')}, {cfg.get('lr_scheduler', '?')}, warmup_ratio {cfg.get('warmup_ratio', '?')}",
        ),
        ("KL to the base", kl),
        (
            "data",
            f"{code(cfg.get('dataset_path', '?'))}, sha256 {code(data.get('sha256', '?'))}; {kept} examples{subset}",
        ),
        ("dev data", dev),
        ("max_seq_len, seed", f"{cfg.get('max_seq_len', '?')}, {cfg.get('seed', '?')}"),
        ("system prompt", cell(cfg.get("system_prompt") or "chat template default")),
        (
            "hardware, time",
            f"{info.get('device', '?')}, {info.get('dtype', '?')}; train {num(timing.get('train_s'), '{:.1f}')} s, "
            f"{num(timing.get('step_tokens_per_s'), '{:.1f}')} tokens/s",
        ),
    ]
    return ["## Run", "", "| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def pick_rows(rows: list[dict[str, Any]], k: int = LOSS_ROWS) -> list[dict[str, Any]]:
    """About ``k`` evenly spaced rows (the first and the last always), plus up to ``k`` rows with a
    dev loss, evenly spaced too, in step order."""

    def spaced(items: list[int]) -> set[int]:
        if len(items) <= k:
            return set(items)
        return {items[round(j * (len(items) - 1) / (k - 1))] for j in range(k)}

    evals = [i for i, x in enumerate(rows) if x.get("eval_loss") is not None]
    return [rows[i] for i in sorted(spaced(list(range(len(rows)))) | spaced(evals))]


def loss_section(r: ReportInputs) -> list[str]:
    kl = (r.run_config.get("kl_lambda") or 0) > 0
    anchor = bool(r.run_config.get("kl_anchor_path"))
    cols = [
        "step",
        "loss",
        *(["ce", "kl"] if kl else ["ce"] if anchor else []),
        *(["kl_anchor"] if anchor else []),
        "dev loss",
    ]
    lines = ["## Loss", "", "![loss curve](loss_curve.png)", ""]
    if not r.rows:
        return [*lines, "No training steps were logged (train_log.json is empty or missing)."]
    lines += [f"| {' | '.join(cols)} |", "|" + "---:|" * len(cols)]
    for x in pick_rows(r.rows):
        values = [str(x["step"]), num(x.get("loss")), *([num(x.get(c)) for c in cols[2:-1]])]
        lines.append(f"| {' | '.join([*values, num(x.get('eval_loss'))])} |")
    return [*lines, "", f"All {len(r.rows)} rows: `train_log.csv`."]


def metric_table(report: dict[str, Any]) -> list[str]:
    """One eval report's summary as | metric | base | tuned | change | what |, then the drift row."""
    base, tuned = (report.get("summary", {}).get(s, {}) for s in ("base", "tuned"))
    lines = ["| metric | base | tuned | change | what |", "|---|---:|---:|---:|---|"]
    for m in (m for m in METRICS if m in tuned):
        spec = FORMATS.get(m, "{:.1f}")
        b, t = base.get(m), tuned.get(m)
        change = (
            "" if m == "n" or b is None or t is None else ("+" if t - b >= 0 else "") + spec.format(t - b)
        )
        what = MEANING[m].format(expect=code(report.get("expect", "?")))
        lines.append(f"| {m} | {num(b, spec)} | {num(t, spec)} | {change} | {what} |")
    tokens = report.get("drift_tokens")
    over = f", over {tokens:,} tuned answer tokens" if tokens else ""
    lines.append(
        f"| drift | - | {num(report.get('drift'))} | | mean KL(tuned \\|\\| base) per answer token, nats{over} |"
    )
    return lines


def decoding(report: dict[str, Any]) -> str:
    dec = report.get("decoding", {})
    how = (
        "greedy"
        if not dec.get("temperature")
        else f"temperature {dec['temperature']:g}, seed {dec.get('seed')}"
    )
    return f"{how}, max_new_tokens {dec.get('max_new_tokens', '?')}, {report.get('device', '?')} {report.get('dtype', '?')}"


def metrics_section(r: ReportInputs) -> list[str]:
    lines = [
        "## Base vs tuned",
        "",
        f"{r.dev.get('n_prompts', '?')} prompts of {code(r.dev.get('prompts', '?'))}, {decoding(r.dev)} "
        "(`probe_eval.json`); base = the same model with the adapter off.",
        "",
        *metric_table(r.dev),
    ]
    if r.general is not None:
        lines += [
            "",
            "### General prompts",
            "",
            f"{r.general.get('n_prompts', '?')} prompts of {code(r.general.get('prompts', '?'))}, unlike the "
            "training data (`probe_eval_general.json`): drift here is the tune's reach beyond its data.",
            "",
            *metric_table(r.general),
        ]
    return lines


def answers_section(r: ReportInputs) -> list[str]:
    samples = r.compare.get("samples", [])
    shown = samples[:SHOWN_ANSWERS]
    rest = f"; all {len(samples)} in `probe_compare.md`" if len(samples) > len(shown) else ""
    lines = [
        "## Answers side by side",
        "",
        f"The first {len(shown)} compare prompts, {decoding(r.compare)}{rest}.",
    ]
    for k, s in enumerate(shown, start=1):
        lines += ["", f"### {k}. {one_line(s['prompt'])}", "", f"Source: `{s['source']}`"]
        if s.get("system"):
            lines += ["", f"System: {one_line(s['system'], 200)}"]
        lines += ["", "**Prompt**", "", fenced(s["prompt"])]
        for side in ("base", "tuned"):
            if side in s:
                lines += ["", f"**{side}** ({side_summary(s[side])})", "", fenced(s[side]["answer"])]
    return lines


def repro_section(r: ReportInputs) -> list[str]:
    lines = [
        "## Reproduce",
        "",
        "From the directory the probe ran in. The step commands write their reports beside the run dir "
        "(a report may not be written inside its own `--adapters`); the probe copied them in as `probe_*`.",
        "",
        "```bash",
    ]
    for what, command in r.commands:
        lines += [f"# {what}", command]
    lines += ["```", "", "## Files", ""]
    return [*lines, *[f"- `{name}`: {FILES[name]}" for name in r.files]]
