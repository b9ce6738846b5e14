"""How every command runs, once: argv -> options -> inputs resolved -> outputs checked and held
-> the command's ``run`` -> exit status.

The rule from a command's name to its code: ``airoad NAME`` is the module
``airoad.commands.NAME`` and ``airoad GROUP TOOL`` is ``airoad.commands.GROUP_TOOL`` (dashes become
underscores: ``airoad data neg-guard`` is ``airoad/commands/data_neg_guard.py``). Each holds one
:class:`~airoad.core.base.commands.Command`.

What the core does for every command (a command re-implements none of it):

1. parse: :func:`~airoad.core.base.options.load_config` (YAML < flags, every problem at once,
   arguments that are not UTF-8 refused, numbers strict);
2. resolve inputs: every field declared ``io="input"``, the adapter dir (``io="adapters"``) with the
   base model and tokenizer it names (its ``run_config.yaml`` or ``adapter_config.json``; an
   explicit ``io="base"`` field wins) and the command's own extra inputs;
3. check outputs (``io="out_file"``, ``"out_dir"``, ``"run_dir"``) against all of those inputs, and
   for existing ones ``--overwrite`` (only over what airoad recorded, of the same kind);
4. hold the outputs (a lock beside each; a second airoad process is refused), re-check them under
   the lock, run, release; map the outcome to an exit status (:func:`run_guarded`).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import sys
import time
from pathlib import Path
from typing import Any

from airoad.core.base.commands import Command, Invocation, rank, run_guarded, usage
from airoad.core.base.errors import UserError
from airoad.core.base.options import alias_notes, closest, input_keys, load_config
from airoad.core.base.outputs import clash, holding, inside_output, output_problems
from airoad.core.model.adapter_source import Source, resolve_source

COMMANDS_PACKAGE = "airoad.commands"
GROUPS = ("data", "export")  # `airoad GROUP TOOL`
OUTPUT_KINDS = {"out_file": "file", "out_dir": "dir", "run_dir": "run"}


def module_name(words: list[str]) -> str:
    """The module of ``airoad WORDS...`` by the one rule (module docstring)."""
    return f"{COMMANDS_PACKAGE}.{'_'.join(w.replace('-', '_') for w in words)}"


def names(group: str | None = None) -> list[str]:
    """The command names (or ``group``'s tool names), from the module files alone: nothing is
    imported, so finding the one command to run costs no start-up time."""
    pkg = importlib.import_module(COMMANDS_PACKAGE)
    modules = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__))
    if group is None:
        return sorted({m.partition("_")[0] if m.partition("_")[0] in GROUPS else m for m in modules})
    return [
        m.partition("_")[2].replace("_", "-") for m in modules if m.partition("_")[0] == group and "_" in m
    ]


def table(group: str | None = None) -> dict[str, str]:
    """Command name -> summary, for the usage text: each command module is imported (none imports
    torch) to read its summary; a group's module holds a SUMMARY of its own."""
    found: dict[str, str] = {}
    for name in names(group):
        module = importlib.import_module(module_name([group, name] if group else [name]))
        found[name] = module.SUMMARY if group is None and name in GROUPS else module.COMMAND.summary
    return found


def dispatch(argv: list[str], words: tuple[str, ...] = ()) -> int:
    """``airoad [GROUP] NAME rest...``: usage (exit 0 for --help, 2 for nothing at all), one error
    line with the closest name for an unknown one, else run the command."""
    group = words[0] if words else None
    prog, noun = " ".join(("airoad", *words)), "tool" if group == "data" else "target" if group else "command"
    known = names(group)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(table(group), prog, noun), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in known:
        hint = closest(name, known)
        fix = f"did you mean `{prog} {hint}`?" if hint else f"see `{prog} --help`"
        what = {"data": "data tool", "export": "export target"}.get(group or "", "command")
        print(f"error: unknown {what} {name!r}; {fix}", file=sys.stderr)
        return 2
    if group is None and name in GROUPS:
        return dispatch(rest, (name,))
    module = importlib.import_module(module_name([*words, name]))
    return run_command(module.COMMAND, rest, f"{prog} {name}")


def run_command(cmd: Command, argv: list[str], prog: str) -> int:
    """Run ``cmd`` on ``argv`` the one way (module docstring); returns the exit status."""
    printer = print if rank() == 0 else _silent

    def body() -> int | None:
        started = time.time()  # a run's setup time counts from here, parsing included
        args = cmd.argv(argv) if cmd.argv else argv
        cfg, sources = load_config(cmd.schema, args, prog=prog, description=cmd.summary)
        if rank() == 0:  # on stderr: stdout may be a report (data stats --json)
            for note in alias_notes(sources):
                print(note, file=sys.stderr)
        inv = Invocation(prog, list(argv), sources, printer=printer, started=started)
        model_problems: list[str] = []
        try:
            inv.source, inv.inputs = resolve_inputs(cfg, inv, cmd)
        except UserError as e:  # outputs are checked against what was given; reported last
            model_problems = e.problems
            inv.inputs = existing(given_inputs(cfg, cmd))
        outputs = declared_outputs(cfg) + (cmd.outputs(cfg) if cmd.outputs else [])
        problems = output_checks(cfg, outputs, inv.inputs, cmd.writer)
        problems += (cmd.check(cfg) if cmd.check else []) + model_problems
        if problems:
            raise UserError(problems)
        held = [(flag, path) for flag, path, kind in outputs if kind != "run" and path is not None]
        with holding(held):
            if problems := output_checks(cfg, outputs, inv.inputs, cmd.writer):  # under the lock
                raise UserError(problems)
            status = cmd.run(cfg, inv)
        return status if isinstance(status, int) else 0  # a tool may return what it made

    status = None
    try:
        status = run_guarded(body)
        return status
    finally:
        close_process_group(finished=status == 0)


def close_process_group(finished: bool) -> None:
    """Under torchrun / accelerate launch: no rank leaves before the others are done, then the
    process group is torn down while the interpreter is whole. Rank 0 writes the run's files after
    the last collective; a rank that exited meanwhile aborted at interpreter exit, its gloo threads
    still holding tensors (SIGABRT, "terminate called without an active exception"; pytorch#190489,
    #179291): seen as rank 1 dying while rank 0 was saving, in 3 of 19 suite runs. A failed
    rank does not wait (the launcher stops the job). No torch.distributed imported: nothing to do."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    if finished:
        wait_for_every_rank(dist)
    dist.destroy_process_group()


def wait_for_every_rank(dist: Any) -> None:
    """A barrier with a deadline where gloo offers one (a rank that failed elsewhere is reported,
    not waited for forever); NCCL's plain barrier."""
    from datetime import timedelta

    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(minutes=10))
        else:
            dist.barrier()
    except RuntimeError:  # another rank failed: the launcher reports it and stops the job
        pass


def _silent(*_: Any) -> None:
    """The printer of ranks other than 0: one job, one set of lines."""


def fields_with(cfg: Any, role: str) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg) if f.metadata.get("io") == role]


def resolve_inputs(cfg: Any, inv: Invocation, cmd: Command) -> tuple[Source | None, list[tuple[str, Path]]]:
    """(the resolved model source or None, every (label, path) the command reads that exists here).
    UserError lists every problem of the model inputs."""
    raw = given_inputs(cfg, cmd)
    source = None
    adapters, bases = fields_with(cfg, "adapters"), fields_with(cfg, "base")
    base_key = bases[0] if bases else None
    base = getattr(cfg, base_key) if base_key else None
    if adapters and getattr(cfg, adapters[0]):
        # the adapter dir names its base: an explicit base wins, a schema default does not
        given = base if base_key and inv.given(base_key) else None
        source = resolve_source(
            given, getattr(cfg, adapters[0]), flag=f"--{adapters[0]}", base_flag=f"--{base_key}"
        )
    elif base_key and base and adapters:
        source = resolve_source(base, None, base_flag=f"--{base_key}")
    if source is not None:
        label = source.base_from if source.base_from.startswith("--") else "base"
        raw += [(label, source.base), ("tokenizer", source.tokenizer_from), *source.data_files]
    return source, existing(raw)


def given_inputs(cfg: Any, cmd: Command) -> list[tuple[str, str | None]]:
    """(flag, path) of every input the user gave: fields declared io input, base or adapters, and
    the command's own extra inputs."""
    return [(f"--{k}", getattr(cfg, k)) for k in input_keys(cfg)] + (cmd.inputs(cfg) if cmd.inputs else [])


def existing(raw: list[tuple[str, Any]]) -> list[tuple[str, Path]]:
    """The (label, path) pairs whose path exists here (what could be overwritten)."""
    paths = [(label, Path(str(p)).expanduser()) for label, p in raw if p]
    return [(label, p) for label, p in paths if p.exists()]


def declared_outputs(cfg: Any) -> list[tuple[str, Path | None, str]]:
    """(flag, path, kind) of every output field that is set (path None: given as an empty string,
    which the check refuses); kind: file, dir, or run (a training run's directory)."""
    found = []
    for role, kind in OUTPUT_KINDS.items():
        for key in fields_with(cfg, role):
            value = getattr(cfg, key)
            if value is not None:
                found.append((f"--{key}", Path(value).expanduser() if str(value).strip() else None, kind))
    return found


def output_checks(
    cfg: Any, outputs: list[tuple[str, Path | None, str]], inputs: list[tuple[str, Path]], writer: str | None
) -> list[str]:
    """One line per problem of every output: against every input, and (files and staged dirs)
    against what exists, with ``--overwrite``. A run dir's existing contents are its lane's to
    judge (resume, overwrite), after this."""
    overwrite = bool(getattr(cfg, "overwrite", False))
    problems = []
    for flag, path, kind in outputs:
        if path is None:
            what = "directory" if kind != "file" else "file"
            problems.append(f"{flag} '' is empty; give the {what} to write (e.g. {flag} outputs/my_run)")
        elif kind == "run":  # a training run names its keys as its YAML does
            key = flag.removeprefix("--")
            if hit := clash(path, [(label.removeprefix("--"), p) for label, p in inputs]):
                problems.append(f"{key} {path}: {hit}; choose another {flag} (inputs are never modified)")
            elif owner := inside_output(path):
                problems.append(f"{key} {path}: lies inside {owner}; choose another {flag}")
        else:
            problems += output_problems(flag, path, inputs, overwrite=overwrite, kind=kind, writer=writer)
    return problems + outputs_overlap(outputs)


def outputs_overlap(outputs: list[tuple[str, Path | None, str]]) -> list[str]:
    """One line per output that is, or lies inside, an earlier output of the same command (two
    files of one command would overwrite each other; these may not exist yet, so paths alone)."""
    problems, seen = [], []
    for flag, path, _ in outputs:
        if path is None:
            continue
        here = Path(path).expanduser().resolve()
        for other_flag, other in seen:
            if here == other:
                problems.append(f"{flag} {path}: is also {other_flag}; give each output its own path")
            elif other in here.parents or here in other.parents:
                problems.append(
                    f"{flag} {path}: overlaps {other_flag} {other}; give each output its own path"
                )
        seen.append((flag, here))
    return problems
