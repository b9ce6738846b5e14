"""Typed config schemas: defaults < YAML < command-line flags, every problem reported at once.

A command declares its options once, as a dataclass whose fields carry ``help`` (and optionally
``choices``, ``min``/``max`` bounds, ``gt`` for strict lower bounds) in their metadata::

    @dataclass
    class MyConfig:
        lr: float = opt(2e-4, "Peak learning rate.", gt=0)

``load_config(MyConfig, argv)`` reads ``--config FILE`` (YAML), then ``--<field> VALUE`` flags,
coerces every value through the field's type (PyYAML reads ``1e-5`` as a string; we make it a
float), checks bounds and choices, and raises :class:`ConfigError` listing *all* problems, each as
one line naming the file:line or flag, the bad value and the fix. Nothing here imports torch.

Two field shapes get special flags: a ``bool`` field also works as a bare flag (``--shuffle`` means
``--shuffle true``), and a ``list[str]`` (or list of another scalar) field takes one or more values
(``--inputs a.jsonl:3 b.jsonl:1``; in YAML a list, or one scalar meaning a one-item list).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from airoad.core.base.errors import UserError
from airoad.core.base.io import read_utf8

T = TypeVar("T")


class ConfigError(UserError):
    """A user mistake in a config file or flags. ``problems`` holds one line per mistake."""


# Numbers as a user types them: ASCII digits only (Python's int() also takes '²', '٣' and '1_0').
INT_TEXT = re.compile(r"[+-]?[0-9]+")
# nan and inf parse, to be refused by name ("must be a finite number")
FLOAT_TEXT = re.compile(
    r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|nan|inf|infinity)", re.IGNORECASE
)
MAX_INT = 2**63 - 1  # what torch, numpy and the HF Trainer take as an integer
SEED_MAX = 2**32 - 1  # numpy's seed range (HF set_seed seeds numpy too)


SEED_DEFAULT = 42  # every command's seed, unless the user gives one


def seed_opt(help: str) -> Any:
    """The seed option: an integer in numpy's range [0, 2**32 - 1], 42 unless given."""
    return opt(SEED_DEFAULT, help, min=0, max=SEED_MAX)


ALL = 0  # a count option's "every one"


def count_opt(what: str, default: int = ALL, why: str = "") -> Any:
    """The ``--n`` option of every command that reads a subset: a seeded (``--seed``) random
    subset of ``what``, kept in file order; every one unless a command has a reason (``why``)."""
    return opt(
        default, f"Use a seeded random subset of this many {what}, in file order (0 = all).{why}", min=0
    )


OVERWRITE_HELP = (
    "Replace an existing output: the file named as the output, or in an output directory only what "
    "airoad wrote there (its manifest; anything else there is refused). Inputs are never written."
)


def overwrite_opt() -> Any:
    """The ``overwrite`` option, one meaning for every command (:data:`OVERWRITE_HELP`)."""
    return opt(False, OVERWRITE_HELP)


def opt(default: Any, help: str, **checks: Any) -> Any:
    """Declare a config option: its default, its help text, and optional checks.

    checks: ``choices`` (sequence), ``min``/``max`` (inclusive), ``gt`` (exclusive lower bound); on a
    list field they apply to every item. ``metavar`` names the value in --help. ``required``: what
    to give when the option is missing (unset, None), e.g. "the JSONL file to write"; --help marks it
    required and a run without it is refused with that text. ``io`` declares a
    path's role for the command runner (:data:`IO_ROLES`: an input file or dir, the base model, an
    adapter dir, an output file, a staged output dir, a training run's dir). A mutable default
    (a list) is copied for each instance.
    """
    metadata = {"help": help, **checks}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


IO_ROLES = ("input", "base", "adapters", "out_file", "out_dir", "run_dir")
# how --help names the value of a path option, by its role
IO_METAVARS = {
    "input": "PATH",
    "base": "MODEL",
    "adapters": "RUN_DIR",
    "out_file": "FILE",
    "out_dir": "DIR",
    "run_dir": "DIR",
}


def input_keys(schema: Any) -> list[str]:
    """The keys of ``schema`` (a class or an instance) naming paths a command reads (``io`` input,
    base or adapters in the field's metadata)."""
    return [
        f.name for f in dataclasses.fields(schema) if f.metadata.get("io") in ("input", "base", "adapters")
    ]


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value, whether declared as ``default`` or ``default_factory``."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


# The words every command uses for the model it reads (--base_model) and a tune (--adapters, and
# pref's --init_adapter: the same forms, another role).
BASE_HELP = (
    "Base model (hub id or local dir). Optional with --adapters: read from the adapter dir's "
    "run_config.yaml (base_model), else adapter_config.json (base_model_name_or_path)."
)
ADAPTERS_HELP = (
    "A run's output_dir or any PEFT adapter dir (adapter_config.json + adapter_model.safetensors)."
)

# One name per concept across every command, declared here once: {old spelling: its name now}. A
# schema with a field named by a value accepts the old spelling too (flag or YAML key), and the
# run prints the name to use (alias_notes), so nothing a user wrote breaks.
ALIASES = {
    "base": "base_model",  # merge, compare, eval, export, data pairs took --base
    "infile": "dataset_path",  # data stats, markdown-slice and pairs took --infile
    "limit": "n",  # markdown-slice took --limit
}


def canonical_flags(argv: list[str], names: set[str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` with each old spelling (``--base``, ``--base=X``) of an option in ``names``
    rewritten to its name now; and {name: the flag as typed} for those rewritten."""
    out, used = [], {}
    for tok in argv:
        flag, eq, value = tok.partition("=")
        new = ALIASES.get(flag[2:]) if flag.startswith("--") else None
        if new in names:
            used[new] = flag
            tok = f"--{new}{eq}{value}"
        out.append(tok)
    return out, used


def alias_notes(sources: dict[str, str]) -> list[str]:
    """One line per option given by an old spelling (as load_config records it in ``sources``)."""
    notes = []
    for key, where in sources.items():
        if where.startswith("--") and where != f"--{key}":
            notes.append(f"note: {where} is now --{key} (both work)")
        elif where.endswith("`)") and " (as `" in where:
            place, old = where[:-2].split(" (as `")
            notes.append(f"note: {place}: `{old}` is now `{key}` (both work)")
    return notes


def default_text(f: dataclasses.Field) -> str:
    """How --help shows a field's default, as a user would type it in a YAML file or on the
    command line (no Python reprs): "required", "default: unset", true/false, a list space-joined."""
    if "required" in f.metadata:
        return "required"
    value = default_of(f)
    if value is None:
        return "default: unset"
    if isinstance(value, bool):
        return f"default: {'true' if value else 'false'}"
    if isinstance(value, list):
        return f"default: {' '.join(map(str, value))}" if value else "default: none"
    if value == "":
        return 'default: ""'
    return f"default: {value}"


def missing_required(schema: type, values: dict[str, Any], given: Iterable[str] = ()) -> list[str]:
    """One line per ``required`` option left unset. ``given``: keys the user set, whose bad values
    (absent from ``values``) are reported as such, not as missing."""
    refused = set(given) - set(values)
    return [
        f"--{f.name} is required; give {f.metadata['required']}"
        for f in dataclasses.fields(schema)
        if "required" in f.metadata
        and f.name not in refused
        and values.get(f.name, default_of(f)) in (None, [])
    ]


def closest(name: str, valid: list[str]) -> str | None:
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return match[0] if match else None


def _base_type(tp: Any) -> tuple[type, bool]:
    """Return (scalar type, optional?) for annotations like ``int``, ``str | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def list_item_type(tp: Any) -> Any | None:
    """The item type of a ``list[X]`` annotation (``list[X] | None`` too), or None for scalars."""
    base, _ = _base_type(tp)
    if typing.get_origin(base) is list:
        args = typing.get_args(base)
        return args[0] if args else str
    return None


def coerce(value: Any, tp: Any) -> Any:
    """Coerce ``value`` (from YAML or a flag string) to the annotation ``tp``; ValueError if impossible.

    A list annotation takes a list (each item coerced) or a single scalar (a one-item list).
    """
    base, optional = _base_type(tp)
    item = list_item_type(tp)
    if item is not None and value is not None and not (optional and _is_none_word(value)):
        values = value if isinstance(value, (list, tuple)) else [value]
        out = []
        for i, v in enumerate(values, start=1):
            try:
                out.append(coerce(v, item))
            except ValueError as e:
                raise ValueError(f"item {i} ({v!r}) {e}") from None
        return out
    if value is None or (optional and _is_none_word(value)):
        if optional:
            return None
        raise ValueError(f"must be a {base.__name__}, not empty")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError("must be true or false")
    if base is int:
        if isinstance(value, bool):
            raise ValueError("must be an integer, not a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and INT_TEXT.fullmatch(value.strip()):
            return int(value.strip())
        raise ValueError("must be an integer")
    if base is float:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
            return float(value.strip())
        raise ValueError("must be a number (e.g. 2e-4)")
    if base is str:
        if isinstance(value, (dict, list)):
            raise ValueError("must be a string")
        return str(value)
    raise TypeError(f"unsupported option type {tp!r}")


def _is_none_word(value: Any) -> bool:
    return isinstance(value, str) and value.lower() in ("none", "null", "~")


def _check(field: dataclasses.Field, value: Any) -> str | None:
    """Return a problem description for a coerced value, or None if it is acceptable."""
    if value is None:
        return None
    if isinstance(value, list):
        for i, v in enumerate(value, start=1):
            bad = _check(field, v)
            if bad:
                return f"item {i} ({v!r}) {bad}"
        return None
    meta = field.metadata
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return f"is out of range (|value| <= {MAX_INT})"
    if "choices" in meta and value not in meta["choices"]:
        return f"must be one of {', '.join(map(str, meta['choices']))}"
    if "gt" in meta and not value > meta["gt"]:
        return f"must be > {meta['gt']}"
    if "min" in meta and value < meta["min"]:
        return f"must be >= {meta['min']}"
    if "max" in meta and value > meta["max"]:
        return f"must be <= {meta['max']}"
    return None


def read_yaml_mapping(path: Path, what: str = "config") -> tuple[dict[str, Any], dict[str, int]]:
    """Safe-load a YAML mapping and the 1-based line of each top-level key. ConfigError (one line
    each) for an unreadable or non-UTF-8 file, bad syntax, a non-mapping, or a key given twice
    (PyYAML silently keeps the last one)."""

    try:
        text, not_utf8 = read_utf8(path, what)
    except OSError as e:
        raise ConfigError([f"{path}: cannot be read ({e.strerror}); check the path"]) from None
    if not_utf8:
        raise ConfigError([not_utf8])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError([f"{path}: invalid YAML (nested too deeply); fix the syntax"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML ({getattr(e, 'problem', e)}); fix the syntax"]) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict) or node is None or not hasattr(node, "value"):
        raise ConfigError([f"{path}:1: the config must be a mapping of `key: value` lines"])
    lines: dict[str, int] = {}
    problems = []
    for k, _ in node.value:
        if not hasattr(k, "value"):
            continue
        line = k.start_mark.line + 1
        if k.value in lines:
            problems.append(
                f"{path}:{line}: key `{k.value}` is given twice (first on line {lines[k.value]}); keep one"
            )
        else:
            lines[k.value] = line
    if problems:
        raise ConfigError(problems)
    return data, lines


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as ConfigError (one line, no usage dump) instead of exiting."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError([f"{message}; see `{self.prog} --help`"])


def field_types(schema: type) -> dict[str, Any]:
    """Resolved annotations (schemas use `from __future__ import annotations`, so Field.type is a string)."""
    return typing.get_type_hints(schema)


def owns_config(schema: type) -> bool:
    """Whether ``schema`` declares ``config`` itself (the probe: the train YAML it runs), so that
    ``--config`` is that option and not the YAML of this command's own options."""
    return any(f.name == "config" for f in dataclasses.fields(schema))


def _build_parser(schema: type, prog: str, description: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=description, allow_abbrev=False)
    if not owns_config(schema):
        parser.add_argument("--config", metavar="FILE", help="YAML config; flags override its values.")
    types_ = field_types(schema)
    # required options first: --help and the usage line open with what must be given
    for f in sorted(dataclasses.fields(schema), key=lambda f: "required" not in f.metadata):
        base, _ = _base_type(types_[f.name])
        item = list_item_type(types_[f.name])
        meta = f.metadata
        extra = f" One of: {', '.join(map(str, meta['choices']))}." if "choices" in meta else ""
        shape: dict[str, Any] = {"metavar": IO_METAVARS.get(meta.get("io"), base.__name__.upper())}
        if item is not None:  # repeated flags add up: --set a=1 --set b=2 is --set a=1 b=2
            shape = {"metavar": item.__name__.upper(), "nargs": "+", "action": "extend"}
        elif base is bool:
            # a bare `--flag` means true; `--flag false` still works
            shape = {"metavar": "BOOL", "nargs": "?", "const": "true"}
        if "metavar" in meta:
            shape["metavar"] = meta["metavar"]
        parser.add_argument(
            f"--{f.name}",
            default=argparse.SUPPRESS,
            # argparse %-formats help: a literal % (e.g. "~30% slower") must be doubled
            help=f"{meta.get('help', '')}{extra} ({default_text(f)})".replace("%", "%%"),
            **shape,
        )
    return parser


def load_config(
    schema: type[T],
    argv: list[str],
    prog: str = "airoad",
    description: str = "",
) -> tuple[T, dict[str, str]]:
    """Parse ``argv`` into an instance of ``schema``.

    Returns (config, sources) where ``sources[field]`` says where a value came from
    ("default", "FILE:LINE" or "--flag"). Raises ConfigError listing every problem.
    """
    fields = {f.name: f for f in dataclasses.fields(schema)}
    if bad := not_utf8_arguments(argv):
        raise ConfigError(bad)
    parser = _build_parser(schema, prog, description)
    argv, typed = canonical_flags(argv, set(fields))
    known, unknown = parser.parse_known_args(argv)
    problems = _unknown_flags(unknown, list(fields), prog)
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {name: "default" for name in fields}
    options_yaml = None if owns_config(schema) else vars(known).pop("config", None)
    if options_yaml:
        problems += _read_yaml_values(Path(options_yaml), list(fields), raw, sources)
    for key, value in vars(known).items():
        raw[key], sources[key] = value, typed.get(key, f"--{key}")
    values = _checked_values(schema, raw, sources, problems)
    missing = missing_required(schema, values, raw)
    if problems:
        raise ConfigError(problems + missing)
    cfg = schema(**values)
    post = getattr(cfg, "validate", None)
    cross = post() if post is not None else []  # the values are well-formed: cross-checks apply
    if missing or cross:
        raise ConfigError(missing + cross)
    return cfg, sources


def not_utf8_arguments(argv: list[str]) -> list[str]:
    """One line per argument that holds bytes which are not UTF-8 (Python keeps them as lone
    surrogates; printing or writing them fails later, after the work is done)."""
    problems = []
    for i, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            flag = arg.split("=", 1)[0] if arg.startswith("--") else (argv[i - 1] if i else "argument")
            shown = arg.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            problems.append(f"{flag}: {shown!r} holds bytes that are not UTF-8 text; type it as UTF-8")
    return problems


def _unknown_flags(unknown: list[str], names: list[str], prog: str) -> list[str]:
    """One line per flag argparse did not know (with the closest name) or stray argument."""
    problems, i = [], 0
    while i < len(unknown):
        tok = unknown[i]
        if tok.startswith("--"):
            name = tok[2:].split("=", 1)[0]
            hint = closest(name.replace("-", "_"), names)
            fix = f"; did you mean --{hint}?" if hint else f"; see `{prog} --help`"
            problems.append(f"unknown flag --{name}{fix}")
            if "=" not in tok and i + 1 < len(unknown) and not unknown[i + 1].startswith("--"):
                i += 1  # its value
        else:
            problems.append(f"unexpected argument {tok!r}; options are given as --<name> VALUE")
        i += 1
    return problems


def _read_yaml_values(
    path: Path, names: list[str], raw: dict[str, Any], sources: dict[str, str]
) -> list[str]:
    """The YAML file's known keys into ``raw`` (``sources``: FILE:LINE); a line per unknown key."""
    if not path.is_file():
        raise ConfigError([f"--config {path}: no such file; check the path"])
    data, lines = read_yaml_mapping(path)
    problems = []
    for key, value in data.items():
        where = f"{path}:{lines.get(key, 1)}"
        if ALIASES.get(key) in names and ALIASES[key] not in data:
            key, where = ALIASES[key], f"{where} (as `{key}`)"
        if key not in names:
            hint = closest(str(key), names)
            fix = f"did you mean `{hint}`?" if hint else "remove it"
            problems.append(f"{where}: unknown key `{key}`; {fix}")
            continue
        raw[key], sources[key] = value, where
    return problems


def _checked_values(
    schema: type, raw: dict[str, Any], sources: dict[str, str], problems: list[str]
) -> dict[str, Any]:
    """``raw`` coerced to the schema's types and checked against each option's bounds; a line in
    ``problems`` (naming FILE:LINE or the flag) per bad value."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    types_ = field_types(schema)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = sources[key]
        label = where if where.startswith("--") else f"{where}: `{key}`"
        try:
            coerced = coerce(value, types_[key])
        except ValueError as e:
            problems.append(f"{label} = {value!r} {e}")
            continue
        bad = _check(fields[key], coerced)
        if bad:
            problems.append(f"{label} = {coerced!r} {bad}")
            continue
        values[key] = coerced
    return values
