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
        "trl_bf16,lora,lora_kl_cache",  # TRL in its default precision; the fp32 anchor is a flag away
        "--repeat",
        "1",  # a repeat is one more worker process: pooling is tested on its own below
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
    assert set(table) == {"variant", "trl_bf16", "lora", "lora_kl_cache"}
    assert table["trl_bf16"][2].strip() == table["trl_bf16"][4].strip() == "1.00"  # the anchor
    assert table["trl_bf16"][-1].strip() == "bf16"
    from airoad.core.model.devices import cpu_has_bf16

    assert table["lora"][-1].strip() == ("bf16" if cpu_has_bf16() else "fp32")  # dtype auto's pick
    assert "CPU: " in text and "flags: " in text
    assert table["lora"][0].strip() == "2"
    assert table["lora_kl_cache"][0].strip() == "4"
    for name in ("trl_bf16", "lora", "lora_kl_cache"):
        tps = float(table[name][1].split()[0])
        assert tps > 0 and float(table[name][3]) > 0  # tokens/s, peak RSS


def bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train", REPO / "bench/bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repeated_variants_run_after_the_others_and_their_runs_are_pooled():
    bench = bench_module()
    assert bench.run_order("trl,lora,lora_kl_cache", "lora,absent", 3) == [
        "trl", "lora", "lora_kl_cache", "lora", "lora",
    ]  # fmt: skip
    assert bench.run_order("trl,lora", "lora", 1) == ["trl", "lora"]
    run = {
        "tokens": 100,
        "train_s": 10.0,
        "steps": 2,
        "peak_rss_gb": 1.0,
        "losses": [2.0, 1.5],
        "precision": "fp32",
    }
    slow = {**run, "tokens": 100, "train_s": 40.0, "peak_rss_gb": 3.0, "losses": [9.0, 9.0]}
    pooled = bench.combine([run, {"error": "killed"}, slow])
    # tokens/s pooled over the runs (200 tokens in 50 s), not the mean of 10 and 2.5
    assert (pooled["tokens"], pooled["train_s"]) == (200, 50.0) and pooled["runs_tps"] == [10.0, 2.5]
    assert pooled["peak_rss_gb"] == 2.0 and pooled["losses"] == [2.0, 1.5]  # the first run's losses
    assert pooled["train_s_per_step"] == 12.5
    table = bench.table({"trl": {**run, "tokens": 50}, "lora": pooled})
    lora = next(line for line in table.splitlines() if line.startswith("| lora |")).split("|")
    assert lora[2].strip() == "2 x 2" and lora[3].strip() == "4.0 (10.0, 2.5)" and lora[4].strip() == "0.80"
    assert bench.combine([{"error": "a"}, {"error": "b"}]) == {"error": "a"}


def test_each_figure_is_set_against_the_better_trl_run():
    bench = bench_module()
    run = {"steps": 2, "losses": [2.0, 1.0]}
    results = {
        "trl": {**run, "tokens": 100, "train_s": 10.0, "peak_rss_gb": 2.0, "precision": "fp32"},
        "trl_bf16": {**run, "tokens": 100, "train_s": 5.0, "peak_rss_gb": 4.0, "precision": "bf16"},
        "lora": {**run, "tokens": 100, "train_s": 4.0, "peak_rss_gb": 1.0, "precision": "bf16"},
    }
    text = bench.table(results)
    header = text.splitlines()[0]
    assert "| x trl_bf16 |" in header and "| peak RSS GB | x trl |" in header  # faster one, leaner one
    rows = {line.split("|")[1].strip(): line.split("|") for line in text.splitlines()[2:]}
    assert rows["trl_bf16"][4].strip() == "1.00" and rows["trl"][6].strip() == "1.00"
    assert rows["lora"][4].strip() == "1.25" and rows["lora"][6].strip() == "0.50"
    assert (rows["trl"][-2].strip(), rows["trl_bf16"][-2].strip()) == ("fp32", "bf16")
