"""Preference-training speed and memory: airoad DPO vs plain TRL DPOTrainer + PEFT, same pairs and settings.

    python bench/bench_pref.py --model ~/.cache/airoad/real-qwen2.5-0.5b --steps 8

Each variant runs in its own subprocess (clean peak RSS). ``trl`` is what a TRL user gets by
default on this CPU: DPOConfig's bf16=True and gradient checkpointing on, weights in the
checkpoint's bf16; ``trl_nogc`` is the same without gradient checkpointing.
``airoad`` is `airoad pref` with its defaults (dtype auto, checkpointing on, as TRL's);
``airoad_nogc`` turns checkpointing off (faster, more memory). All: a fresh LoRA r16 on attn+MLP, the
reference = the base (adapters disabled), sigmoid loss, beta 0.1, batch 2 pairs x accum 2, the
bundled pairs, seq <= 512. pairs/s = pairs trained / training seconds; ratios against the best TRL
run for each figure. The table goes to stdout and to BENCHMARKS.md between its bench-pref markers
(``--method orpo``: TRL's experimental ORPOTrainer vs `airoad pref --method orpo`, bench-orpo markers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import (  # noqa: E402
    LORA,
    cpu_name,
    peak_rss_gb,
    refuse_out_on_inputs,
    run_worker_process,
    train_clock,
    versions,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = Path.home() / ".cache/airoad/real-qwen2.5-0.5b"
VARIANTS = ("trl", "trl_nogc", "airoad", "airoad_nogc")
TRL_VARIANTS = ("trl", "trl_nogc")
BATCH, ACCUM, BETA = 2, 2, 0.1


def worker_trl(a: argparse.Namespace, out: Path, checkpointing: bool) -> dict:
    """Plain TRL: DPOTrainer + PEFT LoRA on the same pairs rows (TRL applies the chat template)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from airoad.pref.data import answer_text, prompt_messages

    if a.method == "orpo":  # TRL 1.16 keeps ORPO in trl.experimental: the same config keys
        from trl.experimental.orpo import ORPOConfig as DPOConfig  # noqa: N814
        from trl.experimental.orpo import ORPOTrainer as DPOTrainer  # noqa: N814

    # TRL gets the rows in its conversational form, system_prompt applied as airoad applies it.
    rows = [json.loads(x) for x in a.data.read_text().splitlines() if x.strip()]
    conv = [
        {
            "prompt": prompt_messages(r["prompt"], r.get("system_prompt")),
            **{k: [{"role": "assistant", "content": answer_text(r[k])}] for k in ("chosen", "rejected")},
        }
        for r in rows
    ]
    times: dict[str, float] = {}
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16)
    cfg = DPOConfig(
        output_dir=str(out),
        max_steps=a.steps,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=ACCUM,
        learning_rate=a.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        gradient_checkpointing=checkpointing,  # DPOConfig's and ORPOConfig's default: True
        seed=a.seed,
        max_length=a.seq,
        beta=BETA,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    peft_cfg = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=0.0,
        target_modules=LORA["targets"],
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model,
        args=cfg,
        train_dataset=Dataset.from_list(conv),
        processing_class=tok,
        peft_config=peft_cfg,
        callbacks=[train_clock(times)],
    )
    trainer.train()
    hist = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "train_s": times["end"] - times["begin"],
        "steps": trainer.state.global_step,
        "losses": [h["loss"] for h in hist],
        "margin": hist[-1].get("rewards/margins"),
        "precision": "bf16" if cfg.bf16 else "fp32",
    }


def worker_airoad(a: argparse.Namespace, out: Path, checkpointing: bool) -> dict:
    from airoad.core.base.options import load_config
    from airoad.pref.run import pref
    from airoad.pref.schema import PrefConfig

    argv = [
        *("--base_model", str(a.model), "--dataset_path", str(a.data), "--output_dir", str(out)),
        *("--overwrite", "true", "--max_steps", str(a.steps), "--max_seq_len", str(a.seq)),
        *("--per_device_batch_size", str(BATCH), "--grad_accum", str(ACCUM), "--learning_rate", str(a.lr)),
        *("--lr_scheduler", "constant", "--warmup_ratio", "0", "--seed", str(a.seed), "--beta", str(BETA)),
        *("--lora_r", str(LORA["r"]), "--lora_alpha", str(LORA["alpha"]), "--lora_dropout", "0"),
        *("--lora_target_mode", "attn_mlp", "--print_every_steps", "1000", "--device", "cpu"),
        *("--gradient_checkpointing", str(checkpointing), "--method", a.method),
    ]
    cfg, _ = load_config(PrefConfig, argv)
    out_dir, _ = pref(cfg, printer=lambda *_: None)
    tm = json.loads((out_dir / "time_metrics.json").read_text())
    rows = json.loads((out_dir / "train_log.json").read_text())
    dtype = json.loads((out_dir / "run_info.json").read_text())["dtype"]
    return {
        "train_s": tm["train_s"],
        "steps": tm["steps"],
        "losses": [r["loss"] for r in rows],
        "margin": rows[-1].get("margin"),
        "precision": {"bfloat16": "bf16", "float32": "fp32"}.get(dtype, dtype),
    }


def run_worker(a: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix=f"bench-pref-{a.worker}-"))
    gc = a.worker in ("trl", "airoad")  # each side's default
    res = worker_trl(a, out, gc) if a.worker in TRL_VARIANTS else worker_airoad(a, out, gc)
    res["peak_rss_gb"] = peak_rss_gb()
    res["pairs"] = res["steps"] * BATCH * ACCUM
    print("BENCH_RESULT " + json.dumps(res), flush=True)


def table(results: dict[str, dict]) -> str:
    """One row per variant; pairs/s against the fastest TRL run, RSS against the leanest."""
    ok = {n: r for n, r in results.items() if "error" not in r}
    trl = [(n, r) for n, r in ok.items() if n in TRL_VARIANTS]
    fast = max(trl, key=lambda nr: nr[1]["pairs"] / nr[1]["train_s"]) if trl else None
    lean = min(trl, key=lambda nr: nr[1]["peak_rss_gb"]) if trl else None
    lines = [
        f"| variant | steps | pairs/s | x {fast[0] if fast else 'TRL'} | peak RSS GB | x {lean[0] if lean else 'TRL'} "
        "| s/step | first loss | last loss | last margin | precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:80]} | | | | | | | | | |")
            continue
        pps = r["pairs"] / r["train_s"]
        x_pps = f"{pps / (fast[1]['pairs'] / fast[1]['train_s']):.2f}" if fast else "-"
        x_rss = f"{r['peak_rss_gb'] / lean[1]['peak_rss_gb']:.2f}" if lean else "-"
        margin = f"{r['margin']:.4f}" if r.get("margin") is not None else "-"
        lines.append(
            f"| {name} | {r['steps']} | {pps:.3f} | {x_pps} | {r['peak_rss_gb']:.2f} | {x_rss} | "
            f"{r['train_s'] / r['steps']:.2f} | {r['losses'][0]:.4f} | {r['losses'][-1]:.4f} | {margin} | "
            f"{r['precision']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="HF model dir (get-real-qwen's by default)"
    )
    ap.add_argument("--data", type=Path, default=REPO / "data/pref/example_pairs.jsonl", help="pairs JSONL")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per variant (4 pairs each)")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--method", default="dpo", choices=["dpo", "orpo"], help="orpo: TRL's experimental ORPOTrainer"
    )
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return run_worker(a)
    refuse_out_on_inputs(a.out, a.data, a.model)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {}
    for v in a.variants.split(","):
        t0 = time.time()
        results[v] = run_worker_process(__file__, ["--worker", v, "--method", a.method])
        print(f"{v}: {time.time() - t0:.0f}s {results[v]}", flush=True)
    report = "\n".join(
        [
            f"## Preference ({a.method.upper()}) benchmark ({time.strftime('%Y-%m-%d')})",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; {versions()}.",
            f"CPU: {cpu_name()}.",
            f"Command: `python bench/bench_pref.py {' '.join(sys.argv[1:])}`",
            "",
            f"Model {a.model.name}, pairs {a.data.name}, {a.steps} steps x {BATCH * ACCUM} pairs (batch {BATCH} x accum "
            f"{ACCUM}), seq <= {a.seq}, fresh LoRA r{LORA['r']} attn+MLP, "
            + (
                "reference = base with adapters disabled, sigmoid loss"
                if a.method == "dpo"
                else "no reference"
            )
            + f", beta {BETA}, lr {a.lr} constant. `trl` = {a.method.upper()}Config defaults (bf16, gradient "
            "checkpointing); `trl_nogc` without checkpointing; `airoad` = `airoad pref` defaults (checkpointing "
            "too); `airoad_nogc` without."
            + (
                " Reference log-probs online in every variant (the data is seen < 2 times)."
                if a.method == "dpo"
                else ""
            ),
            "",
            table(results),
            "",
        ]
    )
    print(report)
    tag = "bench-pref" if a.method == "dpo" else "bench-orpo"
    write_report(a.out, report, f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->")


if __name__ == "__main__":
    main()
