"""Seed path for `airoad data mix` (same flags).

python scripts/data/pack_mix_chatml.py --inputs data/sft/x_md.jsonl:3 data/sft/x_neg.jsonl:1 data/sft/example_train.jsonl:1 --out data/sft/mix.jsonl --shuffle --seed 42 --dedupe
"""

import sys

from airoad.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "mix", *sys.argv[1:]]))
