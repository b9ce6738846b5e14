"""What a command is: a declaration (:class:`Command`) the core runs, and the one guard that maps
what a command raises to an exit status. Nothing here imports torch.

A command module (``airoad/commands/<name>.py``) holds one ``COMMAND = Command(...)``: its options
schema (whose fields say which keys are inputs and outputs, see
:mod:`airoad.core.base.options`), the function that does the work, and its one-line summary.
:func:`airoad.core.run.command.run_command` parses, resolves and checks every input and output,
locks the outputs, and calls ``run(cfg, inv)``; :func:`run_guarded` maps the outcome:

- 0: done; 1: a check of the command's own result failed (:class:`CheckFailed`), nothing kept;
- 2: a user mistake (:class:`UserError`): one ``error:`` line per problem, no traceback;
- 130 / 143: interrupted by Ctrl-C / SIGTERM (a training run's own status says which).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airoad.core.base.errors import CheckFailed, UserError


@dataclass(frozen=True)
class Command:
    """A command as it declares itself.

    ``schema``: its options dataclass; ``run(cfg, inv)``: the work, returning the exit status (None means 0); ``summary``: one line
    for the command table and ``--help``; ``writer``: the name its directory outputs are recorded
    under (``--overwrite`` never replaces another writer's output); ``argv``: a rewrite of argv
    before parsing (a positional file); ``inputs``: paths the command reads that no field declares
    (e.g. ``--inputs a.jsonl:3``), as (label, path) pairs; ``outputs``: outputs no field declares
    (compare's ``--out DIR`` is two report files), as (flag, path, "file" or "dir"); ``check``: the
    command's own read-only checks of its inputs (a data file's rows), one line per problem, so
    every problem is reported at once, before anything loads or is written."""

    schema: type
    run: Callable[..., int | None]
    summary: str
    writer: str | None = None
    argv: Callable[[list[str]], list[str]] | None = None
    inputs: Callable[[Any], list[tuple[str, str | None]]] | None = None
    outputs: Callable[[Any], list[tuple[str, Path | None, str]]] | None = None
    check: Callable[[Any], list[str]] | None = None


@dataclass
class Invocation:
    """What the core hands a command's ``run``: its name, where each option's value came from, the
    resolved model inputs (``source``: base, adapters, tokenizer, run system prompt, or None), every
    input path, the printer (silent on ranks other than 0) and the arguments as typed."""

    prog: str
    argv: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    source: Any = None
    inputs: list[tuple[str, Path]] = field(default_factory=list)
    printer: Callable[[str], None] = print
    started: float = field(default_factory=time.time)

    def given(self, key: str) -> bool:
        """Whether option ``key`` was set by the user (YAML or flag), not left at its default."""
        return self.sources.get(key, "default") != "default"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def run_guarded(fn: Callable[[], int | None]) -> int:
    """Run a command body; map its outcome to an exit status (module docstring).

    Under torchrun / accelerate launch every rank finds the same mistake (all check before any
    writes); only rank 0 reports it, so the user reads it once.
    """
    speak = rank() == 0
    try:
        return fn() or 0
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
    except CheckFailed as e:
        if speak:
            print(f"error: {e}", file=sys.stderr)
        return 1
    except SystemExit as e:  # argparse's --help: a status, not an exit from a caller's process
        return e.code if isinstance(e.code, int) else 0


def usage(table: dict[str, str], prog: str = "airoad", noun: str = "command") -> str:
    """The usage text of a command table (name -> summary)."""
    width = max(map(len, table))
    lines = [f"usage: {prog} <{noun}> [options]   ({prog} <{noun}> --help for its options)", "", f"{noun}s:"]
    if prog == "airoad":
        lines[0] += f"\n       {prog} --version"
    lines += [f"  {name:<{width}}  {help_}" for name, help_ in table.items()]
    return "\n".join(lines)


def positional(key: str) -> Callable[[list[str]], list[str]]:
    """A ``Command.argv`` rewrite: ``airoad CMD VALUE ...`` means ``airoad CMD --KEY VALUE ...``
    (``airoad data stats FILE``, ``airoad chat RUN_DIR``)."""

    def rewrite(argv: list[str]) -> list[str]:
        return [f"--{key}", argv[0], *argv[1:]] if argv and not argv[0].startswith("-") else argv

    return rewrite
