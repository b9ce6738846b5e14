#!/usr/bin/env bash
# bash bench/gsm8k_pref_chain.sh [WORK_DIR]
#
# Issue 13's real-model check: SFT fast probe on 128 GSM8K train rows -> pairs from the probe's own
# format failures on 256 other train rows -> DPO from the SFT adapter -> `airoad eval --expect` on
# 32 held-out test questions (greedy, 256 new tokens) for base, SFT and SFT+DPO. Needs the real
# model (../shared/tools/get-real-qwen) and ../shared/data. Prints each step's wall time.
set -euo pipefail
MODEL=${AIROAD_REAL_MODEL:-$HOME/.cache/airoad/real-qwen2.5-0.5b}
SHARED=$(cd "$(dirname "$0")/../../shared" && pwd)
W=${1:-/tmp/airoad_gsm8k_chain}
mkdir -p "$W"
EXPECT='####\s*-?\d'
t() { local s=$SECONDS; "$@"; echo "TIME $(( SECONDS - s ))s: $*" | cut -c1-160 | tee -a "$W/times.txt"; }

python - "$SHARED/data" "$W" <<'PY'
import json, re, sys
from pathlib import Path
src, w = Path(sys.argv[1]), Path(sys.argv[2])
calc = re.compile(r"<<[^>]*>>")
def rows(name, lo, hi):
    lines = (src / name).read_text().splitlines()[lo:hi]
    for line in lines:
        r = json.loads(line)
        yield json.dumps({"messages": [{"role": "user", "content": r["question"].strip()},
                                       {"role": "assistant", "content": calc.sub("", r["answer"]).strip()}]})
for out, name, lo, hi in [("sft128.jsonl", "gsm8k_train.jsonl", 0, 128),
                          ("pairs_src.jsonl", "gsm8k_train.jsonl", 128, 384),
                          ("dev16.jsonl", "gsm8k_train.jsonl", 384, 400),
                          ("test32.jsonl", "gsm8k_test.jsonl", 0, 32)]:
    p = w / out
    if not p.exists():
        p.write_text("\n".join(rows(name, lo, hi)) + "\n")
PY

[ -e "$W/sft/adapter_model.safetensors" ] || t airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml \
  --base_model "$MODEL" --dataset_path "$W/sft128.jsonl" --dev_path "$W/dev16.jsonl" --ablate_examples 0 \
  --max_steps 32 --output_dir "$W/sft" --max_minutes 15 --lora_dropout 0.05
[ -e "$W/pairs.jsonl" ] || t airoad data pairs --dataset_path "$W/pairs_src.jsonl" --adapters "$W/sft" \
  --out "$W/pairs.jsonl" --reject_unless "$EXPECT" --max_new_tokens 256 --batch_size 16
[ -e "$W/dpo/adapter_model.safetensors" ] || t airoad pref --config configs/pref/qwen05b_dpo.yaml \
  --init_adapter "$W/sft" --dataset_path "$W/pairs.jsonl" --output_dir "$W/dpo" --max_minutes 15
for side in sft dpo; do
  [ -e "$W/eval_$side.json" ] || t airoad eval --adapters "$W/$side" --prompts "$W/test32.jsonl" --n 32 \
    --expect "$EXPECT" --max_new_tokens 256 --batch_size 16 --out "$W/eval_$side.json"
done
python - "$W" <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
for side in ("sft", "dpo"):
    rep = json.loads((w / f"eval_{side}.json").read_text())
    print(side, {k: {m: v.get(m) for m in ("pct_expect", "pct_list", "avg_tokens")} for k, v in rep["summary"].items()})
PY
