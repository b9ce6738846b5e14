"""Convert GSM8K rows ({"question", "answer"}) to airoad ChatML rows.

    python scripts/data/gsm8k_to_chatml.py --infile ../shared/data/gsm8k_train.jsonl --out data/gsm8k_chatml.jsonl --limit 200

The calculator annotations (<<48/2=24>>) are removed; the final `#### N` line is kept as the answer line.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

CALC = re.compile(r"<<[^>]*>>")


def convert(row: dict) -> dict:
    answer = CALC.sub("", row["answer"]).strip()
    return {
        "messages": [
            {"role": "user", "content": row["question"].strip()},
            {"role": "assistant", "content": answer},
        ]
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infile", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=0, help="first N rows (0 = all)")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"error: {out} exists; choose another --out")
    rows = [
        json.loads(line)
        for line in Path(args.infile).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rows = rows[: args.limit] if args.limit else rows
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(convert(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
