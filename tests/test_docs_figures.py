"""Every figure README.md and docs/*.md quote from BENCHMARKS.md or another doc equals its current
source, with the source's date and machine beside it: a rerun of a benchmark that changes a number
fails here until the prose follows."""

from __future__ import annotations

import re

from conftest import REPO

BENCH = (REPO / "BENCHMARKS.md").read_text()


def flat(name: str) -> str:
    """A doc's text with line breaks and runs of spaces as one space (prose is wrapped)."""
    return " ".join((REPO / name).read_text().split())


def table(marker: str) -> tuple[dict[str, dict[str, str]], str]:
    """The table between ``<!-- MARKER:begin -->`` and ``:end``: {variant: {column: cell}}, and the
    whole block (its heading holds the date, its CPU line the machine)."""
    block = BENCH.split(f"<!-- {marker}:begin -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not set(cells[0]) <= {"-"}:
            # two columns are named "x trl...": the first is speed, the second memory
            rows[cells[0]] = {
                f"{h}#{header[:i].count(h)}": c for i, (h, c) in enumerate(zip(header, cells, strict=True))
            }
    return rows, block


def tokens_per_s(cell: str) -> float:
    return float(cell.split()[0])  # "106.1 (106.7, 105.5)": the pooled figure


def date_of(block: str) -> str:
    return re.search(r"\d{4}-\d{2}-\d{2}", block).group(0)


def test_the_readme_quotes_the_current_training_table_with_its_date_and_machine():
    rows, block = table("bench")
    lora, lora_d0, dora, kl = rows["lora"], rows["lora_d0"], rows["dora"], rows["lora_kl"]
    text = flat("README.md")
    assert f"airoad LoRA trains at {lora['x trl_bf16#0']}x TRL's tokens/s" in text
    assert f"({lora_d0['x trl_bf16#0']}x at dropout 0" in text
    assert f"in {lora['x trl_bf16#1']}x TRL's peak memory" in text
    # DoRA runs at dropout 0 (its configs): its cost is against LoRA at dropout 0
    dora_cost = tokens_per_s(lora_d0["tokens/s#0"]) / tokens_per_s(dora["tokens/s#0"])
    assert f"DoRA costs {dora_cost:.2f}x LoRA's time per token at the same dropout" in text
    assert f"KL to the base computed online {kl['time/token x airoad LoRA#0']}x" in text
    assert "CPU: AMD EPYC (flags: avx2 avx512f avx512_bf16" in block
    assert f"Its current table ({date_of(block)}; 2-core AMD EPYC with bf16 units, `avx512_bf16`" in text
    recipes = flat("docs/recipes.md")
    assert (
        f"BENCHMARKS.md's current training table has DoRA at {dora_cost:.2f}x LoRA's time per token"
        in recipes
    )
    # docs/teacher_cache.md's "+35-40 %" for the online KL's extra pass
    assert 1.35 <= float(kl["time/token x airoad LoRA#0"]) <= 1.40
    assert "+35-40 % time per step on CPU" in flat("docs/teacher_cache.md")


def test_the_preference_doc_quotes_the_current_dpo_and_orpo_tables():
    dpo, block = table("bench-pref")
    orpo, orpo_block = table("bench-orpo")
    text = flat("docs/preference.md")
    airoad, nogc = dpo["airoad"], dpo["airoad_nogc"]
    assert f"{date_of(block)}; 2-core AMD EPYC with `avx512_bf16`, both in bf16" in text
    assert f"{airoad['x trl#0']}x TRL's pairs/s at {airoad['x trl#1']}x its peak RSS" in text
    faster = float(nogc["pairs/s#0"]) / float(airoad["pairs/s#0"]) - 1
    more = float(nogc["peak RSS GB#0"]) - float(airoad["peak RSS GB#0"])
    assert (
        f"`--gradient_checkpointing false` is {faster:.0%} faster again, at {more:.2f} GB more"
        in text.replace(" %", "%")
    )
    o = orpo["airoad"]
    assert f"{o['x trl#0']}x the pairs/s at {o['x trl#1']}x the peak RSS" in text
    assert f"{o['x trl#0']}x the pairs/s at {o['x trl#1']}x the peak RSS" in " ".join(BENCH.split())
    assert date_of(orpo_block) == date_of(block)  # "same machine and precision"


def test_the_readme_quotes_the_teacher_caches_measured_error():
    text = (REPO / "docs/teacher_cache.md").read_text()
    ratio = float(re.search(r"\| 64 \(default\) \| ([0-9.]+) \|", text).group(1))
    assert f"({(1 - ratio) * 100:.1f} % of the KL at k = 64 on the real model)" in flat("README.md")


def test_the_readme_quotes_the_serving_table():
    rows, _ = table("bench-serve")
    ours, theirs = rows["airoad serve"], rows["transformers serve"]
    t_ours, t_theirs = float(ours["TTFT s (median)#0"]), float(theirs["TTFT s (median)#0"])
    speed = ours["x transformers#0"]
    warm, cold = float(ours["turn 2 TTFT warm s#0"]), float(ours["turn 2 TTFT cold s#0"])
    text = flat("README.md")
    assert f"the first token {t_theirs / t_ours:.1f}x sooner ({t_ours:.2f} against {t_theirs:.2f} s)" in text
    rate = f"{tokens_per_s(ours['tokens/s (median; each run)#0'])} against {tokens_per_s(theirs['tokens/s (median; each run)#0'])} tokens/s"
    assert f"({speed}x, {rate})" in text
    assert (
        f"{cold / warm:.1f}x sooner with its history served from the cache ({warm:.2f} against {cold:.2f} s;"
        in text
    )
    assert f"recomputes it: {float(theirs['turn 2 TTFT warm s#0']):.2f} s)" in text
