"""How every command runs: a table of sub-commands imported lazily (``--help`` loads no torch),
and a guard that turns user mistakes into ``error:`` lines and exit status 2, no traceback."""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable

from airoad.core.base.errors import UserError
from airoad.core.base.options import closest


def usage(table: dict[str, tuple[str, str]], prog: str = "airoad", noun: str = "command") -> str:
    width = max(map(len, table))
    lines = [f"usage: {prog} <{noun}> [options]   ({prog} <{noun}> --help for its options)", "", f"{noun}s:"]
    if prog == "airoad":
        lines[0] += f"\n       {prog} --version"
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in table.items()]
    return "\n".join(lines)


def dispatch(
    table: dict[str, tuple[str, str]],
    argv: list[str],
    prog: str,
    noun: str,
    call: Callable[[object, list[str]], int] = lambda module, rest: module.main(rest),
    what: str | None = None,
) -> int:
    """``prog <name> rest...``: usage on no name or --help; one error line with the closest name for an
    unknown one; else import ``table[name]``'s module (lazily: `--help` loads no torch) and ``call`` it."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(table, prog, noun))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in table:
        hint = closest(name, list(table))
        fix = f"did you mean `{prog} {hint}`?" if hint else f"see `{prog} --help`"
        print(f"error: unknown {what or noun} {name!r}; {fix}", file=sys.stderr)
        return 2
    return call(importlib.import_module(table[name][0]), rest)


def run_guarded(fn: Callable[[], int]) -> int:
    """Run a command body; user errors -> `error: ...` lines on stderr and exit 2.

    Under torchrun / accelerate launch every rank finds the same mistake (all check before any
    writes); only rank 0 reports it, so the user reads it once.
    """
    speak = os.environ.get("RANK", "0") == "0"
    try:
        return fn()
    except KeyboardInterrupt:
        if speak:
            print("interrupted", file=sys.stderr)
        return 130
    except UserError as e:
        for line in e.problems if speak else ():
            print(f"error: {line}", file=sys.stderr)
        if not speak:
            # The launcher stops every rank when the first one exits: give rank 0 the time to say why.
            time.sleep(3)
        return 2
