"""`python -m airoad ...` is the same as `airoad ...`."""

import sys

from airoad.cli import main

if __name__ == "__main__":
    sys.exit(main())
