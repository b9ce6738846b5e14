"""Seed path for `airoad eval` (same flags).

python scripts/eval/style_eval.py --base_model Qwen/Qwen2.5-0.5B-Instruct --adapters outputs/qwen05b_fast_plain --prompts data/sft/example_train.jsonl --n 60 --out outputs/style.json
"""

import sys

from airoad.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
