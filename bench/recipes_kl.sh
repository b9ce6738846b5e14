#!/usr/bin/env bash
# bash bench/recipes_kl.sh [WORK_DIR] [LAMBDAS]
#
# Issue 15's KL target on the real model: the GSM8K fast probe (128 train rows, 32 steps x 4) plain
# and with kl_lambda in LAMBDAS (default "0.3 1.0"); for each, `airoad eval --expect` on 32 held-out
# test questions (adherence) and `airoad eval` on data/eval/general_prompts.jsonl (drift = mean
# KL(tuned || base) per answer token on prompts unlike the training data). Reuses the data files
# and the plain SFT run of bench/gsm8k_pref_chain.sh when WORK_DIR already holds them.
set -euo pipefail
MODEL=${AIROAD_REAL_MODEL:-$HOME/.cache/airoad/real-qwen2.5-0.5b}
W=${1:-/tmp/airoad_gsm8k_chain}
LAMBDAS=${2:-"0.3 1.0"}
EXPECT='####\s*-?\d'
GENERAL=data/eval/general_prompts.jsonl
t() { local s=$SECONDS; "$@"; echo "TIME $(( SECONDS - s ))s: $*" | cut -c1-200 | tee -a "$W/times_kl.txt"; }
[ -e "$W/sft128.jsonl" ] || { echo "run bench/gsm8k_pref_chain.sh $W first (it writes the data files)"; exit 2; }

train() {  # train NAME KL_LAMBDA
  [ -e "$W/$1/adapter_model.safetensors" ] || t airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml \
    --base_model "$MODEL" --dataset_path "$W/sft128.jsonl" --dev_path "$W/dev16.jsonl" --ablate_examples 0 \
    --max_steps 32 --output_dir "$W/$1" --max_minutes 15 --kl_lambda "$2"
}
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
python - "$W" sft $(for l in $LAMBDAS; do echo "sft_kl$l"; done) <<'PY'
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
