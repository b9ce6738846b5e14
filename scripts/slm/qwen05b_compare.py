"""Seed path for `airoad compare` (same flags).

python scripts/slm/qwen05b_compare.py --base_model Qwen/Qwen2.5-0.5B-Instruct --adapters outputs/qwen05b_fast_plain --n 5 --out outputs/compare
"""

import sys

from airoad.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
