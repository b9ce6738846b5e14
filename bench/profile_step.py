"""Time (and with PROFILE=1 profile) airoad's loss forward + backward on the real model.

    PROFILE=1 python bench/profile_step.py --data /tmp/gsm8k_train_chatml.jsonl [--variant lora|dora|kl] [--pack 1|2|4]

Runs one warm-up optimizer step (4 micro-batches of 1 example, or --pack examples per forward),
then STEPS timed steps (env, default 3), printing tokens/s and RSS/peak RSS after each (the peak
is reset after loading, so it is the training-phase peak); PROFILE=1 adds a torch.profiler table
of one more step (SORT, ROWS, MEM=1 for memory columns, SHAPES=1 to split ops by input shape). MMAP=bytes sets glibc's mmap threshold,
TRIM=1 calls malloc_trim after every micro-batch (the allocator experiments in BENCHMARKS.md);
EXTRA="--flag value ..." appends train flags.
"""

import argparse
import ctypes
import os
import time
from pathlib import Path

import torch
from transformers import TrainingArguments

from airoad.core.base.options import load_config
from airoad.core.model.adapters import lora_in_autocast, wrap_with_adapters
from airoad.core.model.devices import pick_dtype
from airoad.core.model.loading import load_causal_lm, load_tokenizer
from airoad.core.model.model_source import resolve_model
from airoad.core.run.context import RunContext
from airoad.core.run.fit import training_kwargs
from airoad.sft.data import build_examples, read_data
from airoad.sft.schema import TrainConfig
from airoad.sft.trainer import AiroadTrainer, Collator, ExampleDataset

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=os.path.expanduser("~/.cache/airoad/real-qwen2.5-0.5b"))
ap.add_argument("--data", required=True, help="ChatML JSONL (GSM8K via scripts/data/gsm8k_to_chatml.py)")
ap.add_argument("--variant", default="lora", choices=["lora", "dora", "kl"])
ap.add_argument("--pack", type=int, default=1, choices=[1, 2, 4])
ap.add_argument("--dtype", default="auto", help="auto: what a CPU run picks here (bf16 with bf16 units)")
a = ap.parse_args()
variant, pack, M = a.variant, a.pack, a.model
argv = [
    "--base_model",
    M,
    "--dataset_path",
    a.data,
    "--output_dir",
    "/tmp/airoad-profile-out",
    "--overwrite",
    "true",
    "--ablate_examples",
    "96",
    "--use_dora",
    str(variant == "dora"),
    "--lora_dropout",
    "0" if variant == "dora" else os.environ.get("DROPOUT", "0.05"),
    "--kl_lambda",
    "0.1" if variant == "kl" else "0",
    *os.environ.get("EXTRA", "").split(),  # more train flags, e.g. EXTRA="--loss_chunk_size 128"
]
cfg, _ = load_config(TrainConfig, argv)
dtype = pick_dtype("cpu", a.dtype)
print(f"dtype: {dtype}")
source = resolve_model(cfg.base_model)
tok = load_tokenizer(source)
train_ex, _, _ = build_examples(cfg, tok, read_data(cfg))
model = wrap_with_adapters(load_causal_lm(source, dtype), cfg)
ctx = RunContext(cfg, Path(cfg.output_dir), None, "cpu", dtype, source, tok, None, time.time())
args = TrainingArguments(**training_kwargs(ctx, False))
tr = AiroadTrainer(
    model=model,
    args=args,
    train_dataset=ExampleDataset(train_ex),
    data_collator=Collator(tok.pad_token_id, packing=True),
    kl_lambda=cfg.kl_lambda,
)
model.train()
# as core.fit trains: LoRA inputs left in the autocast dtype for the whole run
lora_in_autocast(model, args.bf16).__enter__()
coll = Collator(tok.pad_token_id, packing=True)
ds = ExampleDataset(train_ex)


def step(i):
    rows = [ds[(i * 4 + j) % len(ds)] for j in range(4)]
    toks = 0
    groups = [rows[k : k + pack] for k in range(0, 4, pack)]
    n = sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows)
    for g in groups:
        b = coll(g)
        # what accelerate wraps the model's forward in when trainer.train() runs with args.bf16
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = tr.compute_loss(model, b, num_items_in_batch=n)
        loss.backward()
        if os.environ.get("TRIM"):
            libc.malloc_trim(0)
        toks += b["input_ids"].numel()
    return toks


def rss():
    st = open("/proc/self/status").read()

    def g(k):
        return int([x for x in st.splitlines() if x.startswith(k)][0].split()[1]) / 1024**2

    return f"RSS {g('VmRSS:'):.2f} (anon {g('RssAnon:'):.2f} file {g('RssFile:'):.2f}) HWM {g('VmHWM:'):.2f}"


print("after load", rss(), flush=True)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak: report the training phase

libc = ctypes.CDLL("libc.so.6")
if os.environ.get("MMAP"):
    libc.mallopt(-3, int(os.environ["MMAP"]))  # M_MMAP_THRESHOLD
print("reset", rss(), flush=True)
step(0)
print("after step0", rss(), flush=True)
t0 = time.time()
tk = 0
for i in range(1, int(os.environ.get("STEPS", 3)) + 1):
    ts = time.time()
    n_i = step(i)
    tk += n_i
    print(
        f"step {i}: {n_i} tokens, {time.time() - ts:.1f}s, {n_i / (time.time() - ts):.1f} tok/s;",
        rss(),
        flush=True,
    )
dt = time.time() - t0
print(f"{variant} pack{pack}: {tk} tokens in {dt:.1f}s = {tk / dt:.1f} tok/s", flush=True)
if os.environ.get("PROFILE"):
    from torch.profiler import ProfilerActivity, profile

    shapes = bool(os.environ.get("SHAPES"))
    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=bool(os.environ.get("MEM")), record_shapes=shapes
    ) as p:
        step(5)
    print(
        p.key_averages(group_by_input_shape=shapes).table(
            sort_by=os.environ.get("SORT", "self_cpu_time_total"), row_limit=int(os.environ.get("ROWS", 30))
        )
    )
