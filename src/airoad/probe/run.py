"""`airoad probe`: train, then compare and style eval on the dev prompts, and one page to decide from.

    airoad probe --config configs/slm/qwen05b_lora_fast_plain.yaml --general_prompts data/eval/general_prompts.jsonl

The steps are the commands a user would type, run in this process through :func:`airoad.cli.main`:

1. ``airoad train --config FILE`` plus ``--KEY VALUE`` for every ``--set KEY=VALUE``;
2. ``airoad compare`` on ``--compare_n`` prompts of ``--prompts`` (default: the run's dev set);
3. ``airoad eval`` on ``--n`` prompts of ``--prompts`` (with ``--expect`` when given);
4. with ``--general_prompts``: ``airoad eval`` on ``--general_n`` of them (drift away from the data).

The run's output_dir is the YAML's ``output_dir`` (``--set output_dir=DIR`` wins; neither: the train
default, ``outputs/run``). Into it, beside the run's own files, the probe writes :data:`PROBE_FILES`:
``probe_report.md`` (:mod:`airoad.probe.report`), ``probe_compare.md``/``.json`` and
``probe_eval.json`` (plus ``probe_eval_general.json``), the reports of steps 2-4 as those commands
write them.

Contracts:

- Every mistake the probe can see (its options, the YAML, the prompt files, ``--expect``, a file in
  output_dir it would replace that airoad did not write) is an ``error:`` line, exit 2, before
  anything trains; train's own checks follow with the same rule. A step that fails stops the probe
  with that step's exit status (its message is the step's own).
- The run directory rules hold: train decides whether output_dir may be used (empty, ``--set
  overwrite=true``, ``--set resume=true``); the probe's files are added to the run's manifest before
  they are written, so a later ``--overwrite true`` replaces them and nothing else, and they are
  written atomically while the probe holds the output_dir lock. Compare and eval write into a
  temporary folder (a report may never lie inside its own ``--adapters``); the probe copies them in.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from airoad.cli import main as airoad
from airoad.core.base.errors import UserError, problems_of
from airoad.core.base.io import write_text
from airoad.core.base.options import ConfigError, default_of, read_yaml_mapping
from airoad.core.base.outputs import acquire_lock, record, recorded, release_lock
from airoad.core.base.runkeys import RunKeys
from airoad.infer.prompts import load_prompts
from airoad.infer.schema import GenerateOptions, Generation
from airoad.probe.report import ReportInputs, render
from airoad.probe.schema import ProbeConfig

REPORT = "probe_report.md"
# name in output_dir -> where its step writes it, inside the step folder (see step_argvs)
PROBE_FILES = {
    REPORT: None,
    "probe_compare.md": "compare/compare.md",
    "probe_compare.json": "compare/compare.json",
    "probe_eval.json": "eval.json",
    "probe_eval_general.json": "eval_general.json",
}
# step -> its JSON report in the step folder
REPORTS = {"compare": "compare/compare.json", "eval": "eval.json", "eval_general": "eval_general.json"}
TRAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class StepFailed(Exception):
    """A step (train, compare, eval) exited non-zero; it has said why. ``status``: its exit status."""

    def __init__(self, step: str, status: int):
        super().__init__(f"{step} exited with {status}")
        self.status = status


@dataclass
class Plan:
    """What the probe will do, known (and checked) before anything trains."""

    cfg: ProbeConfig
    argv: list[str]  # the probe's own arguments, for the report's first command
    train_argv: list[str]  # `airoad train ...` without the program name
    out: Path

    def writes(self) -> list[str]:
        """The names this probe writes into output_dir."""
        skip = set() if self.cfg.general_prompts else {"probe_eval_general.json"}
        return [name for name in PROBE_FILES if name not in skip]


def train_overrides(items: list[str]) -> dict[str, str]:
    """``--set`` items as {key: value}; ConfigError for items that are not KEY=VALUE, or a key twice.
    Whether a key is a train key, and its value good, is train's to say (before anything loads)."""

    overrides, problems = {}, []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not TRAIN_KEY.fullmatch(key):
            problems.append(
                f"--set {item!r}: give KEY=VALUE with a train config key, e.g. --set max_steps=20"
            )
        elif key == "config":
            problems.append("--set config=...: the train YAML is given as --config FILE")
        elif key in overrides:
            problems.append(f"--set {key} given twice ({overrides[key]!r}, {value!r}); keep one")
        else:
            overrides[key] = value
    if problems:
        raise ConfigError(problems)
    return overrides


def train_flags(overrides: dict[str, str]) -> list[str]:
    """The overrides as train flags; ``--KEY=VALUE`` when VALUE starts with '-' (argparse would take
    it for a flag)."""
    flags: list[str] = []
    for key, value in overrides.items():
        flags += [f"--{key}={value}"] if value.startswith("-") else [f"--{key}", value]
    return flags


def read_train_yaml(path: str) -> dict[str, Any]:
    """The train YAML's top-level mapping, read the way `airoad train` reads it (same one-line
    errors: no such file, not UTF-8, invalid YAML, not a mapping). Its keys are train's to check."""

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--config {p}: is a directory; give the train YAML file")
    if not p.is_file():
        raise ConfigError(f"--config {p}: no such file; check the path")
    return read_yaml_mapping(p)[0]


def run_output_dir(data: dict[str, Any], overrides: dict[str, str]) -> Path:
    """output_dir as train will resolve it: the override, else the YAML's, else the schema default.
    A value train will refuse (not a string) falls back to the default: train's error comes first."""

    default = next(f.default for f in dataclasses.fields(RunKeys) if f.name == "output_dir")
    value = overrides.get("output_dir", data.get("output_dir"))
    if isinstance(value, str) and not value.strip():
        raise ConfigError(
            "output_dir '' is empty; give the run's directory (--set output_dir=outputs/my_run)"
        )
    return Path(value if isinstance(value, str) and value else default).expanduser()


def foreign_probe_files(out: Path, names: list[str]) -> list[str]:
    """One line if output_dir holds one of ``names`` that airoad did not write (not in its manifest):
    the probe would replace a user's file."""

    if not out.is_dir():
        return []
    mine = recorded(out)
    theirs = [n for n in names if (out / n).exists() or (out / n).is_symlink()]
    theirs = [n for n in theirs if n not in mine]
    if not theirs:
        return []
    return [
        f"output_dir {out}: holds {', '.join(theirs)}, which airoad did not write and the probe would "
        "replace; move it away, or choose another output_dir (--set output_dir=DIR)"
    ]


def make_plan(cfg: ProbeConfig, argv: list[str]) -> Plan:
    """Check everything the probe can check before training; UserError (one line per problem)
    otherwise. ``argv``: the probe's arguments as typed (the report's first command). Reads the
    YAML and the prompt files; writes nothing."""

    problems: list[str] = []
    try:
        overrides = train_overrides(cfg.set)
        out = run_output_dir(read_train_yaml(cfg.config), overrides)
    except UserError as e:
        problems, overrides, out = e.problems, {}, None
    for path, n in ((cfg.prompts, cfg.n), (cfg.general_prompts, cfg.general_n)):
        if path:
            problems += problems_of(load_prompts, path, n, cfg.seed)  # now, not after training
    train_argv = ["train", "--config", cfg.config, *train_flags(overrides)]
    plan = Plan(cfg, list(argv), train_argv, out or Path())
    if out is not None:
        problems += foreign_probe_files(out, plan.writes())
    if problems:
        raise UserError(problems)
    return plan


def generation_flags(cfg: ProbeConfig) -> list[str]:
    """The decoding options that differ from compare's and eval's defaults (the same dataclass), and
    the seed: the flags that make those commands decode as the probe asked."""

    names = [f.name for f in dataclasses.fields(Generation)] + ["seed"]
    defaults = {f.name: default_of(f) for f in dataclasses.fields(GenerateOptions)}
    flags: list[str] = []
    for name in names:
        value = getattr(cfg, name)
        if value != defaults[name]:
            flags += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def step_argvs(plan: Plan, where: Callable[[str], str]) -> dict[str, list[str]]:
    """Steps 2-4 as `airoad` argv; ``where(name)`` is the path each report goes to (the probe's
    temporary folder when it runs them, a folder beside the run dir in the report's commands)."""
    cfg, adapters = plan.cfg, str(plan.out)
    gen = generation_flags(cfg)
    prompts = ["--prompts", cfg.prompts] if cfg.prompts else []  # unset: the run's own dev set
    steps = {
        "compare": ["compare", "--adapters", adapters, *prompts, "--n", str(cfg.compare_n)],
        "eval": ["eval", "--adapters", adapters, *prompts, "--n", str(cfg.n)],
    }
    steps["compare"] += [*gen, "--out", where("compare")]
    steps["eval"] += [*(["--expect", cfg.expect] if cfg.expect else []), *gen, "--out", where("eval.json")]
    if cfg.general_prompts:
        steps["eval_general"] = [
            *["eval", "--adapters", adapters, "--prompts", cfg.general_prompts, "--n", str(cfg.general_n)],
            *[*gen, "--out", where("eval_general.json")],
        ]
    return steps


def run_step(name: str, argv: list[str], printer: Callable[[str], None]) -> None:
    """Run one `airoad` command in this process; StepFailed when it exits non-zero."""

    printer(f"\nprobe: {name}: {command_line(argv)}")
    status = airoad(argv)
    gc.collect()  # the step's model is garbage now: free it before the next step loads one
    if status != 0:
        raise StepFailed(name, status)


def command_line(argv: list[str]) -> str:
    return shlex.join(["airoad", *argv])


def read_run(out: Path) -> dict[str, Any]:
    """What train wrote that the report shows: run_config.yaml, run_info.json, time_metrics.json and
    train_log.json (a missing or damaged one reads as empty: the page says what it lacks)."""

    def load(name: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse((out / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            return None

    return {
        "run_config": load("run_config.yaml", yaml.safe_load) or {},
        "run_info": load("run_info.json", json.loads) or {},
        "timing": load("time_metrics.json", json.loads) or {},
        "rows": load("train_log.json", json.loads) or [],
    }


def finish(plan: Plan, printer: Callable[[str], None]) -> Path:
    """Steps 2-4 into a temporary folder, then the page, then every file into output_dir under the
    output_dir lock (:func:`install`); returns the report path."""

    out = plan.out
    if not (out / "adapter_model.safetensors").is_file():
        raise UserError(f"output_dir {out}: train wrote no adapter there; nothing to compare")
    acquire_lock(out, "output_dir")
    try:
        with tempfile.TemporaryDirectory(prefix="airoad-probe-") as tmp:
            steps = step_argvs(plan, lambda name: str(Path(tmp) / name))
            for name, argv in steps.items():
                run_step(name, argv, printer)
            reports = {n: json.loads((Path(tmp) / REPORTS[n]).read_text(encoding="utf-8")) for n in steps}
            # the page's commands write beside the run dir: a report may not lie inside its --adapters
            shown = step_argvs(plan, lambda name: str(out.parent / f"{out.name}_probe" / name))
            page = render(
                ReportInputs(
                    out=str(out),
                    **read_run(out),
                    compare=reports["compare"],
                    dev=reports["eval"],
                    general=reports.get("eval_general"),
                    commands=commands(plan, shown),
                    files=plan.writes(),
                )
            )
            install(out, plan.writes(), Path(tmp), page)
    finally:
        release_lock(out)
    return out / REPORT


def install(out: Path, names: list[str], tmp: Path, page: str) -> None:
    """``names`` into output_dir: recorded in its manifest first (a later ``--overwrite`` knows them
    as airoad's, even if this is killed half-way), then each written atomically; probe files of an
    earlier probe that this one does not write (e.g. a general eval) are removed, being airoad's."""

    stale = [n for n in PROBE_FILES if n not in names and n in recorded(out)]
    record(out, names)
    for name in stale:
        (out / name).unlink(missing_ok=True)
    for name in names:
        text = page if name == REPORT else (tmp / PROBE_FILES[name]).read_text(encoding="utf-8")
        write_text(out / name, text)


def commands(plan: Plan, shown: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(what it does, the command) for the page: the probe itself, then each step as it ran (reports
    beside the run dir: a report may not be written inside its own --adapters)."""
    what = {
        "compare": f"side-by-side answers ({plan.cfg.compare_n} prompts)",
        "eval": f"style scores and drift on the dev prompts ({plan.cfg.n or 'all'})",
        "eval_general": f"style scores and drift on the general prompts ({plan.cfg.general_n or 'all'})",
    }
    rows = [
        (
            "everything again (needs an empty output_dir, or add --set overwrite=true)",
            command_line(["probe", *plan.argv]),
        ),
        ("1. train (into another dir: add --output_dir DIR)", command_line(plan.train_argv)),
    ]
    rows += [
        (f"{k}. {what[name]}", command_line(argv)) for k, (name, argv) in enumerate(shown.items(), start=2)
    ]
    return rows


def run(cfg: ProbeConfig, inv: Any) -> int:
    """The whole probe, as the core runs it; returns the exit status (a failed step's own, 0 when
    the page is written). User mistakes raise UserError before anything trains."""
    plan = make_plan(cfg, inv.argv)
    printer = inv.printer
    printer(f"probe: run dir {plan.out}; writes {', '.join(plan.writes())} there")
    try:
        run_step("train", plan.train_argv, printer)
        report = finish(plan, printer)
    except StepFailed as e:
        printer(f"probe: stopped ({e}); no {REPORT} written")
        return e.status
    printer(f"\nprobe: wrote {report} (and {', '.join(n for n in plan.writes() if n != REPORT)})")
    return 0
