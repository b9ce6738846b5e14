"""`airoad serve` against `transformers serve` on the same model and prompt; and what the KV cache
saves on the second turn of a chat.

    python bench/serve_bench.py [--model ~/.cache/airoad/real-qwen2.5-0.5b] [--repeat 5] [--max_tokens 128]

Both servers are started on free loopback ports with the model alone (no adapter: transformers
serve takes none), each in the precision it picks by default, warmed up, and asked the same
streamed, greedy question ``--repeat`` times, alternating between them one request at a time (so
drift in the machine's speed falls on both). Time to first token (TTFT) is from sending
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


def speed(port: int, model: str, tokenizer, max_tokens: int) -> tuple[float, float, str]:
    """(ttft s, tokens/s after the first token, answer) of one streamed greedy answer to QUESTION."""
    ttft, span, answer = ask(port, model, [{"role": "user", "content": QUESTION}], max_tokens)
    n = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    return ttft, (n - 1) / span if span > 0 else float("nan"), answer


def second_turn(port: int, model: str, answer: str, tokenizer, max_tokens: int) -> dict:
    """TTFT of a chat's second turn sent right after its first (warm) and after an unrelated request
    (cold); the same messages both times."""
    msgs = [{"role": "user", "content": QUESTION}]
    two = [*msgs, {"role": "assistant", "content": answer}, {"role": "user", "content": FOLLOW_UP}]
    ask(port, model, msgs, max_tokens)  # the first turn, as a chat client sends it
    warm = ask(port, model, two, 1)[0]
    ask(port, model, [{"role": "user", "content": "Name a colour."}], 1)  # an unrelated request
    cold = ask(port, model, two, 1)[0]
    text = tokenizer.apply_chat_template(two, tokenize=False, add_generation_prompt=True)
    return {
        "turn2_warm": warm,
        "turn2_cold": cold,
        "turn2_tokens": len(tokenizer(text, add_special_tokens=False)["input_ids"]),
    }


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
    running = {}
    try:
        for name, (argv, model, _) in servers.items():  # both up; one request at a time, alternating
            port = free_port()
            running[name] = (
                start([*argv, "--port", str(port)], port, work / f"{name.split()[0]}.log"),
                port,
                model,
            )
        for _, port, model in running.values():
            ask(port, model, [{"role": "user", "content": QUESTION}], 8)  # warm-up
        runs = {name: [] for name in servers}
        for _ in range(args.repeat):
            for name, (_, port, model) in running.items():
                runs[name].append(speed(port, model, tokenizer, args.max_tokens))
        rows = {}
        for name, (_, port, model) in running.items():
            answer = runs[name][-1][2]
            rows[name] = {
                "ttft": statistics.median(r[0] for r in runs[name]),
                "tok_s": statistics.median(r[1] for r in runs[name]),
                "each": [round(r[1], 1) for r in runs[name]],
                "answer": answer,
                "dtype": servers[name][2],
                **second_turn(port, model, answer, tokenizer, args.max_tokens),
            }
    finally:
        for proc, _, _ in running.values():
            proc.terminate()
            proc.wait(timeout=60)
    a, b = rows["airoad serve"]["answer"], rows["transformers serve"]["answer"]
    shared = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    same = f"{a == b} (the first {shared} characters agree)"
    cpu = platform.processor() or "cpu"
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, CPU flags: {cpu_flags()} ({cpu}); model {args.model}"
    )
    print(f"Command: `python bench/serve_bench.py --repeat {args.repeat} --max_tokens {args.max_tokens}`; "
          f"greedy answers identical: {same}\n")  # fmt: skip
    print(
        "| server | precision | TTFT s (median) | tokens/s (median; each run) | x transformers | turn 2 TTFT warm s | turn 2 TTFT cold s | turn 2 prompt tokens |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ref = rows["transformers serve"]["tok_s"]
    for name, r in rows.items():
        print(f"| {name} | {r['dtype']} | {r['ttft']:.2f} | {r['tok_s']:.1f} ({', '.join(map(str, r['each']))}) | {r['tok_s'] / ref:.2f} | "
              f"{r['turn2_warm']:.2f} | {r['turn2_cold']:.2f} | {r['turn2_tokens']} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
