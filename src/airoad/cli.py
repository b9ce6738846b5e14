"""`airoad <command> ...`: ``airoad NAME`` runs ``airoad/commands/NAME.py`` and ``airoad GROUP
TOOL`` runs ``airoad/commands/GROUP_TOOL.py``, through the one runner of the core
(:mod:`airoad.core.run.command`).

    airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml
    airoad env

`airoad --help` imports no torch. User mistakes exit 2 with one line per problem, no traceback.
"""

from __future__ import annotations

import importlib.metadata as md
import sys

from airoad.core.run.command import dispatch


def version() -> str:
    """The installed distribution's version (the source tree's when run uninstalled)."""

    try:
        return md.version("airoad")
    except md.PackageNotFoundError:
        from airoad import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["-V"]):
        print(f"airoad {version()}")
        return 0
    return dispatch(argv)


if __name__ == "__main__":
    sys.exit(main())
