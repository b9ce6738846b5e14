#!/usr/bin/env bash
# bash bench/recipes_kl.sh [WORK_DIR] [LAMBDAS] [ANCHOR_LAMBDAS]
#
# Issue 15's KL target on the real model: the GSM8K fast probe (128 train rows, 32 steps x 4) plain,
# with kl_lambda in LAMBDAS (default "0.3 1.0"; " " for none), and with KL anchors at each
# kl_anchor_lambda in ANCHOR_LAMBDAS (default none): 32 self-instruct seed tasks (../shared/data, their
# reference answers; no prompt of data/eval/general_prompts.jsonl among them) mixed in with KL only,
# 40 steps so the 128 task rows are seen once as in the plain run. For each run,
# `airoad eval --expect` on 32 held-out test questions (adherence) and `airoad eval` on
# data/eval/general_prompts.jsonl (drift = mean KL(tuned || base) per answer token on prompts unlike
# the training data). Reuses the data files and the plain SFT run of bench/gsm8k_pref_chain.sh when
# WORK_DIR already holds them.
set -euo pipefail
MODEL=${AIROAD_REAL_MODEL:-$HOME/.cache/airoad/real-qwen2.5-0.5b}
W=${1:-/tmp/airoad_gsm8k_chain}
LAMBDAS=${2:-"0.3 1.0"}
ANCHOR_LAMBDAS=${3:-}
SHARED=$(cd "$(dirname "$0")/../../shared" && pwd)
EXPECT='####\s*-?\d'
GENERAL=data/eval/general_prompts.jsonl
t() { local s=$SECONDS; "$@"; echo "TIME $(( SECONDS - s ))s: $*" | cut -c1-200 | tee -a "$W/times_kl.txt"; }
[ -e "$W/sft128.jsonl" ] || { echo "run bench/gsm8k_pref_chain.sh $W first (it writes the data files)"; exit 2; }

train() {  # train NAME KL_LAMBDA [FLAGS...]
  local name=$1 kl=$2; shift 2
  [ -e "$W/$name/adapter_model.safetensors" ] || t airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml \
    --base_model "$MODEL" --dataset_path "$W/sft128.jsonl" --dev_path "$W/dev16.jsonl" --ablate_examples 0 \
    --max_steps 32 --output_dir "$W/$name" --max_minutes 15 --kl_lambda "$kl" --lora_dropout 0.05 "$@"
}
python - "$SHARED/data/self_instruct_seed_tasks.jsonl" "$W/anchors.jsonl" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[2])
if not out.exists():
    rows = []
    for line in Path(sys.argv[1]).read_text().splitlines():
        r = json.loads(line)
        inst = r["instances"][0]
        user = r["instruction"].strip() + (f"\n\n{inst['input'].strip()}" if inst["input"].strip() else "")
        rows.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": inst["output"].strip()}]})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
PY
evaluate() {  # evaluate NAME
  [ -e "$W/eval_$1.json" ] || t airoad eval --adapters "$W/$1" --prompts "$W/test32.jsonl" --n 32 \
    --expect "$EXPECT" --max_new_tokens 256 --batch_size 16 --out "$W/eval_$1.json"
  [ -e "$W/general_$1.json" ] || t airoad eval --adapters "$W/$1" --prompts "$GENERAL" --n 48 \
    --max_new_tokens 256 --batch_size 16 --out "$W/general_$1.json"
}
train sft 0
evaluate sft
for l in $LAMBDAS; do
  train "sft_kl$l" "$l"
  evaluate "sft_kl$l"
done
for l in $ANCHOR_LAMBDAS; do
  train "sft_anchor$l" 0 --kl_anchor_path "$W/anchors.jsonl" --kl_anchor_examples 32 --kl_anchor_lambda "$l" \
    --max_steps 40
  evaluate "sft_anchor$l"
done
python - "$W" sft $(for l in $LAMBDAS; do echo "sft_kl$l"; done) $(for l in $ANCHOR_LAMBDAS; do echo "sft_anchor$l"; done) <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
plain = None
print("| run | pct_expect | drift on test32 | drift on general prompts | vs plain |")
print("|---|---|---|---|---|")
for name in sys.argv[2:]:
    ev = json.loads((w / f"eval_{name}.json").read_text())
    gen = json.loads((w / f"general_{name}.json").read_text())
    plain = gen["drift"] if plain is None else plain
    print(f"| {name} | {ev['summary']['tuned']['pct_expect']:.1f} % | {ev['drift']:.3f} | {gen['drift']:.3f} "
          f"({gen['drift_tokens']} tokens) | {gen['drift'] / plain - 1:+.0%} |")
PY
