#!/usr/bin/env bash
# bash bench/recipes_sweep.sh [WORK_DIR] [RUNS]
#
# Issue 15's defaults sweep on the real model: the GSM8K fast probe (128 train rows, batch 1 x 4,
# dev = 16 other train rows) with one setting changed per run from configs/slm/qwen05b_lora_fast_plain.yaml
# as it was when measured (lr 2e-4 cosine, 32 steps, LoRA r16 attn+MLP, dropout 0.05, pinned below), then `airoad eval --expect` on 32
# held-out test questions (greedy, 256 new tokens). The table: adherence (pct_expect), final answers
# right, final dev loss, drift vs base on the test questions, train time. RUNS (default: all) picks
# by name. Reuses WORK_DIR's data files and plain run (bench/gsm8k_pref_chain.sh or recipes_kl.sh).
set -euo pipefail
MODEL=${AIROAD_REAL_MODEL:-$HOME/.cache/airoad/real-qwen2.5-0.5b}
W=${1:-/tmp/airoad_gsm8k_chain}
EXPECT='####\s*-?\d'
declare -A FLAGS=(
  [sft]=""
  [lr1e-4]="--learning_rate 1e-4"
  [lr4e-4]="--learning_rate 4e-4"
  [s16_lr4e-4]="--max_steps 16 --learning_rate 4e-4"
  [drop0]="--lora_dropout 0"
  [dora]="--use_dora true --lora_dropout 0"
)
RUNS=${2:-"sft lr1e-4 lr4e-4 s16_lr4e-4 drop0 dora"}
t() { local s=$SECONDS; "$@"; echo "TIME $(( SECONDS - s ))s: $*" | cut -c1-200 | tee -a "$W/times_sweep.txt"; }
[ -e "$W/sft128.jsonl" ] || { echo "run bench/gsm8k_pref_chain.sh $W first (it writes the data files)"; exit 2; }
for name in $RUNS; do
  # shellcheck disable=SC2086
  [ -e "$W/$name/adapter_model.safetensors" ] || t airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml \
    --base_model "$MODEL" --dataset_path "$W/sft128.jsonl" --dev_path "$W/dev16.jsonl" --ablate_examples 0 \
    --max_steps 32 --eval_every_steps 8 --output_dir "$W/$name" --max_minutes 15 --lora_dropout 0.05 ${FLAGS[$name]}
  [ -e "$W/eval_$name.json" ] || t airoad eval --adapters "$W/$name" --prompts "$W/test32.jsonl" --n 32 \
    --expect "$EXPECT" --max_new_tokens 256 --batch_size 16 --out "$W/eval_$name.json"
done
python - "$W" $RUNS <<'PY'
import json, re, sys
from pathlib import Path
w = Path(sys.argv[1])
ref = [json.loads(l)["messages"][-1]["content"] for l in (w / "test32.jsonl").read_text().splitlines()]
num = lambda s: (m.group(1).replace(",", "") if (m := re.search(r"####\s*(-?[\d,]+)", s)) else None)
print("| run | pct_expect | final answer right | dev loss | drift on test32 | train s |")
print("|---|---|---|---|---|---|")
for name in sys.argv[2:]:
    ev = json.loads((w / f"eval_{name}.json").read_text())
    answers = [num(s["tuned"]["answer"]) for s in ev["samples"]]
    right = sum(a is not None and a == num(r) for a, r in zip(answers, ref))
    log = json.loads((w / name / "train_log.json").read_text())
    dev = [r["eval_loss"] for r in log if r.get("eval_loss") is not None]
    tm = json.loads((w / name / "time_metrics.json").read_text())
    print(f"| {name} | {ev['summary']['tuned']['pct_expect']:.1f} % | {right} / {len(ref)} | "
          f"{dev[-1] if dev else float('nan'):.4f} | {ev['drift']:.3f} | {tm.get('train_s', tm.get('train_seconds', '?'))} |")
PY
