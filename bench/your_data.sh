#!/usr/bin/env bash
# bash bench/your_data.sh [WORK_DIR]
#
# The README's "Your own data" path on the real model, with configs/slm/qwen05b_your_data.yaml as
# shipped: 160 GSM8K train rows (400-559, none of the recipes' rows) as a user's my_chats.jsonl ->
# `airoad data stats` -> `airoad data split` (a seeded tenth held out) -> `airoad train` -> `airoad
# eval --expect` on the run's own dev set and on 32 held-out GSM8K test questions (greedy, 256 new
# tokens). Needs the real model (../shared/tools/get-real-qwen) and ../shared/data. Prints each
# step's wall time; docs/recipes.md s.5 holds the numbers.
set -euo pipefail
MODEL=${AIROAD_REAL_MODEL:-$HOME/.cache/airoad/real-qwen2.5-0.5b}
SHARED=$(cd "$(dirname "$0")/../../shared" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-/tmp/airoad_your_data}
mkdir -p "$W" && cd "$W"
ln -sfn "$REPO/configs" configs && mkdir -p data && ln -sfn "$REPO/data/anchor" data/anchor
EXPECT='####\s*-?\d'
t() { local s=$SECONDS; "$@"; echo "TIME $(( SECONDS - s ))s: $*" | cut -c1-160 | tee -a times.txt; }

python - "$SHARED/data" <<'PY'
import json, re, sys
from pathlib import Path
src = Path(sys.argv[1])
calc = re.compile(r"<<[^>]*>>")
def rows(name, lo, hi):
    for line in (src / name).read_text().splitlines()[lo:hi]:
        r = json.loads(line)
        yield json.dumps({"messages": [{"role": "user", "content": r["question"].strip()},
                                       {"role": "assistant", "content": calc.sub("", r["answer"]).strip()}]})
for out, name, lo, hi in [("my_chats.jsonl", "gsm8k_train.jsonl", 400, 560), ("test32.jsonl", "gsm8k_test.jsonl", 0, 32)]:
    if not Path(out).exists():
        Path(out).write_text("\n".join(rows(name, lo, hi)) + "\n")
PY

t airoad data stats my_chats.jsonl --base_model "$MODEL"
[ -e data/my_train.jsonl ] || t airoad data split --dataset_path my_chats.jsonl --train_out data/my_train.jsonl --dev_out data/my_dev.jsonl
[ -e outputs/my_run/adapter_model.safetensors ] || t airoad train --config configs/slm/qwen05b_your_data.yaml --base_model "$MODEL"
[ -e reports/dev.json ] || t airoad eval --adapters outputs/my_run --expect "$EXPECT" --out reports/dev.json --batch_size 16
[ -e reports/test32.json ] || t airoad eval --adapters outputs/my_run --prompts test32.jsonl --expect "$EXPECT" --out reports/test32.json --batch_size 16
python - <<'PY'
import json, re
def number(text):  # the '#### N' answer, else the last number written (the base writes no '####')
    m = re.search(r"####\s*(-?[\d,.]+)", text) or list(re.finditer(r"-?\d[\d,]*\.?\d*", text))[-1:] or [None]
    m = m if not isinstance(m, list) else m[0]
    return m and m.group(m.lastindex or 0).replace(",", "").rstrip(".")
for name, data in (("dev", "data/my_dev.jsonl"), ("test32", "test32.jsonl")):
    refs = {r["messages"][0]["content"]: number(r["messages"][-1]["content"])
            for r in map(json.loads, open(data))}
    r = json.load(open(f"reports/{name}.json"))
    for side in r["summary"]:
        right = sum(number(s[side]["answer"]) == refs[s["prompt"]] for s in r["samples"])
        print(f"{name} {side}: pct_expect {r['summary'][side].get('pct_expect')}, final answer right "
              f"{right}/{len(r['samples'])}", "" if side == "base" else f"drift {r.get('drift'):.3f}")
PY
