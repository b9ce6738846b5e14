"""bench/bench_train.py runs end to end on a tiny model and writes its table between the markers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip(
    "trl", reason="the benchmark's anchor is TRL (not installed, or its datasets dependency is not)"
)


def test_benchmark_runs_every_kind_of_variant_and_keeps_the_prose(tiny_model_dir, tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i}+{i}?"},
                {"role": "assistant", "content": f"{2 * i}."},
            ]
        }
        for i in range(8)
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "BENCH.md"
    out.write_text("# Prose above\n<!-- bench:begin -->\nold table\n<!-- bench:end -->\nProse below\n")
    cmd = [
        sys.executable,
        str(REPO / "bench/bench_train.py"),
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--examples",
        "8",
        "--steps",
        "2",
        "--cache_steps",
        "4",
        "--accum",
        "2",
        "--variants",
        "trl,trl_bf16,lora,lora_kl_cache",
        "--repeat_variants",
        "lora",
        "--out",
        str(out),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# Prose above\n<!-- bench:begin -->\n") and text.endswith(
        "<!-- bench:end -->\nProse below\n"
    )
    assert "old table" not in text and "failed" not in text
    # rows by variant (the cache row's name also says how long its cache took to build)
    assert "lora_kl_cache (cache built in" in text
    table = {
        line.split("|")[1].split()[0]: line.split("|")[2:-1]
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert set(table) == {"variant", "trl", "trl_bf16", "lora", "lora_kl_cache"}
    # each figure is set against the better of the two TRL runs: one of them is 1.00 on it
    assert "1.00" in (table["trl"][2].strip(), table["trl_bf16"][2].strip())
    assert "1.00" in (table["trl"][4].strip(), table["trl_bf16"][4].strip())
    assert (table["trl"][-1].strip(), table["trl_bf16"][-1].strip()) == ("fp32", "bf16")
    from airoad.core.model.devices import cpu_has_bf16

    assert table["lora"][-1].strip() == ("bf16" if cpu_has_bf16() else "fp32")  # dtype auto's pick
    assert "CPU: " in text and "flags: " in text
    assert table["lora"][0].strip() == "2 x 2"  # repeated: two runs of 2 steps, pooled
    assert table["lora_kl_cache"][0].strip() == "4"
    for name in ("trl", "trl_bf16", "lora", "lora_kl_cache"):
        tps = float(table[name][1].split()[0])
        assert tps > 0 and float(table[name][3]) > 0  # tokens/s, peak RSS
