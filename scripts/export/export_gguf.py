"""Seed path for `airoad export gguf` (same flags).

python scripts/export/export_gguf.py --adapters outputs/qwen05b_fast_plain --out exports/fast_plain_gguf --quant q8_0
"""

import sys

from airoad.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", "gguf", *sys.argv[1:]]))
