"""`airoad serve` against `transformers serve` on the same model and prompt; and what the KV cache
saves on the second turn of a chat.

    python bench/serve_bench.py [--model ~/.cache/airoad/real-qwen2.5-0.5b] [--repeat 5] [--max_tokens 128]

Each server is started on a free loopback port with the model alone (no adapter: transformers
serve takes none), both in the precision they pick by default, and asked the same streamed,
greedy question ``--repeat`` times after one warm-up. Time to first token (TTFT) is from sending
the request to the first content chunk; tokens/s is the answer's tokens (re-tokenized with the
model's tokenizer, the same count for both) over the time from the first to the last chunk.

Second turn: the same two-turn chat (a question, its answer, a follow-up) sent after its first
turn (warm: the first turn's keys and values are cached) and after an unrelated request (cold: the
cache holds only the shared system turn); TTFT of each, on each server. Prints a Markdown table
with the machine, CPU flags and precisions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

QUESTION = "Explain in a few sentences why the sky is blue."
FOLLOW_UP = "Now say the same for a sunset, in two sentences."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{argv[0]} exited:\n{log.read_text()[-2000:]}") from None
            time.sleep(1)
    proc.kill()
    raise SystemExit(f"{' '.join(argv)} did not answer /health in 300 s")


def ask(port: int, model: str, messages: list[dict], max_tokens: int) -> tuple[float, float, str]:
    """(ttft s, seconds first->last chunk, text) of one streamed greedy request."""
    body = json.dumps({"model": model, "messages": messages, "stream": True, "max_tokens": max_tokens,
                       "temperature": 0}).encode()  # fmt: skip
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", body, {"Content-Type": "application/json"}
    )
    t0 = time.perf_counter()
    first = last = None
    text = []
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                now = time.perf_counter()
                first = first or now
                last = now
                text.append(delta)
    return (first or t0) - t0, (last or t0) - (first or t0), "".join(text)


def measure(port: int, model: str, tokenizer, args) -> dict:
    msgs = [{"role": "user", "content": QUESTION}]
    ask(port, model, msgs, 8)  # warm-up
    ttfts, rates, answer = [], [], ""
    for _ in range(args.repeat):
        ttft, span, answer = ask(port, model, msgs, args.max_tokens)
        n = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
        ttfts.append(ttft)
        rates.append((n - 1) / span if span > 0 else float("nan"))
    two = [*msgs, {"role": "assistant", "content": answer}, {"role": "user", "content": FOLLOW_UP}]
    ask(port, model, msgs, args.max_tokens)  # the first turn, as a chat client sends it
    warm = ask(port, model, two, 1)[0]
    ask(port, model, [{"role": "user", "content": "Name a colour."}], 1)  # an unrelated request
    cold = ask(port, model, two, 1)[0]
    prompt_tokens = len(tokenizer.apply_chat_template(two, tokenize=True, add_generation_prompt=True))
    return {"ttft": statistics.median(ttfts), "tok_s": statistics.median(rates), "answer": answer,
            "turn2_warm": warm, "turn2_cold": cold, "turn2_tokens": prompt_tokens}  # fmt: skip


def cpu_flags() -> str:
    flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split()
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(Path.home() / ".cache/airoad/real-qwen2.5-0.5b"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--max_tokens", type=int, default=128)
    ap.add_argument("--work", default="/tmp/airoad_serve_bench")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from airoad.core.model.devices import pick_dtype

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    servers = {
        "airoad serve": (["airoad", "serve", "--base_model", args.model], "base", str(pick_dtype("cpu", "auto")).replace("torch.", "")),
        "transformers serve": (["transformers", "serve", args.model, "--host", "127.0.0.1"], args.model, "auto (the weights': bfloat16)"),
    }  # fmt: skip
    rows = {}
    for name, (argv, model, dtype) in servers.items():
        port = free_port()
        proc = start([*argv, "--port", str(port)], port, work / f"{name.split()[0]}.log")
        try:
            rows[name] = {**measure(port, model, tokenizer, args), "dtype": dtype}
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    same = rows["airoad serve"]["answer"] == rows["transformers serve"]["answer"]
    cpu = platform.processor() or "cpu"
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, CPU flags: {cpu_flags()} ({cpu}); model {args.model}"
    )
    print(f"Command: `python bench/serve_bench.py --repeat {args.repeat} --max_tokens {args.max_tokens}`; "
          f"greedy answers identical: {same}\n")  # fmt: skip
    print(
        "| server | precision | TTFT s (median) | tokens/s (median) | x transformers | turn 2 TTFT warm s | turn 2 TTFT cold s | turn 2 prompt tokens |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ref = rows["transformers serve"]["tok_s"]
    for name, r in rows.items():
        print(f"| {name} | {r['dtype']} | {r['ttft']:.2f} | {r['tok_s']:.1f} | {r['tok_s'] / ref:.2f} | "
              f"{r['turn2_warm']:.2f} | {r['turn2_cold']:.2f} | {r['turn2_tokens']} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
