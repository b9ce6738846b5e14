"""Seed path for `airoad data markdown-slice` (same flags).

python scripts/data/build_markdown_slice.py --dataset_path data/sft/example_train.jsonl --out data/sft/x_md.jsonl --limit 60 --seed 42
"""

import sys

from airoad.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "markdown-slice", *sys.argv[1:]]))
