"""Training speed and memory: airoad vs plain TRL SFTTrainer + PEFT, same examples, same settings.

    python bench/bench_train.py --model ~/.cache/airoad/real-qwen2.5-0.5b \
        --data ../shared/data/gsm8k_train.jsonl --steps 8 --examples 96

Each variant runs in its own subprocess (clean peak RSS): plain TRL + PEFT LoRA (the anchor),
airoad LoRA, DoRA, LoRA+KL, DoRA+KL, LoRA+KL with the teacher cache over several epochs, and
LoRA with each step's examples packed into one forward (same examples and loss, more memory).
Reported per variant: tokens/s (non-pad tokens processed / training seconds), peak RSS, seconds
per optimizer step, first and last loss, and ratios against the anchor of the same run. The anchor
and airoad LoRA run twice by default (``--repeat``), the second time after every other variant,
because this machine's speed drifts by ~10 % over minutes. The table goes to stdout and to
BENCHMARKS.md (with machine, versions and this exact command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = Path.home() / ".cache/airoad/real-qwen2.5-0.5b"
# Order: the pairs compared against each other run close together in time.
VARIANTS = (
    "trl",
    "trl_bf16",
    "lora",
    "dora",
    "lora_d0",
    "lora_kl",
    "dora_kl",
    "lora_packed",
    "trl_gc",
    "lora_kl_cache",
    "lora_gc",
)
TRL_VARIANTS = ("trl", "trl_bf16", "trl_gc")
# Shared settings: the anchor and airoad see the same numbers.
LORA = {
    "r": 16,
    "alpha": 32,
    "dropout": 0.05,
    "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def to_chatml(row: dict) -> dict:
    """GSM8K {"question","answer"} or ChatML rows -> ChatML (calculator annotations dropped)."""
    if "messages" in row:
        return row
    import re

    answer = re.sub(r"<<[^>]*>>", "", row["answer"]).strip()
    return {
        "messages": [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": answer}]
    }


def prepare_data(src: Path, n: int, work: Path) -> Path:
    rows = [json.loads(x) for x in src.read_text(encoding="utf-8").splitlines() if x.strip()][:n]
    out = work / "bench_data.jsonl"
    out.write_text("".join(json.dumps(to_chatml(r)) + "\n" for r in rows), encoding="utf-8")
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def worker_trl(
    a: argparse.Namespace, data: Path, out: Path, checkpointing: bool = False, bf16: bool = False
) -> dict:
    """The anchor: TRL SFTTrainer + PEFT LoRA, loss on the completion (assistant answer) only.

    ``trl`` turns off SFTConfig's default gradient checkpointing (airoad's default is off too:
    same work) and its default bf16 (fp32 weights and arithmetic); ``trl_bf16`` is what a TRL user
    gets by default on a CPU with bf16 units: weights loaded in bf16 (the checkpoint's dtype) and
    SFTConfig's bf16=True; ``trl_gc`` keeps TRL's gradient checkpointing (less memory, slower)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(x)["messages"] for x in data.read_text().splitlines()]
    ds = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])
    times: dict[str, float] = {}
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16 if bf16 else torch.float32)
    cfg = SFTConfig(
        output_dir=str(out),
        max_steps=a.steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=a.accum,
        learning_rate=a.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=bf16,  # SFTConfig's default is True: ~600x slower on a CPU without bf16 units
        gradient_checkpointing=checkpointing,
        seed=a.seed,
        max_length=a.seq,
        completion_only_loss=True,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    peft_cfg = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA["targets"],
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=cfg,
        train_dataset=ds,
        processing_class=tok,
        peft_config=peft_cfg,
        callbacks=[train_clock(times)],
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    train_s = times["end"] - times["begin"]
    tokens = int(trainer.state.num_input_tokens_seen)
    return {
        "tokens": tokens,
        "train_s": train_s,
        "steps": trainer.state.global_step,
        "losses": losses,
        "precision": "bf16" if bf16 else "fp32",
    }


def worker_airoad(a: argparse.Namespace, data: Path, out: Path, variant: str) -> dict:
    from airoad.core.base.options import load_config
    from airoad.sft.run import train
    from airoad.sft.schema import TrainConfig

    steps = a.cache_steps if variant.endswith("_cache") else a.steps
    argv = [
        "--base_model",
        str(a.model),
        "--dataset_path",
        str(data),
        "--output_dir",
        str(out),
        "--overwrite",
        "true",
        "--max_steps",
        str(steps),
        "--max_seq_len",
        str(a.seq),
        "--per_device_batch_size",
        "1",
        "--grad_accum",
        str(a.accum),
        "--learning_rate",
        str(a.lr),
        "--lr_scheduler",
        "constant",
        "--warmup_ratio",
        "0",
        "--seed",
        str(a.seed),
        "--lora_r",
        str(LORA["r"]),
        "--lora_alpha",
        str(LORA["alpha"]),
        "--lora_dropout",
        # DoRA runs without dropout (as the shipped DoRA configs: PEFT then reuses the base output);
        # lora_d0 is LoRA at the same setting, its partner in the DoRA ratio
        "0" if "dora" in variant or variant == "lora_d0" else str(LORA["dropout"]),
        "--lora_target_mode",
        "attn_mlp",
        "--use_dora",
        str("dora" in variant),
        "--kl_lambda",
        "0.1" if "_kl" in variant else "0",
        "--print_every_steps",
        "1000",
        "--device",
        "cpu",
    ]
    if variant == "lora_packed":  # the same 4 examples per step in one padding-free forward
        argv += ["--per_device_batch_size", str(a.accum), "--grad_accum", "1", "--packing", "true"]
    if variant == "lora_gc":  # recomputed activations: the memory lever, at a speed cost
        argv += ["--gradient_checkpointing", "true"]
    if variant.endswith("_cache"):  # a fresh cache dir: the build is part of what is measured
        argv += ["--kl_cache", "on", "--kl_cache_dir", str(out.with_name(out.name + "-teacher-cache"))]
    elif "_kl" in variant:
        argv += ["--kl_cache", "off"]
    cfg, _ = load_config(TrainConfig, argv)
    t0 = time.time()
    out_dir, _ = train(cfg, printer=lambda *_: None)
    tm = json.loads((out_dir / "time_metrics.json").read_text())
    rows = json.loads((out_dir / "train_log.json").read_text())
    dtype = json.loads((out_dir / "run_info.json").read_text())["dtype"]
    # End to end for the cache variant: the cache build happens before the first step, so count it.
    train_s = tm["train_s"] + tm.get("teacher_cache_s", 0.0)
    return {
        "tokens": tm["train_tokens"],
        "train_s": train_s,
        "steps": tm["steps"],
        "losses": [r["loss"] for r in rows],
        "wall_s": time.time() - t0,
        "teacher_cache_s": tm.get("teacher_cache_s"),
        "precision": {"bfloat16": "bf16", "float32": "fp32"}.get(dtype, dtype),  # dtype auto's pick
    }


def run_worker(a: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix=f"bench-{a.worker}-"))
    data = Path(a.prepared)
    if a.worker in TRL_VARIANTS:
        res = worker_trl(a, data, out, checkpointing=a.worker == "trl_gc", bf16=a.worker == "trl_bf16")
    else:
        res = worker_airoad(a, data, out, a.worker)
    res["peak_rss_gb"] = peak_rss_gb()
    print("BENCH_RESULT " + json.dumps(res), flush=True)


def train_clock(times: dict[str, float]):
    """A TrainerCallback that writes the wall-clock begin and end of ``trainer.train()`` into ``times``."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, *args, **kw):
            times["begin"] = time.time()

        def on_train_end(self, *args, **kw):
            times["end"] = time.time()

    return Clock()


def run_variant(v: str, data: Path) -> dict:
    return run_worker_process(__file__, ["--worker", v, "--prepared", str(data)])


def run_worker_process(script: str, worker_args: list[str]) -> dict:
    """``script`` re-run with this command line plus ``worker_args`` in a fresh subprocess (clean
    peak RSS); its BENCH_RESULT, or {"error": last stderr line}."""
    cmd = [sys.executable, script, *sys.argv[1:], *worker_args]
    p = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in p.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    return json.loads(line[13:]) if line else {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}


def run_order(variants: str, repeat_variants: str, repeat: int) -> list[str]:
    """Each of ``variants`` once, then those also in ``repeat_variants`` ``repeat - 1`` more times.
    The machine's speed drifts (a shared VM: +-10 % between minutes, measured), so the repeated
    variants run again after the others and their runs are pooled (:func:`combine`)."""
    order = variants.split(",")
    return order + [v for _ in range(repeat - 1) for v in repeat_variants.split(",") if v in order]


def combine(rs: list[dict]) -> dict:
    """Several runs of one variant -> one row: summed tokens and seconds (so tokens/s is the pooled
    rate), mean peak RSS, the first run's losses, and each run's tokens/s for the record."""
    ok = [r for r in rs if "error" not in r]
    if not ok:
        return rs[0]
    out = dict(ok[0])
    out["tokens"] = sum(r["tokens"] for r in ok)
    out["train_s"] = sum(r["train_s"] for r in ok)
    out["steps"] = ok[0]["steps"]
    out["peak_rss_gb"] = sum(r["peak_rss_gb"] for r in ok) / len(ok)
    out["runs_tps"] = [r["tokens"] / r["train_s"] for r in ok]
    out["train_s_per_step"] = out["train_s"] / sum(r["steps"] for r in ok)
    return out


def best_anchor(results: dict[str, dict], key) -> tuple[str, dict] | None:
    """The TRL run that did best on ``key`` (a number to maximise), or None when no TRL run succeeded."""
    ok = [(n, r) for n, r in results.items() if n in TRL_VARIANTS and n != "trl_gc" and "error" not in r]
    return max(ok, key=lambda nr: key(nr[1])) if ok else None


def tps_of(r: dict) -> float:
    return r["tokens"] / r["train_s"]


def table(results: dict[str, dict]) -> str:
    """One row per variant; speed is set against the fastest TRL run and memory against the leanest
    (trl, trl_bf16: the better anchor for each figure), both named in the header."""
    speed_anchor = best_anchor(results, tps_of)
    rss_anchor = best_anchor(results, lambda r: -r["peak_rss_gb"])
    s_name = speed_anchor[0] if speed_anchor else "TRL"
    r_name = rss_anchor[0] if rss_anchor else "TRL"
    lines = [
        f"| variant | steps | tokens/s | x {s_name} | peak RSS GB | x {r_name} | s/step | time/token x airoad LoRA "
        "| first loss | last loss | precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lora = results.get("lora")
    for name, r in results.items():
        if r.get("teacher_cache_s"):
            name = f"{name} (cache built in {r['teacher_cache_s']:.0f} s)"
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:60]} | | | | | | | | | |")
            continue
        tps = tps_of(r)
        sps = r.get("train_s_per_step", r["train_s"] / max(r["steps"], 1))
        x_tps = f"{tps / tps_of(speed_anchor[1]):.2f}" if speed_anchor else "-"
        x_rss = f"{r['peak_rss_gb'] / rss_anchor[1]['peak_rss_gb']:.2f}" if rss_anchor else "-"
        # Per token, not per step: the cache variant runs more steps over the same examples, and
        # steps differ in length; for equal steps and data the two ratios are the same number.
        x_lora = f"{tps_of(lora) / tps:.2f}" if lora and "error" not in lora else "-"
        runs = r.get("runs_tps", [])
        runs_note = f" ({', '.join(f'{x:.1f}' for x in runs)})" if len(runs) > 1 else ""
        lines.append(
            f"| {name} | {r['steps']}{' x ' + str(len(runs)) if len(runs) > 1 else ''} | {tps:.1f}{runs_note} | {x_tps} | {r['peak_rss_gb']:.2f} | {x_rss} | {sps:.2f} | "
            f"{x_lora} | {r['losses'][0]:.4f} | {r['losses'][-1]:.4f} | {r.get('precision', '?')} |"
        )
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name and the flags that decide its precision (Linux /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?"
    )
    flags = set(
        next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    )
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    units = "bf16 units" if {"avx512_bf16", "amx_bf16"} & flags else "no bf16 units (AVX2-only class)"
    return f"{model} (flags: {' '.join(shown) or 'none of avx2/avx512'}; {units})"


def versions() -> str:
    import importlib.metadata as md

    pkgs = ("torch", "transformers", "peft", "trl", "accelerate", "airoad")
    return ", ".join(f"{p} {md.version(p)}" for p in pkgs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help="HF model dir (default: ../shared/tools/get-real-qwen's)",
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared/data/gsm8k_train.jsonl",
        help="GSM8K or ChatML JSONL",
    )
    ap.add_argument("--examples", type=int, default=96, help="first N rows of --data")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per variant")
    ap.add_argument(
        "--cache_steps",
        type=int,
        default=72,
        help="steps of the teacher-cache variant (72 x 4 = 3 epochs of 96)",
    )
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each --repeat_variants variant")
    ap.add_argument(
        "--repeat_variants",
        default="trl,trl_bf16,lora",
        help="variants run --repeat times (the others once); tokens/s is pooled over the runs",
    )
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--prepared", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return run_worker(a)
    refuse_out_on_inputs(a.out, a.data, a.model)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="airoad-bench-"))
    data = prepare_data(a.data, a.examples, work)
    runs: dict[str, list[dict]] = {}
    for v in run_order(a.variants, a.repeat_variants, a.repeat):
        t0 = time.time()
        res = run_variant(v, data)
        runs.setdefault(v, []).append(res)
        print(f"{v}: {time.time() - t0:.0f}s {res}", flush=True)
    results = {v: combine(rs) for v, rs in runs.items()}
    report = "\n".join(
        [
            f"## Training benchmark ({time.strftime('%Y-%m-%d')})",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; {versions()}.",
            f"CPU: {cpu_name()}.",
            f"Command: `python bench/bench_train.py {' '.join(sys.argv[1:])}`",
            "",
            f"Model {a.model.name}, {a.examples} examples of {a.data.name}, seq <= {a.seq}, batch 1 x accum {a.accum}, "
            f"{a.steps} steps ({a.cache_steps} for *_cache, end to end incl. cache build), LoRA r{LORA['r']} on attn+MLP, CPU; airoad in the precision `dtype: auto` picks here, "
            "TRL in fp32 (`trl`) and in its default bf16 (`trl_bf16`): see the precision column. "
            f"{a.repeat_variants} ran {a.repeat}x (the repeats after all the others; tokens/s pooled, each run's in brackets).",
            "",
            table(results),
            "",
        ]
    )
    print(report)
    write_report(a.out, report)


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def refuse_out_on_inputs(out: Path, *inputs: Path) -> None:
    """Exit with one line when the report path is, or lies inside, an input (data file, model dir)."""
    o = out.expanduser().resolve()
    for i in inputs:
        r = i.expanduser().resolve()
        if o == r or r in o.parents:
            raise SystemExit(f"error: --out {out} is or lies inside the input {i}; choose another --out")


def write_report(path: Path, report: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the measured section of ``path`` (between the markers), keeping the prose around it."""
    block = f"{begin}\n{report}\n{end}"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = block + "\n" + old
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
