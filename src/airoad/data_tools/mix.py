"""`airoad data mix`: a weighted mixture of several JSONL files, as one ChatML file.

    airoad data mix --inputs a.jsonl:3 b.jsonl:1 c.jsonl:1 --out mix.jsonl --shuffle --seed 42 --dedupe

Weights: an input of weight ``w`` contributes ``floor(w)`` copies of every row plus a seeded
sample (without replacement, file order) of ``round(frac(w) * rows)`` rows, rounding halves up:
weight 3 = every row 3 times, 0.5 = a seeded half, 1.5 = every row once plus a seeded half again.
``PATH`` without ``:WEIGHT`` means weight 1.

``--dedupe`` drops a conversation equal to an earlier one (same roles and contents after
whitespace normalisation; Alpaca rows compare as their ChatML form), across and within inputs,
*before* weighting, so the repeats a weight asks for are kept. Without ``--shuffle`` rows come
input by input, file order, whole copies first; ``--shuffle`` permutes them with ``--seed``.
Every input is validated as for training and all inputs' problems are reported together.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction

from airoad.core.base.errors import UserError
from airoad.core.base.io import write_jsonl
from airoad.core.base.options import opt, overwrite_opt, seed_opt
from airoad.core.data.chat_data import Conversation
from airoad.data_tools.common import chatml_row, conversation_key, read_many


@dataclass
class MixConfig:
    inputs: list[str] = opt(
        [],
        "Input JSONL files as PATH:WEIGHT (weight > 0, integer or fractional; PATH alone = weight 1).",
        metavar="PATH:WEIGHT",
        required="one or more PATH:WEIGHT, e.g. a.jsonl:3 b.jsonl:1",
    )
    out: str | None = opt(
        None, "Output ChatML JSONL to write.", io="out_file", required="the JSONL file to write"
    )
    shuffle: bool = opt(False, "Shuffle the mixed rows (seeded by --seed).")
    seed: int = seed_opt("Seed for fractional-weight samples and the shuffle: same seed, same bytes.")
    dedupe: bool = opt(
        False, "Drop conversations equal to an earlier one (whitespace-normalised), before weighting."
    )
    overwrite: bool = overwrite_opt()


@dataclass
class InputReport:
    path: str
    weight: float
    rows_in: int = 0
    duplicates: int = 0
    rows_out: int = 0


MIN_WEIGHT, MAX_WEIGHT = 1e-3, 1e3  # per input


def parse_input(arg: str) -> tuple[str, float]:
    """``PATH[:WEIGHT]`` -> (path, weight); UserError (one line naming the argument) if malformed."""
    path, sep, text = arg.rpartition(":")
    if not sep:
        return arg, 1.0
    example = f"{path or 'data/a.jsonl'}:2"
    if not path:
        raise UserError(f"--inputs {arg!r}: no path before ':'; write PATH:WEIGHT such as {example}")
    try:
        weight = float(text)
    except ValueError:
        raise UserError(
            f"--inputs {arg!r}: weight {text!r} is not a number; write PATH:WEIGHT such as {example}"
        ) from None
    if not math.isfinite(weight) or weight <= 0:
        raise UserError(
            f"--inputs {arg!r}: weight must be > 0, got {text}; give a positive weight such as {example}"
        )
    if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        # 1e300 would ask for more copies than memory holds; 1e-9 would silently keep no row
        raise UserError(
            f"--inputs {arg!r}: weight {text} is outside [{MIN_WEIGHT:g}, {MAX_WEIGHT:g}]; give a weight such as {example}"
        )
    return path, weight


def weighted(rows: list, weight: float, rng: random.Random) -> list:
    """``floor(weight)`` copies of ``rows``, then a seeded sample of ``round(frac * len(rows))`` of them."""
    exact = Fraction(repr(weight))  # the decimal the user wrote: 2.05 * 10 rows is 20.5, not 20.4999...
    whole = math.floor(exact)
    k = math.floor((exact - whole) * len(rows) + Fraction(1, 2))
    extra = sorted(rng.sample(range(len(rows)), k)) if k else []
    return rows * whole + [rows[i] for i in extra]


def dedupe(files: list[list[Conversation]]) -> tuple[list[list[Conversation]], list[int]]:
    """Each file without conversations seen earlier (in it or a previous file); and the count removed per file."""
    seen: set[str] = set()
    kept, removed = [], []
    for convs in files:
        mine = []
        for c in convs:
            key = conversation_key(c.messages)
            if key not in seen:
                seen.add(key)
                mine.append(c)
        kept.append(mine)
        removed.append(len(convs) - len(mine))
    return kept, removed


def build_mix(cfg: MixConfig) -> tuple[list[dict], list[InputReport]]:
    """(ChatML rows, one report per input). Raises UserError with every problem of every input."""
    specs, problems = [], []
    for arg in cfg.inputs:
        try:
            specs.append(parse_input(arg))
        except UserError as e:
            problems += e.problems
    files, data_problems = read_many([p for p, _ in specs])
    if problems or data_problems:
        raise UserError(problems + data_problems)
    reports = [InputReport(p, w, len(convs)) for (p, w), convs in zip(specs, files, strict=True)]
    removed = [0] * len(files)
    if cfg.dedupe:
        files, removed = dedupe(files)
    rng = random.Random(cfg.seed)
    mixed: list[Conversation] = []
    for report, convs, dup in zip(reports, files, removed, strict=True):
        part = weighted(convs, report.weight, rng)
        report.duplicates, report.rows_out = dup, len(part)
        mixed += part
    if cfg.shuffle:
        rng.shuffle(mixed)
    return [chatml_row(c.messages) for c in mixed], reports


def input_paths(cfg: MixConfig) -> list[tuple[str, str | None]]:
    """The files ``--inputs`` names (PATH of each PATH:WEIGHT), for the core's output check."""
    return [("--inputs", arg.rsplit(":", 1)[0] if ":" in arg else arg) for arg in cfg.inputs] + [
        ("--inputs", arg) for arg in cfg.inputs
    ]


def run(cfg: MixConfig, inv: object = None) -> list[InputReport]:
    rows, reports = build_mix(cfg)
    write_jsonl(cfg.out, rows)
    width = max(len(r.path) for r in reports)
    print("mix:")
    for r in reports:
        dup = f", {r.duplicates} duplicates removed" if cfg.dedupe else ""
        print(f"  {r.path:<{width}}  weight {r.weight:g}: {r.rows_in} rows in{dup}, {r.rows_out} rows out")
    order = f"shuffled with seed {cfg.seed}" if cfg.shuffle else "input order"
    dups = f"; {sum(r.duplicates for r in reports)} duplicates removed before weighting" if cfg.dedupe else ""
    print(f"wrote {len(rows)} rows to {cfg.out} ({order}){dups}")
    return reports
