"""What sharding saves per process: trainable weights, gradients, optimizer state and frozen weights
held by each rank, for one process, DDP over 2 CPU processes and FSDP2 over 2 (gloo), same job.

    python bench/fsdp_memory.py                      # Qwen2.5-0.5B's shape, random weights
    python bench/fsdp_memory.py --shape tiny         # the test suite's 2-layer model (seconds)

Each mode is `airoad train` (2 optimizer steps, LoRA r16 on attn+MLP, fp32, global batch 2) in its
own processes; in each, optimizer hooks read the bytes of the gradients (before the step) and of the
AdamW state (after it), counting only this rank's local shard of a sharded tensor, and the frozen
weights' bytes at rest are read once training is over, with the process's resident memory then
(RSS after training); peak RSS is the OS's high-water mark over the whole process, loading
included. Both RSS figures also hold torch, transformers and the data (~0.5 GB before any weight);
the table shows the rank with the most. Needs ../shared's Qwen2.5
tokenizer (or AIROAD_TEST_TOKENIZER). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from qwen_shape import QWEN25_05B, build_random_model, tokenizer_dir, write_chat_data  # noqa: E402

TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def local_bytes(t) -> int:
    """Bytes this rank holds of ``t`` (a DTensor's local shard, else the whole tensor)."""
    t = getattr(t, "_local_tensor", t)
    return t.numel() * t.element_size()


def rss_now() -> int:
    """This process's resident bytes now (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def worker(argv: list[str], out: Path) -> None:
    """One rank: `airoad train argv` with byte counters; writes out/rank<R>.json."""
    import torch
    import transformers
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    seen = {"grad": 0, "optim": 0, "trainable": 0}

    def pre(opt, *_):
        params = [p for g in opt.param_groups for p in g["params"]]
        seen["grad"] = max(seen["grad"], sum(local_bytes(p.grad) for p in params if p.grad is not None))
        seen["trainable"] = sum(local_bytes(p) for p in params)

    def post(opt, *_):
        state = sum(local_bytes(v) for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
        seen["optim"] = max(seen["optim"], state)

    register_optimizer_step_pre_hook(pre)
    register_optimizer_step_post_hook(post)
    original = transformers.Trainer.train

    def train(self, *a, **kw):
        result = original(self, *a, **kw)
        frozen = [p for p in self.model_wrapped.parameters() if not p.requires_grad]
        seen["frozen"] = sum(local_bytes(p) for p in frozen)
        seen["world"] = self.accelerator.num_processes
        seen["sharded"] = bool(getattr(self, "is_fsdp_enabled", False))
        seen["rss_after_train"] = rss_now()
        import ctypes
        import gc

        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed heap pages: hand them back first
        seen["rss_after_trim"] = rss_now()
        return result

    transformers.Trainer.train = train
    from airoad.cli import main as cli

    rc = cli(["train", *argv])
    seen["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    seen["rc"] = rc
    (out / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen))


def launch(mode: str, argv: list[str], out: Path) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    me = [str(Path(__file__).resolve()), "--worker", str(out), "--"]
    if mode == "single":
        cmd = [sys.executable, *me, *argv, "--grad_accum", "2"]
    elif mode == "ddp":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        cmd += [*me, *argv, "--grad_accum", "1"]
    else:
        cfg = REPO / "configs" / "accelerate" / "fsdp.yaml"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg)]
        cmd += [*me, *argv, "--grad_accum", "1"]
    out.mkdir(parents=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(f"{mode} failed: {p.stderr[-2000:]}")
    return [json.loads(f.read_text()) for f in sorted(out.glob("rank*.json"))]


def table(results: dict[str, list[dict]]) -> str:
    mb = 1024**2
    one = results["single"][0]
    lines = [
        "| per process | gradients MB | AdamW state MB | trainable weights MB | frozen weights at rest MB "
        "| grads + state x 1 process | RSS after training (after malloc_trim) GB | peak RSS GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, ranks in results.items():
        r = max(ranks, key=lambda x: x["grad"] + x["optim"])  # the rank holding most
        ratio = (r["grad"] + r["optim"]) / (one["grad"] + one["optim"])
        name = {"single": "1 process", "ddp": "DDP, 2 processes", "fsdp": "FSDP2, 2 processes"}[mode]
        lines.append(
            f"| {name} | {r['grad'] / mb:.2f} | {r['optim'] / mb:.2f} | {r['trainable'] / mb:.2f} | "
            f"{r['frozen'] / mb:.1f} | {ratio:.2f} | {max(x['rss_after_train'] for x in ranks) / 1024**3:.2f} "
            f"({max(x['rss_after_trim'] for x in ranks) / 1024**3:.2f}) | "
            f"{max(x['peak_rss'] for x in ranks) / 1024**3:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if "--worker" in sys.argv:
        i = sys.argv.index("--worker")
        return worker(sys.argv[i + 3 :], Path(sys.argv[i + 1]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=("qwen2.5-0.5b", "tiny"), default="qwen2.5-0.5b")
    ap.add_argument("--lora_r", type=int, default=16)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="airoad-fsdp-mem-"))
    shape = QWEN25_05B if a.shape == "qwen2.5-0.5b" else {**QWEN25_05B, **TINY}
    model = build_random_model(work / "model", shape, tokenizer_dir())
    data = write_chat_data(work / "train.jsonl", 8)
    argv = [
        "--base_model", str(model), "--dataset_path", str(data), "--max_steps", "2",
        "--per_device_batch_size", "1", "--max_seq_len", "128", "--lora_r", str(a.lora_r),
        "--lora_target_mode", "attn_mlp", "--lora_dropout", "0", "--device", "cpu",
        "--dtype", "float32", "--print_every_steps", "1",
    ]  # fmt: skip
    results = {}
    for mode in ("single", "ddp", "fsdp"):
        results[mode] = launch(mode, [*argv, "--output_dir", str(work / f"out-{mode}")], work / mode)
        assert results[mode][0]["sharded"] == (mode == "fsdp"), results[mode]
        print(mode, results[mode], flush=True)
    print(f"\nshape {a.shape}, LoRA r{a.lora_r} attn+MLP, fp32, 2 steps of global batch 2\n")
    print(table(results))


if __name__ == "__main__":
    main()
