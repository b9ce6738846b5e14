"""Seed path for `airoad export coreml` (same flags).

python scripts/export/export_coreml.py --adapters outputs/qwen05b_fast_plain --out exports/fast_plain_coreml --context 2048,4096
"""

import sys

from airoad.cli import main as cli

if __name__ == "__main__":
    sys.exit(cli(["export", "coreml", *sys.argv[1:]]))
