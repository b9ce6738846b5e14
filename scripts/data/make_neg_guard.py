"""Seed path for `airoad data neg-guard` (same flags).

python scripts/data/make_neg_guard.py --out data/sft/x_neg.jsonl --n 40 --seed 42
"""

import sys

from airoad.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "neg-guard", *sys.argv[1:]]))
