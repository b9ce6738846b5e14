#!/usr/bin/env bash
# bash bench/recipes_style.sh [WORK_DIR]
#
# Issue 15's style target on the real model: the README's repro checklist (Markdown slice, negative
# guard, 3:1:1 mix with the bundled set), then `airoad probe` (fast plain LoRA probe + compare +
# style eval on the 24 dev prompts, drift on the general prompts) -> WORK_DIR/probe/probe_report.md.
set -euo pipefail
MODEL=${AIROAD_REAL_MODEL:-$HOME/.cache/airoad/real-qwen2.5-0.5b}
W=${1:-/tmp/airoad_style}
CONFIG=${CONFIG:-configs/slm/qwen05b_lora_fast_plain.yaml}
mkdir -p "$W"
t() { local s=$SECONDS; "$@"; echo "TIME $(( SECONDS - s ))s: $*" | cut -c1-200 | tee -a "$W/times.txt"; }
[ -e "$W/md.jsonl" ] || airoad data markdown-slice --dataset_path data/sft/example_train.jsonl --out "$W/md.jsonl" --limit 60 --seed 42
[ -e "$W/neg.jsonl" ] || airoad data neg-guard --out "$W/neg.jsonl" --n 40 --seed 42
[ -e "$W/mix.jsonl" ] || airoad data mix --inputs "$W/md.jsonl:3" "$W/neg.jsonl:1" data/sft/example_train.jsonl:1 \
  --out "$W/mix.jsonl" --shuffle --seed 42 --dedupe
t airoad probe --config "$CONFIG" --set base_model="$MODEL" --set dataset_path="$W/mix.jsonl" \
  --set output_dir="$W/probe" --set max_minutes=15 --n 24 --general_prompts data/eval/general_prompts.jsonl --general_n 24
