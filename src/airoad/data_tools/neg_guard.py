"""`airoad data neg-guard`: a small ChatML set that baits chat-format artifacts and answers cleanly.

    airoad data neg-guard --out data/sft/x_neg.jsonl [--n 40] [--banned FILE] [--seed 42]

Draws ``n`` distinct pairs (seeded) from the hand-written bank in
:mod:`airoad.data_tools.neg_guard_bank`. Prompts contain role tags and template tokens on
purpose; answers contain no banned string of :data:`airoad.core.data.text_checks.DEFAULT_BANNED`, nor of
``--banned FILE`` when given (pairs whose answers hit that list are left out). Asking for more
rows than there are clean pairs is an error: repeating or recombining pairs would only make the
set less varied.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from airoad.core.base.errors import UserError
from airoad.core.base.io import write_jsonl
from airoad.core.base.options import opt, overwrite_opt, seed_opt
from airoad.core.data.text_checks import DEFAULT_BANNED, banned_hits, load_banned
from airoad.data_tools.neg_guard_bank import PAIRS


@dataclass
class NegGuardConfig:
    out: str | None = opt(
        None, "Output ChatML JSONL to write.", io="out_file", required="the JSONL file to write"
    )
    n: int = opt(40, f"Rows to draw (distinct prompts; at most {len(PAIRS)}).", min=1)
    banned: str | None = opt(
        None,
        "Text file of extra banned strings (one a line, '#' comments) the answers must avoid too.",
        io="input",
    )
    seed: int = seed_opt("Seed for which pairs are drawn and their order.")
    overwrite: bool = overwrite_opt()


def clean_pairs(banned: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Bank pairs whose answers have no hit of ``banned``. The bank itself never hits DEFAULT_BANNED."""
    dirty = [a for _, a in PAIRS if banned_hits(a, DEFAULT_BANNED)]
    if dirty:  # a bug in the bank, not a user mistake: fail loudly
        raise AssertionError(f"neg-guard bank answer has banned text: {dirty[0][:80]!r}")
    return [(p, a) for p, a in PAIRS if not banned_hits(a, banned)]


def draw(n: int, seed: int, banned: tuple[str, ...] = ()) -> list[dict]:
    """``n`` distinct clean pairs as ChatML rows, drawn and ordered by ``seed``; UserError if too few."""
    pool = clean_pairs(banned)
    if n > len(pool):
        why = f"{len(pool)} of the {len(PAIRS)} built-in pairs avoid the --banned list" if banned else ""
        have = why or f"the bank has {len(PAIRS)} distinct prompts"
        raise UserError(f"--n {n}: {have}; ask for --n {len(pool)} or fewer")
    rows = []
    for prompt, answer in random.Random(seed).sample(pool, n):
        hits = banned_hits(answer, DEFAULT_BANNED + banned)
        if hits:  # clean_pairs guarantees this never happens; checked again on what is written
            raise AssertionError(f"banned {hits} in a neg-guard answer: {answer[:80]!r}")
        rows.append(
            {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}
        )
    return rows


def run(cfg: NegGuardConfig, inv: object = None) -> list[dict]:
    banned = load_banned(cfg.banned) if cfg.banned else ()
    rows = draw(cfg.n, cfg.seed, banned)
    write_jsonl(cfg.out, rows)
    extra = f" and {len(banned)} strings of {cfg.banned}" if banned else ""
    print(
        f"neg-guard: drew {len(rows)} of {len(PAIRS)} pairs (seed {cfg.seed}); answers checked against "
        f"{len(DEFAULT_BANNED)} default banned strings{extra}: 0 hits"
    )
    print(f"wrote {len(rows)} rows to {cfg.out}")
    return rows
