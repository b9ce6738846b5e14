"""Seed path for `airoad pref` (same flags).

python scripts/slm/qwen05b_dpo_train.py --config configs/pref/qwen05b_dpo.yaml --init_adapter outputs/qwen05b_fast_plain
"""

import sys

from airoad.cli import main

if __name__ == "__main__":
    sys.exit(main(["pref", *sys.argv[1:]]))
