"""Seed path for `airoad merge` (same flags; --base_model may be omitted: it is read from the run's saved config).

python scripts/slm/qwen05b_lora_merge.py --base_model Qwen/Qwen2.5-0.5B-Instruct --adapters outputs/qwen05b_fast_plain --out checkpoints/x_merged
"""

import sys

from airoad.cli import main

if __name__ == "__main__":
    sys.exit(main(["merge", *sys.argv[1:]]))
