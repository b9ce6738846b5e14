"""Seed path for `airoad train` (same flags).

python scripts/slm/qwen05b_lora_train.py --config configs/slm/qwen05b_lora_fast_dora_kl.yaml --max_steps 20
"""

import sys

from airoad.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
